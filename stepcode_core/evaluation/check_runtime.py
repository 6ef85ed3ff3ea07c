"""In-sandbox half of the CRUXEval / LiveCodeBench scorer: runs one check the official way.

Not imported by StepCode's own process at run time: :mod:`stepcode_core.evaluation.cruxeval` sends
this file's source as the prelude of a sandbox batch whose items are check programs
(``code + assert output == generation``). The sandbox worker compiles each item and hands the code
object to :func:`__run_item__`, which does what the official harness's ``unsafe_execute`` does: the
``reliability_guard`` (destructive ``os``/``shutil``/``subprocess`` calls disabled), standard streams
swallowed, a ``setitimer`` wall-clock limit, then ``exec`` in a fresh namespace. The verdict (one of
:data:`VERDICTS`) is written on the real standard output when the check is over. Stdlib only.

One approximation, kept from before: ``shutil`` and ``subprocess`` are imported (and their calls
disabled) only when the check names them, which spares every other check their import time.
"""

import _signal
import builtins
import os
import sys

VERDICTS = ("passed", "failed", "timed out")
TIMEOUT_S = 3.0  # the official harness's limit per check


class _Timeout(Exception):
    pass


class _WriteOnly:
    """The official ``WriteOnlyStringIO``: writes vanish, reads raise."""

    def write(self, text):
        return len(text)

    def flush(self):
        pass

    def read(self, *args):
        raise OSError

    readline = readlines = read

    def readable(self):
        return False


def _names(code) -> set:
    """Every name the code object and the code objects inside it use."""
    names, stack = set(), [code]
    while stack:
        current = stack.pop()
        names.update(current.co_names)
        stack.extend(const for const in current.co_consts if hasattr(const, "co_names"))
    return names


def _guard(names: set) -> None:
    """The official reliability_guard."""
    builtins.exit = None
    builtins.quit = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork",
                 "forkpty", "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod",
                 "fchown", "chmod", "chown", "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir"):
        setattr(os, name, None)
    if "shutil" in names:
        import shutil

        shutil.rmtree = shutil.move = shutil.chown = None
    if "subprocess" in names:
        import subprocess

        subprocess.Popen = None
    builtins.help = None
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None


def check(program, timeout: float = TIMEOUT_S) -> str:
    """Run ``program`` (a code object, or the SyntaxError its compilation raised) as the official
    harness does; return its verdict."""
    def on_alarm(signum, frame):
        raise _Timeout()

    # _signal's C function: signal.signal's enum wrapping costs a third of a millisecond per check.
    _signal.signal(_signal.SIGALRM, on_alarm)
    sink = _WriteOnly()
    sys.stdout = sys.stderr = sys.stdin = sink
    try:
        if isinstance(program, BaseException):
            raise program
        _guard(_names(program))
        _signal.setitimer(_signal.ITIMER_REAL, timeout)
        try:
            exec(program, {})
        finally:
            _signal.setitimer(_signal.ITIMER_REAL, 0)
        return "passed"
    except _Timeout:
        return "timed out"
    except BaseException:  # noqa: BLE001 - any failure of the check is a failed check
        return "failed"


def __run_item__(program) -> None:
    """The sandbox worker's item hook: check, print the verdict on the real stdout, and end here
    (a check's atexit handlers do not run, as in the official harness's process)."""
    verdict = check(program)
    os.write(1, verdict.encode())
    os._exit(0)
