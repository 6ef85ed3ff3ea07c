"""Red-team batches, on both backends, through ``stepcode sandbox run-batch`` as a user runs it.

Every attack runs between two victims in one batch on one worker; each victim's result must equal
the victim's result alone. The victim looks at everything an item could leave for the next: its
scratch folders (and whether it can still write there), POSIX queues, System V IPC, the user keyring,
processes, its own verdict. The attacks are the red team's findings (directory chains deeper than
PATH_MAX, the work folder swapped for a link, compile bombs, queues and keys left behind, a worker's
channel hijacked) and variants of them; the syscall filter is tested by items that try each call.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from sandbox import ExecutionRequest, SandboxError, open_sandbox
from sandbox.seccomp import syscall_number

R = ExecutionRequest


def _code(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


VICTIM = _code(f"""
    import ctypes, errno, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    print("input", sys.stdin.read().strip())
    print("cwd", os.getcwd(), sorted(os.listdir(".")))
    for d in ("/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue"):
        try:
            print(d, sorted(os.listdir(d)))
        except OSError as exc:
            print(d, errno.errorcode[exc.errno])
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        try:
            with open(os.path.join(d, "victim.bin"), "wb") as fh:
                fh.write(b"v" * (1 << 20))
            print("wrote 1 MiB in", d)
        except OSError as exc:
            print("cannot write in", d, errno.errorcode[exc.errno])
    libc.mq_open.restype = ctypes.c_int
    for name in (b"/evil", b"/stepcode"):
        fd = libc.mq_open(name, os.O_RDONLY)
        print("mqueue", name.decode(), "present" if fd >= 0 else errno.errorcode[ctypes.get_errno()])
    for kind in ("shm", "msg", "sem"):
        print("sysv", kind, len(open("/proc/sysvipc/" + kind).read().splitlines()) - 1)
    keyctl = {syscall_number("keyctl")}
    found = libc.syscall(keyctl, 10, -4, b"user", b"stolen", 0)  # KEYCTL_SEARCH in the user keyring
    print("keyring", "found" if found >= 0 else errno.errorcode[ctypes.get_errno()])
    mine = os.getuid()
    others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()
              and os.stat("/proc/" + p).st_uid == mine]
    print("my other processes", others)
    print("big list", len(list(range(10 ** 6))))
