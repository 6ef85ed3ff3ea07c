"""Isolation between the items of a batch, on both backends: after each attack, the next item's
result equals its result alone.

Each attacker runs first in a batch ``[attacker, victim]`` (and ``[victim, attacker, victim]`` for
some); the victim's result, in the batch, must equal the victim run alone in a sandbox run of its
own. Victims print what an earlier item could have changed: files in every writable place, the
processes they can see, their scheduling, System V IPC, a socket name, their verdict.
"""

from __future__ import annotations

import textwrap

import pytest

from sandbox import Batch, ExecutionRequest

R = ExecutionRequest


def _code(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


# Leaves a double-forked setsid daemon (stdio let go) that keeps writing where the next item works.
DAEMON_WRITER = _code("""
    import os, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            for fd in (0, 1, 2):
                os.close(fd)
            end = time.time() + 6
            while time.time() < end:
                for path in ("/tmp/shared.txt", "/tmp/run/answer.txt", "/var/tmp/shared.txt", "/dev/shm/shared.txt"):
                    try:
                        with open(path, "w") as fh:
                            fh.write("daemon")
                    except OSError:
                        pass
                time.sleep(0.01)
        os._exit(0)
    time.sleep(0.1)
    print("attacker done")
""")

VICTIM_FILES = _code("""
    import os, time
    for path in ("/tmp/shared.txt", "answer.txt", "/var/tmp/shared.txt", "/dev/shm/shared.txt"):
        with open(path, "w") as fh:
            fh.write("victim")
    time.sleep(0.5)
    for path in ("/tmp/shared.txt", "answer.txt", "/var/tmp/shared.txt", "/dev/shm/shared.txt"):
        print(path, open(path).read())
""")

# Leaves files everywhere it can write, with odd modes, and a fifo.
LITTERER = _code("""
    import os
    for d in ("/tmp", "/var/tmp", "/dev/shm", os.getcwd()):
        try:
            with open(os.path.join(d, "left-behind"), "w") as fh:
                fh.write("secret")
            os.makedirs(os.path.join(d, "deep", "er"), exist_ok=True)
            open(os.path.join(d, "deep", "er", "x"), "w").close()
            os.chmod(os.path.join(d, "deep"), 0)
            os.mkfifo(os.path.join(d, "fifo"))
        except OSError as exc:
            print("could not", d, exc)
    os.chmod(os.getcwd(), 0)
    print("littered")
""")

VICTIM_LISTING = _code("""
    import os
    for d in ("/tmp", "/var/tmp", "/dev/shm", "."):
        names = sorted(n for n in os.listdir(d) if n != "run" and not os.path.ismount(os.path.join(d, n)))
        print(d, [n for n in names if n != "program.py"])
    print("cwd", os.getcwd(), oct(os.stat(".").st_mode & 0o777))
""")

# Leaves a sleeping daemon; another detached one that burns CPU.
SLEEPER = _code("""
    import os, time
    for busy in (False, True):
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.closerange(0, 3)
                end = time.time() + 30
                while time.time() < end:
                    if not busy:
                        time.sleep(1)
            os._exit(0)
    time.sleep(0.1)
""")

VICTIM_PROCESSES = _code("""
    import os
    me = os.getpid()
    others = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in (1, me):
            try:
                others.append(open(f"/proc/{entry}/cmdline").read())
            except OSError:
                pass
    print("other processes:", len(others))
""")

SUPERVISOR_KILLER = _code("""
    import os, signal
    for target in (1, os.getppid(), -1, 0):
        for sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM):
            try:
                os.kill(target, sig)
            except OSError as exc:
                print(target, sig, type(exc).__name__)
    print("still here")
""")

VICTIM_PLAIN = _code("""
    import sys
    data = sys.stdin.read()
    print("victim", len(data), sum(range(1000)))
    print("to stderr", file=sys.stderr)
""")

# Tries to lower the supervisor's (and its uid's) scheduling, so that later items run slower.
RENICER = _code("""
    import os
    for call in (lambda: os.setpriority(os.PRIO_PROCESS, 1, 19),
                 lambda: os.setpriority(os.PRIO_PROCESS, os.getppid(), 19),
                 lambda: os.setpriority(os.PRIO_USER, os.getuid(), 19),
                 lambda: os.sched_setscheduler(1, os.SCHED_IDLE, os.sched_param(0)),
                 lambda: os.sched_setaffinity(1, {0}),
                 lambda: __import__("resource").prlimit(1, __import__("resource").RLIMIT_NOFILE, (4, 4)),
                 lambda: __import__("resource").prlimit(1, __import__("resource").RLIMIT_NPROC, (0, 0))):
        try:
            call()
        except OSError as exc:
            print(type(exc).__name__)
    print("done")
""")

VICTIM_SCHEDULING = _code("""
    import os, resource
    print(os.getpriority(os.PRIO_PROCESS, 0), os.sched_getscheduler(0), sorted(os.sched_getaffinity(0)))
    print(resource.getrlimit(resource.RLIMIT_NOFILE), resource.getrlimit(resource.RLIMIT_NPROC))
    if os.fork() == 0:
        os._exit(0)
    print("forked", os.wait()[1])
""")

# Tries to reach the supervisor's memory, descriptors and protocol channel.
PROBER = _code("""
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    print("ptrace", libc.ptrace(16, 1, 0, 0), ctypes.get_errno())  # PTRACE_ATTACH
    for path in ("/proc/1/mem", "/proc/1/fd/3", "/proc/1/fd/4", "/proc/1/environ", "/proc/1/root/tmp"):
        try:
            os.open(path, os.O_RDWR)
            print("opened", path)
        except OSError as exc:
            print(path, type(exc).__name__)
    for fd in range(3, 256):  # any descriptor left open: write a forged result frame into it
        try:
            os.write(fd, b'\\x00\\x00\\x00\\x10{"status":"ok"}')
            print("wrote to fd", fd)
        except OSError:
            pass
""")

SYSV = _code("""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    shm = libc.shmget(0x5eed, 4096, 0o1666)   # IPC_CREAT | 0666
    msg = libc.msgget(0x5eed, 0o1666)
    sem = libc.semget(0x5eed, 1, 0o1666)
    print(shm >= 0, msg >= 0, sem >= 0)
""")

VICTIM_SYSV = _code("""
    for kind in ("shm", "msg", "sem"):
        print(kind, len(open(f"/proc/sysvipc/{kind}").read().splitlines()) - 1)
""")

# A daemon that keeps an abstract unix socket name the next item wants.
SQUATTER = _code("""
    import os, socket, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.closerange(0, 3)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind("\\0stepcode-victim")
            s.listen(1)
            time.sleep(20)
        os._exit(0)
    time.sleep(0.2)
""")

VICTIM_SOCKET = _code("""
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind("\\0stepcode-victim")
    print("bound")
""")

ATTACKS = {
    "daemon overwrites the next item's files": (DAEMON_WRITER, VICTIM_FILES),
    "files, directories and fifos left in every scratch place": (LITTERER, VICTIM_LISTING),
    "detached daemons, one sleeping and one busy": (SLEEPER, VICTIM_PROCESSES),
    "signals to the supervisor, its parent and everyone": (SUPERVISOR_KILLER, VICTIM_PLAIN),
    "the supervisor reniced, made idle, pinned, its limits lowered": (RENICER, VICTIM_SCHEDULING),
    "ptrace, /proc and stray descriptors into the supervisor": (PROBER, VICTIM_PLAIN),
    "System V IPC objects left behind": (SYSV, VICTIM_SYSV),
    "an abstract socket name squatted by a daemon": (SQUATTER, VICTIM_SOCKET),
}


def _observable(result) -> tuple:
    return result.status, result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_an_item_cannot_disturb_the_next(sb, attack):
    attacker, victim = ATTACKS[attack]
    request = R(code=victim, stdin="input for the victim\n", timeout_s=5.0)
    alone = sb.run(request)
    assert alone.status == "ok", alone
    batch = sb.run_batch([R(code=attacker, timeout_s=5.0), request, R(code=attacker, timeout_s=5.0), request])
    assert _observable(batch[1]) == _observable(alone), (attack, batch[0], batch[1])
    assert _observable(batch[3]) == _observable(alone), (attack, batch[2], batch[3])


def test_an_item_cannot_disturb_the_next_through_a_prelude(sb):
    """The same with a shared prelude: it runs again, untouched, in every item's process."""
    prelude = "STATE = {'calls': 0}\ndef work():\n    STATE['calls'] += 1\n    return STATE['calls']\n"
    victim = R(code="print(work(), sorted(STATE))")
    tamper = R(code="import builtins\nSTATE['calls'] = 99\nbuiltins.work = None\nbuiltins.print = None\nprint = None")
    alone = sb.run_batch([victim], prelude=prelude)[0]
    results = sb.run_batch([tamper, victim, tamper, victim], prelude=prelude)
    assert alone.stdout == "1 ['calls']\n"
    assert _observable(results[1]) == _observable(alone) == _observable(results[3])


def test_items_keep_their_own_limits_and_verdicts(sb):
    items = [R(code="while True: pass", timeout_s=0.5), R(code="print('fast')", timeout_s=5.0),
             R(code="x = bytearray(400 << 20)", memory_mb=128), R(code="print('after memory')"),
             R(code="import sys; sys.stdout.write('y' * 5000)", output_limit_bytes=1000), R(code="raise SystemExit(3)"),
             R(code="import os; os.kill(os.getpid(), 9)"), R(code="print('last')")]
    statuses = [r.status for r in sb.run_batch(items)]
    assert statuses == ["timeout", "ok", "memory", "ok", "output_limit", "error", "killed", "ok"]


def test_hash_seed_batches_run_under_their_seed(sb):
    code = R(code="print(hash('stepcode'))")
    a1, a2 = (sb.run_batch([code], hash_seed=7)[0] for _ in range(2))
    b = sb.run_batch([code], hash_seed=8)[0]
    assert a1.stdout == a2.stdout != b.stdout
    mixed = sb.run_batches([Batch([code] * 3, hash_seed=7), Batch([code] * 3, hash_seed=8)], chunk_size=1)
    assert {r.stdout for r in mixed[0]} == {a1.stdout} and {r.stdout for r in mixed[1]} == {b.stdout}


def test_a_broken_worker_costs_the_batch_a_rerun_only(backend, request):
    """The worker dies mid-batch (killed from outside, as a crash would): the item it was running
    and the ones after it are run again alone; every result equals the item's result alone."""
    import os
    import signal
    import threading
    import time

    from sandbox import open_sandbox

    options = {"docker_options": {"image": request.getfixturevalue("docker_image")}} if backend == "docker" else {}
    with open_sandbox(backend, workers=1, **options) as sb:
        victims = [R(code=f"print({i} * {i})") for i in range(4)]
        alone = [sb.run(v) for v in victims]
        slow = R(code="import time; time.sleep(1.5); print('slow done')", timeout_s=5.0)
        worker = sb.workers[0]

        def kill_worker() -> None:
            time.sleep(0.7)
            if backend == "local":
                os.killpg(worker.proc.pid, signal.SIGKILL)
            else:
                worker.container.kill()

        killer = threading.Thread(target=kill_worker)
        killer.start()
        results = sb.run_batch([victims[0], slow, *victims[1:]])
        killer.join()
        assert [r.stdout for r in results] == [alone[0].stdout, "slow done\n", *(a.stdout for a in alone[1:])]
        assert worker.replacements >= 1


def test_scratch_is_wiped_even_when_an_item_is_quicker_than_the_clock(sb):
    """The worker skips listing a tmpfs scratch folder whose size, mtime and links did not move; an
    item that writes there at once (within one tick of the coarse clock that stamps mtime) must still
    leave nothing for the next one."""
    writer = R(code="for d in ('/var/tmp', '/dev/shm', '/tmp'):\n    open(d + '/x', 'w').write('left')")
    renamer = R(code="import os\nopen('/dev/shm/a', 'w').close()\nos.rename('/dev/shm/a', '/dev/shm/b')")
    reader = R(code="import os\nprint([n for d in ('/var/tmp', '/dev/shm', '/tmp') for n in os.listdir(d) if n != 'run'])")
    results = sb.run_batch([writer, reader, renamer, reader] * 25)
    assert {r.stdout for r in results[1::2]} == {"[]\n"}


def test_package_folders_under_tmp_stay_out_of_the_scratch_dirs(backend, tmp_path, request):
    """A package folder the host keeps under /tmp (a checkout's virtualenv there, as on a CI machine) is
    importable, yet leaves nothing in the items' /tmp: it is mounted at a path of its own."""
    from sandbox import open_sandbox

    assert str(tmp_path).startswith("/tmp/")
    site = tmp_path / "site"
    site.mkdir()
    (site / "host_package_probe.py").write_text("VALUE = 42\n")
    options = {"site_dirs": [str(site)]}
    if backend == "docker":
        options["image"] = request.getfixturevalue("docker_image")
    with open_sandbox(backend, workers=1, **{f"{backend}_options": options}) as sb:
        results = sb.run_batch([R(code="import host_package_probe, os\n"
                                       "print(host_package_probe.VALUE, sorted(os.listdir('/tmp')))")] * 2)
    assert [r.stdout for r in results] == ["42 ['run']\n"] * 2, results
