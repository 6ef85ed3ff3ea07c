"""Hostile programs against both backends: each ends with a fitting status within its limit, the
host is unharmed, and (checked by the ``sb`` fixture after every test) no process is left running
and the pool still works."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from sandbox import ExecutionRequest, open_sandbox

R = ExecutionRequest


def run(sb, code, **kw):
    return sb.run(R(code=textwrap.dedent(code), **kw))


def test_fork_bomb(sb):
    start = time.monotonic()
    res = run(sb, """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """, timeout_s=2)
    assert res.status == "timeout"
    assert time.monotonic() - start < 10


def test_memory_bomb(sb):
    res = run(sb, """
        chunks = []
        while True:
            chunks.append(bytearray(16 * 1024 * 1024))
    """, memory_mb=256, timeout_s=10)
    assert res.status == "memory"
    assert res.duration_s < 10


def test_memory_bomb_in_forked_children(sb):
    # RLIMIT_AS is per process; the cgroup (local) or container limit caps them together.
    res = run(sb, """
        import os, time
        for _ in range(6):
            if os.fork() == 0:
                try:
                    x = bytearray(200 * 1024 * 1024)
                    for i in range(0, len(x), 4096):
                        x[i] = 1
                finally:
                    time.sleep(30)
        time.sleep(30)
    """, memory_mb=256, timeout_s=3)
    assert res.status in ("timeout", "memory")


@pytest.mark.parametrize("code", ["while True: pass", "import time\ntime.sleep(10**6)",
                                  "import threading\nthreading.Event().wait()"])
def test_infinite_loop_and_sleeping_forever(sb, code):
    res = run(sb, code, timeout_s=1)
    assert res.status == "timeout" and res.exit_code is None
    assert 1 <= res.duration_s < 3


def test_stdout_flood(sb):
    res = run(sb, """
        import sys
        while True:
            sys.stdout.write("flood" * 1000)
    """, output_limit_bytes=64 * 1024, timeout_s=5)
    assert res.status == "output_limit"
    assert len(res.stdout) == 64 * 1024 and set(res.stdout) <= set("flood")
    assert res.duration_s < 3


def test_connection_to_a_host_listener_gets_nothing(sb):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        res = run(sb, f"""
            import socket
            for host in ("127.0.0.1", "localhost", "0.0.0.0"):
                try:
                    s = socket.create_connection((host, {port}), timeout=1)
                    s.sendall(b"stolen")
                    print("CONNECTED", host)
                except OSError as exc:
                    print("refused", host, type(exc).__name__)
            try:
                socket.create_connection(("1.1.1.1", 53), timeout=1)
                print("CONNECTED outside")
            except OSError:
                print("no route outside")
        """, timeout_s=8)
        time.sleep(0.1)
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    assert res.status == "ok"
    assert "CONNECTED" not in res.stdout and "no route outside" in res.stdout


def test_unix_sockets_of_the_host_are_out_of_reach(sb):
    host_dir = _host_dir()
    path = host_dir / "listener.sock"
    abstract = "\0stepcode-test-" + secrets.token_hex(4)
    listeners = []
    for address in (str(path), abstract):
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(address)
        srv.listen(4)
        srv.setblocking(False)
        listeners.append(srv)
    path.chmod(0o777)
    try:
        res = run(sb, f"""
            import socket
            for address in ({str(path)!r}, {abstract!r}, "/var/run/docker.sock", "/run/dbus/system_bus_socket"):
                try:
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.connect(address)
                    s.sendall(b"stolen")
                    print("CONNECTED", repr(address))
                except OSError as exc:
                    print("refused", repr(address), exc.errno)
        """)
        time.sleep(0.1)
        for srv in listeners:
            with pytest.raises(BlockingIOError):
                srv.accept()
    finally:
        for srv in listeners:
            srv.close()
        shutil.rmtree(host_dir, ignore_errors=True)
    assert res.status == "ok", res.stderr
    assert "CONNECTED" not in res.stdout and res.stdout.count("refused") == 4


def _host_dir() -> Path:
    """A world-writable directory on the host outside /tmp (which the local backend hides)."""
    for parent in ("/opt", "/srv", "/var/local", str(Path.home())):
        try:
            d = Path(tempfile.mkdtemp(prefix="stepcode-sbx-test-", dir=parent))
            d.chmod(0o777)
            return d
        except OSError:
            continue
    pytest.skip("no place for a world-writable host directory")


def test_writes_outside_the_temp_dir(sb):
    host_dir = _host_dir()
    victim = host_dir / "victim.txt"
    victim.write_text("original")
    victim.chmod(0o666)
    tmp_victim = Path(tempfile.mkdtemp()) / "victim.txt"
    tmp_victim.write_text("original")
    tmp_victim.parent.chmod(0o777)
    tmp_victim.chmod(0o666)
    targets = [str(victim), str(host_dir / "new.txt"), str(tmp_victim), str(tmp_victim.parent / "new.txt"),
               "/etc/stepcode-pwned", "/usr/stepcode-pwned", "/root/stepcode-pwned", "/var/tmp/../stepcode-pwned",
               str(Path(__file__).resolve())]
    this_file = Path(__file__).read_bytes()
    try:
        res = run(sb, f"""
            import os
            for path in {targets!r}:
                try:
                    with open(path, "a") as fh:
                        fh.write("pwned")
                    print("WROTE", path)
                except OSError as exc:
                    print("denied", path, exc.errno)
            open("inside.txt", "w").write("fine")
            print("inside ok")
        """)
        assert res.status == "ok", res.stderr
        assert "inside ok" in res.stdout
        assert victim.read_text() == "original" and not (host_dir / "new.txt").exists()
        assert tmp_victim.read_text() == "original" and not (tmp_victim.parent / "new.txt").exists()
        for path in ("/etc/stepcode-pwned", "/usr/stepcode-pwned", "/root/stepcode-pwned", "/var/stepcode-pwned"):
            assert not os.path.exists(path)
        assert Path(__file__).read_bytes() == this_file
    finally:
        shutil.rmtree(host_dir, ignore_errors=True)
        shutil.rmtree(tmp_victim.parent, ignore_errors=True)


def test_host_secrets_do_not_reach_the_program(backend, request, monkeypatch, tmp_path):
    """A fresh pool started while the host has a secret in its environment and in a private file."""
    if backend == "docker":
        request.getfixturevalue("docker_image")
    token = "sk-" + secrets.token_hex(16)
    monkeypatch.setenv("STEPCODE_TEST_SECRET", token)
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(token)
    secret_file.chmod(0o600)
    code = f"""
        import os, glob
        print(dict(os.environ))
        for path in ["/proc/self/environ", "/proc/1/environ", "/proc/1/cmdline", {str(secret_file)!r},
                     "/etc/shadow", "/root/.bash_history"] + glob.glob("/proc/*/environ"):
            try:
                print(path, open(path, "rb").read()[:4096])
            except OSError as exc:
                print("denied", path, exc.errno)
    """
    with open_sandbox(backend, workers=1) as fresh:
        res = run(fresh, code)
    assert res.status == "ok", res.stderr
    assert token not in res.stdout and token not in res.stderr
    assert "STEPCODE_TEST_SECRET" not in res.stdout


def test_killing_the_parent_and_every_process(sb):
    replacements = [w.replacements for w in sb.workers]
    res = run(sb, """
        import os, signal
        for pid in (os.getppid(), 1):
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except OSError as exc:
                    print("kill", pid, sig, exc.errno)
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        print("survived")
    """)
    assert res.status in ("ok", "killed")
    assert [w.replacements for w in sb.workers] == replacements, "the worker itself must not die"
    assert os.getppid() > 1  # and the test process tree is intact


def test_deep_recursion(sb):
    plain = run(sb, "def f(n): return f(n + 1)\nf(0)")
    assert plain.status == "error" and "RecursionError" in plain.stderr
    deep = run(sb, """
        import sys
        sys.setrecursionlimit(10**7)
        def f(n):
            return f(n + 1) + 1
        f(0)
    """, timeout_s=10, memory_mb=128)
    assert deep.status in ("killed", "memory", "error")


def test_segfault(sb):
    res = run(sb, "import ctypes\nctypes.string_at(0)")
    assert res.status == "killed" and res.exit_code == -11


def test_hundreds_of_threads(sb):
    res = run(sb, """
        import threading, time
        started = 0
        def work():
            time.sleep(0.2)
        threads = []
        try:
            for _ in range(500):
                t = threading.Thread(target=work)
                t.start()
                threads.append(t)
        except RuntimeError as exc:
            print("refused:", exc)
        for t in threads:
            t.join()
        print("threads", len(threads))
    """, timeout_s=10)
    assert res.status == "ok", res.stderr
    assert "threads" in res.stdout


def test_daemonized_grandchild_does_not_outlive_the_run(sb):
    res = run(sb, """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.closerange(0, 3)
                time.sleep(60)
                os._exit(0)
            os._exit(0)
        time.sleep(0.1)
        print("parent done")
    """, timeout_s=5)
    assert res.status == "ok" and res.stdout == "parent done\n"
    assert res.duration_s < 2, "the run ends when its main process does"
    # the sb fixture asserts that the sleeping grandchild is gone


def test_grandchild_holding_stdout_open_does_not_stall_the_run(sb):
    res = run(sb, """
        import os, time
        if os.fork() == 0:
            os.setsid()
            time.sleep(60)
        print("bye")
    """, timeout_s=5)
    assert res.status == "ok" and res.stdout == "bye\n" and res.duration_s < 2


def test_disk_fill(sb):
    before = shutil.disk_usage("/")
    big = run(sb, """
        with open("big", "wb") as fh:
            while True:
                fh.write(b"\\0" * (1 << 20))
    """, timeout_s=10)
    assert big.status == "error" and ("File too large" in big.stderr or "No space" in big.stderr)
    many = run(sb, """
        i = 0
        try:
            while True:
                with open(f"/tmp/f{i}", "wb") as fh:
                    fh.write(b"\\0" * (4 << 20))
                i += 1
        except OSError as exc:
            print("stopped", i, exc.errno)
    """, timeout_s=10)
    assert many.status == "ok" and "stopped" in many.stdout
    assert int(many.stdout.split()[1]) < 64  # a few tens of MiB, not the host's disk
    after = shutil.disk_usage("/")
    assert after.free > before.free - 32 * 1024 * 1024
    # the space is given back for the next runs
    again = run(sb, "open('x', 'wb').write(b'1' * (8 << 20)); import os; print(sorted(os.listdir('/tmp'))[:3])")
    assert again.status == "ok"


def test_ignored_signals(sb):
    res = run(sb, """
        import signal
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGXCPU):
            signal.signal(sig, signal.SIG_IGN)
        while True:
            pass
    """, timeout_s=1)
    assert res.status == "timeout" and res.duration_s < 3


def test_syntax_error(sb):
    res = run(sb, "def f(:\n    pass")
    assert res.status == "error" and res.exit_code == 1
    assert "SyntaxError" in res.stderr and "program.py" in res.stderr
    nul = run(sb, "print(1)\x00")
    assert nul.status == "error"


def test_invalid_utf8(sb):
    res = run(sb, """
        import os, sys
        os.write(1, b"bad \\xff\\xfe\\xc3 end\\n")
        os.write(2, b"\\x80\\x81\\n")
        print("\\udc80", end="")
    """)
    assert res.stdout.startswith("bad \ufffd\ufffd\ufffd end\n")
    assert res.stderr.startswith("\ufffd\ufffd\n")
    assert res.status == "error" and "UnicodeEncodeError" in res.stderr
    code_in = sb.run(R(code="print('\udcff')"))
    assert code_in.status == "error"


def test_closing_stdout_and_stdin(sb):
    res = run(sb, "import os\nos.close(1)\nos.close(0)\nprint('lost')")
    assert res.status == "error" and res.stdout == ""


def test_the_leftover_check_sees_a_stray_process(sb, backend, leftovers):
    """The fixture's 'nothing left' check is real: a stray sandbox-uid process is reported."""
    sandbox_processes = leftovers

    if backend == "local":
        import subprocess

        uid = sb.backend.uid_base + len(sb.workers) - 1
        stray = subprocess.Popen(["sleep", "30"], user=uid, group=uid)
        try:
            time.sleep(0.1)
            assert any(f"pid {stray.pid} " in p for p in sandbox_processes(sb))
        finally:
            stray.kill()
            stray.wait()
    else:
        container = sb.workers[0].container
        container.exec_run(["/usr/local/bin/sandbox-python", "-c", "import time; time.sleep(30)"], detach=True)
        time.sleep(0.3)
        try:
            assert sandbox_processes(sb)
        finally:
            sb.workers[0].replace()  # a fresh container: the stray process goes with the old one


