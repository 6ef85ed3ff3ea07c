"""``stepcode ui``: ``dagster dev`` (webserver and daemon) under a small supervisor that stops all of it.

Hand-written rather than an ``exec`` into ``dagster dev`` or a process-manager dependency: a
``dagster dev`` started in the background (``&`` in a shell, a test, a service manager) inherits
SIGINT and SIGTERM ignored and then outlives any Ctrl-C or ``kill``, and so do its webserver, daemon
and code servers. Started in a session of its own with default signal dispositions, it stops on
its signals; this module forwards ours to its process group and makes sure nothing of it is left.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipelines.processes import signal_group, stop_process_group

# What a terminal (Ctrl-C, closing it) or a service manager sends to stop a program.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def dagster_dev_command(port: int) -> list[str]:
    dagster = Path(sys.executable).with_name("dagster")
    return [str(dagster), "dev", "-m", "pipelines.definitions", "--port", str(port)]


def run_supervised(command: Sequence[str], env: Mapping[str, str], grace_s: float = 30.0) -> int:
    """Run ``command`` in a new session (its own process group) until it exits; a SIGINT, SIGTERM or
    SIGHUP we receive goes to that whole group, and what is still alive ``grace_s`` after the first
    one is killed (SIGKILL to the group). Returns the child's exit status (128 + N for signal N).
    Hand-written, as the module says, because ``dagster dev`` itself cannot be trusted to stop when
    its dispositions were inherited as "ignored"."""
    received: list[int] = []
    child: subprocess.Popen | None = None

    def forward(signum: int, frame) -> None:
        received.append(signum)
        if child is not None:
            signal_group(child.pid, signum)

    # Installed before the child starts: a handled signal reverts to its default at exec, so the
    # child starts with default dispositions even where ours were inherited as "ignored".
    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    try:
        child = subprocess.Popen(list(command), env=dict(env), start_new_session=True)
        if received:  # arrived while the child was starting
            signal_group(child.pid, received[-1])
        first_signal_at: float | None = None
        killed = False
        while True:
            try:
                status = child.wait(timeout=0.25)
                break
            except subprocess.TimeoutExpired:
                pass
            if received and first_signal_at is None:
                first_signal_at = time.monotonic()
            if not killed and first_signal_at is not None and time.monotonic() - first_signal_at > grace_s:
                print(f"{command[0]} did not stop within {grace_s:.0f}s: killing it", file=sys.stderr)
                signal_group(child.pid, signal.SIGKILL)
                killed = True
        # The group outlives its leader when a member lingers (a code server finishing a request),
        # and a run stopped mid-way can leave sandbox containers: stop_process_group ends both.
        stop_process_group(child, grace_s=5.0)
        return 128 - status if status < 0 else status
    finally:
        if child is not None and child.poll() is None:  # we are leaving on an exception: leave nothing behind
            signal_group(child.pid, signal.SIGKILL)
            child.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)