""")

ATTACKS = {
    "a directory chain deeper than PATH_MAX in every scratch folder, then the disk filled": _code("""
        import os
        for top in ("/tmp", "/var/tmp", "/dev/shm"):
            os.chdir(top)
            for _ in range(230):  # 230 x 21 characters: past PATH_MAX (4096)
                os.mkdir("d" * 20)
                os.chdir("d" * 20)
            with open("secret", "w") as fh:
                fh.write("SECRET")
            n = 0
            try:
                while True:
                    with open(f"fill{n}", "wb") as fh:
                        fh.write(b"x" * (8 << 20))
                    n += 1
            except OSError:
                pass
        print("chain done")
    """),
    "the work folder replaced by a dangling link": _code("""
        import os, shutil
        os.chdir("/")
        shutil.rmtree("/tmp/run")
        os.symlink("/nonexistent/run", "/tmp/run")
        os.symlink("/tmp/run", "/tmp/loop-a"); os.symlink("/tmp/loop-a", "/tmp/loop-b")
        print("swapped")
    """),
    "the work folder replaced by a fifo, links into /proc, folders without permissions": _code("""
        import os, shutil
        os.chdir("/")
        shutil.rmtree("/tmp/run")
        os.mkfifo("/tmp/run")
        os.symlink("/proc/self/root", "/var/tmp/root")
        os.symlink("/proc/1/cwd", "/dev/shm/cwd")
        os.makedirs("/var/tmp/locked/inner")
        os.chmod("/var/tmp/locked", 0)
        print("fifo")
    """),
    "POSIX queues, System V objects and a key left behind, with a daemon holding them": _code(f"""
        import ctypes, os, time
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mq_open.restype = ctypes.c_int
        for name in (b"/evil", b"/stepcode"):
            print("mq_open", libc.mq_open(name, os.O_CREAT | os.O_RDWR, 0o666, None) >= 0)
        print("shmget", libc.shmget(0x5EC, 4096, 0o1666) >= 0)
        print("msgget", libc.msgget(0x5ED, 0o1666) >= 0)
        print("semget", libc.semget(0x5EE, 1, 0o1666) >= 0)
        key = libc.syscall({syscall_number("add_key")}, b"user", b"stolen", b"secret", 6, -4)
        print("add_key", key >= 0)
        if os.fork() == 0:
            os.setsid()
            time.sleep(30)
        print("left")
    """),
    "a compile bomb: an expression nested far past the recursion limit": "x = " + "-" * 200_000 + "1\n",
    "a compile bomb: a long chain of operators": "x = 1" + " + 1" * 200_000 + "\n",
    "a compile bomb: a megabyte of literals": "x = [" + "1, " * 300_000 + "]\n",
    # Under 64 KiB: compiled in the supervisor itself, under an address-space limit.
    "a compile bomb under 64 KiB: unary operators sixty thousand deep": "x = " + "-" * 60_000 + "1\n",
    "a compile bomb under 64 KiB: seven thousand nested lambdas": "x = " + "lambda: " * 7_000 + "1\n",
    "a compile bomb under 64 KiB: fifteen thousand nots": "x = " + "not " * 15_000 + "1\n",
    "a program over the size cap": "# " + "x" * (2 << 20) + "\nprint('too big')\n",
    "threads and children that fork as the item ends": _code("""
        import os, threading, time
        def spawn():
            while True:
                try:
                    if os.fork() == 0:
                        open("/tmp/late", "w").write("late")
                        time.sleep(60)
                except OSError:
                    time.sleep(0.001)
        for _ in range(4):
            threading.Thread(target=spawn, daemon=True).start()
        time.sleep(0.2)
        print("forking")
    """),
}


def _run_batch_cli(backend: str, rows: list[dict], *extra: str) -> list[dict]:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "sandbox", "run-batch", "-", "--backend", backend,
                          "--workers", "1", *extra], input=text, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(rows), out.stdout[-2000:]
    return results


def _observable(result: dict) -> tuple:
    return result["status"], result["exit_code"], result["stdout"], result["stderr"]


@pytest.fixture(params=["local", pytest.param("docker", marks=pytest.mark.docker)])
def red_backend(request) -> str:
    if request.param == "docker":
        request.getfixturevalue("docker_image")
    return request.param


def test_every_victim_gets_its_solo_result_whatever_ran_before(red_backend):
    victim = {"code": VICTIM, "stdin": "victim input\n", "timeout_s": 20.0, "memory_mb": 512}
    (alone,) = _run_batch_cli(red_backend, [victim])
    assert alone["status"] == "ok", alone
    assert "wrote 1 MiB in /tmp" in alone["stdout"] and "keyring EPERM" in alone["stdout"], alone["stdout"]
    rows = [victim]
    for attack in ATTACKS.values():
        rows += [{"code": attack, "timeout_s": 20.0, "memory_mb": 256}, victim]
    results = _run_batch_cli(red_backend, rows)
    for index, (name, result) in enumerate(zip(ATTACKS, results[1::2])):
        after = results[2 * index + 2]
        assert _observable(after) == _observable(alone), (name, result, after)
    verdicts = dict(zip(ATTACKS, results[1::2]))
    for name, result in verdicts.items():
        if "compile bomb" in name:  # the bomb's own error, never the worker's death
            assert result["status"] in ("error", "memory", "timeout"), (name, result)
            assert "worker lost" not in result["stderr"], (name, result)
    over = verdicts["a program over the size cap"]
    assert over["status"] == "error" and "capped at" in over["stderr"], over
    assert verdicts["POSIX queues, System V objects and a key left behind, with a daemon holding them"]["stdout"] \
        .count("True") == 5  # queues and System V objects made; the key refused (see the victim)


def test_a_compile_bomb_in_the_prelude_is_each_items_error(red_backend, tmp_path):
    prelude = tmp_path / "prelude.py"
    prelude.write_text("X = " + "(" * 150 + "-" * 100_000 + "1" + ")" * 150 + "\n")
    results = _run_batch_cli(red_backend, [{"code": "print(1)"}] * 3, "--prelude", str(prelude))
    assert all(r["status"] in ("error", "memory") and r["exit_code"] == 1 for r in results), results
    assert all("sandbox: run set-up failed" not in r["stderr"] for r in results), results


DENIED_CALLS = {  # name: the call's arguments, ones that would otherwise succeed where they can
    "unshare": "(0x10000000,)",  # CLONE_NEWUSER
    "setns": "(-1, 0)",
    "mount": "(b'none', b'/tmp', b'tmpfs', 0, None)",
    "keyctl": "(0, -4, 0)",  # KEYCTL_GET_KEYRING_ID of the user keyring
    "add_key": "(b'user', b'k', b'v', 1, -4)",
    "io_uring_setup": "(4, ctypes.create_string_buffer(120))",
    "perf_event_open": "(ctypes.create_string_buffer(128), 0, -1, -1, 0)",
    "bpf": "(0, ctypes.create_string_buffer(128), 128)",
    "userfaultfd": "(0,)",
    "ptrace": "(0, 0, 0, 0)",  # PTRACE_TRACEME
    "process_vm_readv": "(1, None, 0, None, 0, 0)",
}


def test_the_syscall_filter_answers_eperm_to_what_python_never_needs(red_backend):
    lines = ["import ctypes, os", "libc = ctypes.CDLL(None, use_errno=True)"]
    for name, args in DENIED_CALLS.items():
        lines += ["ctypes.set_errno(0)", f"r = libc.syscall({syscall_number(name)}, *{args})",
                  f"print({name!r}, r, ctypes.get_errno())"]
    # clone with a namespace flag (a fork-like clone: a child that got through would exit at once)
    lines += ["ctypes.set_errno(0)", f"r = libc.syscall({syscall_number('clone')}, 0x10000000 | 17, 0, 0, 0, 0)",
              "os._exit(0) if r == 0 else print('clone', r, ctypes.get_errno())",
              f"print('clone3', libc.syscall({syscall_number('clone3')}, None, 0), ctypes.get_errno())",
              # what programs do need still works: threads, fork, a subprocess, mmap, a pipe, alarm
              "import threading, subprocess, mmap, signal",
              "t = threading.Thread(target=lambda: None); t.start(); t.join()",
              "pid = os.fork()\nif pid == 0:\n    os._exit(7)",
              "print('fork', os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))",
              "print('subprocess', subprocess.run(['true']).returncode)",
              "m = mmap.mmap(-1, 4096); m[:2] = b'ok'; print('mmap', m[:2])",
              "signal.signal(signal.SIGALRM, lambda *a: print('alarm'))", "signal.setitimer(signal.ITIMER_REAL, 0.01)",
              "import time; time.sleep(0.2)"]
    (result,) = _run_batch_cli(red_backend, [{"code": "\n".join(lines) + "\n"}])
    assert result["status"] == "ok", result
    answers = {line.split()[0]: line.split()[1:] for line in result["stdout"].splitlines()}
    for name in [*DENIED_CALLS, "clone"]:
        assert answers[name] == ["-1", "1"], (name, answers.get(name))  # -1, EPERM
    assert answers["clone3"] == ["-1", "38"]  # ENOSYS: the C library falls back to clone
    assert answers["fork"] == ["7"] and answers["subprocess"] == ["0"] and answers["mmap"] == ["b'ok'"]
    assert "alarm" in answers


HIJACKER = _code("""
    import json, os, socket, struct, time
    def frame(obj):
        data = json.dumps(obj).encode()
        return struct.pack(">I", len(data)) + data
    def candidates():
        paths = []
        for top in ("/ipc", "/tmp", "/run", "/"):
            try:
                paths += [os.path.join(top, n) for n in os.listdir(top)]
            except OSError:
                pass
        try:
            paths += [line.split()[-1] for line in open("/proc/net/unix").read().splitlines()[1:]
                      if line.split()[-1].startswith("/")]
        except OSError:
            pass
        return paths
    connected = 0
    end = time.time() + 8
    while time.time() < end:
        for path in candidates():
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(path)
            except OSError:
                continue
            connected += 1
            try:
                s.sendall(frame({"ready": True, "proof": "0" * 64}))
                s.settimeout(2)
                if s.recv(65536):
                    for _ in range(64):
                        s.sendall(frame({"status": "ok", "exit_code": 0, "stdout": "FORGED RESULT", "stderr": "",
                                         "duration_s": 0.0}))
            except OSError:
                pass
        time.sleep(0.001)
    print("connected", connected)
