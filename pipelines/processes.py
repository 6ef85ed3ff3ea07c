"""Process groups: signal one, stop one and leave nothing of it behind.

Shared by the training launcher (``accelerate launch`` and its ranks) and ``stepcode ui`` (``dagster
dev``, its webserver, daemon and code servers); free of Dagster so that the UI's supervisor starts
without loading it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

from sandbox import remove_orphaned_workers


def signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to every process of the group; a group already gone is not an error."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def stop_process_group(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the group ``process`` leads, wait up to ``grace_s``, then SIGKILL what is left; then
    remove the sandbox containers of processes that died without closing them. Never raises: it runs
    while another error or an interrupt is on its way up."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if not group_alive(process.pid):
            break
        signal_group(process.pid, sig)
        deadline = time.monotonic() + wait_s
        while group_alive(process.pid) and time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.2)
    with contextlib.suppress(Exception):
        remove_orphaned_workers()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # a member changed its uid (a sandbox worker): still alive
        return True