def test_ipc_objects_do_not_outlive_the_run(sb):
    make = """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        shm = libc.shmget(0x5eed, 4 << 20, 0o1666)   # IPC_CREAT | 0666
        msg = libc.msgget(0x5eed, 0o1666)
        print(shm >= 0, msg >= 0)
    """
    check = """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        print(libc.shmget(0x5eed, 0, 0) >= 0, libc.msgget(0x5eed, 0) >= 0)
    """
    for _ in range(len(sb.workers)):
        assert run(sb, make).stdout == "True True\n"
    assert {r.stdout for r in sb.run_batch([R(code=textwrap.dedent(check))] * (2 * len(sb.workers)))} == {"False False\n"}


def test_inode_fill_is_bounded_and_wiped_quickly(sb):
    res = run(sb, """
        import os
        n = 0
        try:
            while n < 200000:
                open(f"/tmp/f{n}", "w").close()
                n += 1
        except OSError as exc:
            print("stopped", n, exc.errno)
    """, timeout_s=10)
    assert res.status in ("ok", "timeout")
    if res.status == "ok":
        assert "stopped" in res.stdout and int(res.stdout.split()[1]) < 10000
    start = time.monotonic()
    after = run(sb, "import os; print(len(os.listdir('/tmp')))")
    assert after.stdout == "1\n"  # only the run's own directory
    assert time.monotonic() - start < 3