""")


@pytest.mark.docker
def test_a_replaced_worker_opens_no_channel_to_another_workers_items(docker_image):
    """Worker 0 runs an item that hunts for worker channels while worker 1 is killed and replaced; the
    replacement's channel is out of its reach, and worker 1's items get their own results."""
    with open_sandbox("docker", workers=2, docker_options={"image": docker_image}) as sb:
        hunter, target = sb.workers
        victims = [R(code=f"print({i} * {i})") for i in range(6)]
        hunt: list = []
        thread = threading.Thread(target=hunter.run_chunk, args=([R(code=HIJACKER, timeout_s=15.0)], "", None,
                                                                 lambda _, result: hunt.append(result)))
        thread.start()
        time.sleep(1.0)  # the hunter is polling
        results: list = [None] * len(victims)
        for _ in range(3):  # three replacements, each a window the old design left open
            target.container.kill()
            target.run_chunk(victims, "", None, lambda i, result: results.__setitem__(i, result))
            assert [r.stdout for r in results] == [f"{i * i}\n" for i in range(6)], results
        thread.join()
        assert target.replacements >= 3
        assert hunt and hunt[0].status == "ok" and hunt[0].stdout == "connected 0\n", hunt


def test_a_worker_that_cannot_prove_its_secret_is_refused():
    """The host accepts a worker only after it proves the secret it was started with."""
    from sandbox.local import LocalBackend, LocalWorker

    class Impostor(LocalWorker):
        def _spawn(self) -> None:
            super()._spawn()
            self.secret = "not-" + self.secret  # what the host expects is not what the worker holds

    worker = Impostor(LocalBackend(), 0)
    with pytest.raises(SandboxError, match="does not hold the worker's secret"):
        worker.start()
    assert worker.proc is None  # destroyed, not kept


def test_a_worker_that_cannot_confine_an_item_refuses_to_start():
    """Fail closed at start: a worker whose items' fresh mounts fail never serves."""
    with pytest.raises(SandboxError, match="confine"):
        open_sandbox("local", workers=1, local_options={"tmpfs_mb": -1})