VARIANTS = {
    "subprocess_bomb": ("import subprocess\nwhile True:\n    try:\n        subprocess.Popen(['sleep', '100'])\n"
                        "    except OSError:\n        pass", {"timeout"}),
    "abort": ("import os\nos.abort()", {"killed"}),
    "kill_own_group": ("import os, signal\nos.kill(0, signal.SIGKILL)", {"killed"}),
    "null_write": ("import ctypes\nctypes.memset(0, 0, 1)", {"killed"}),
    "pause": ("import signal\nsignal.pause()", {"timeout"}),
    "select_forever": ("import select\nselect.select([], [], [])", {"timeout"}),
    "raw_fd_flood": ("import os\nwhile True:\n    os.write(1, b'x' * 65536)", {"output_limit"}),
    "stderr_flood": ("import sys\nwhile True:\n    sys.stderr.write('e' * 4096)", {"output_limit"}),
    "string_bomb": ("s = 'a' * (10 ** 10)", {"memory"}),
    "list_bomb": ("x = [0] * (10 ** 10)", {"memory"}),
    "daemon_via_exec": ("import subprocess\nsubprocess.Popen(['sleep', '1000'], start_new_session=True,\n"
                        "                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\nprint('left')", {"ok"}),
    "symlink_escape": ("import os\nos.symlink('/etc/passwd', 'p')\nopen('p', 'a').write('pwned')", {"error"}),
    # Threads that spin in bytecode without allocating: the run ends with its main thread.
    "spinning_daemon_threads": ("import threading\nfor _ in range(8):\n"
                                "    threading.Thread(target=lambda: [None for _ in iter(int, 1) if False], daemon=True).start()\n"
                                "print('main done')", {"ok"}),
    # A thread spinning in C (any() over an endless iterator) never gives the GIL back: the main
    # thread never runs again, and the time limit ends the run.
    "gil_holding_daemon_thread": ("import threading\nthreading.Thread(target=lambda: any(iter(int, 1)), daemon=True).start()\n"
                                  "print('main done')", {"timeout"}),
    # Threads that also fill memory: the main thread ends first (ok) or the address-space limit stops
    # a thread's start (error); either way the run ends in time and nothing outside it changes.
    "allocating_daemon_threads": ("import threading\nfor _ in range(8):\n"
                                  "    threading.Thread(target=lambda: [None for _ in iter(int, 1)], daemon=True).start()\n"
                                  "print('main done')", {"ok", "error"}),
    "exit_from_thread_then_hang": ("import threading, os, time\nthreading.Thread(target=lambda: os._exit(3)).start()\n"
                                   "time.sleep(100)", {"error"}),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_more_hostile_variants(sb, name):
    code, statuses = VARIANTS[name]
    passwd = Path("/etc/passwd").read_bytes()
    start = time.monotonic()
    res = sb.run(R(code=code, timeout_s=1.5, memory_mb=256, output_limit_bytes=100_000))
    assert res.status in statuses, (res.status, res.stderr[-500:])
    assert time.monotonic() - start < 6
    assert Path("/etc/passwd").read_bytes() == passwd
