"""Many programs in one sandbox run: each keeps its own verdict, limits and output."""

from __future__ import annotations

import time

from stepcode_core.tracing.forked_batch import run_forked


def test_each_program_gets_its_own_verdict(local_sandbox):
    scripts = [
        "print('first')",
        "while True:\n    pass",
        "print('x' * 5000)",
        "import sys\nsys.stderr.write('bad')\nsys.exit(3)",
        "raise ValueError('boom')",
        "blob = bytearray(2 ** 34)",
        "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)",
        "import os\nopen('note.txt', 'w').write('mine')\nprint(sorted(os.listdir('.')))",
        "import os\nprint(sorted(os.listdir('.')))",
        "print('last')",
    ]
    started = time.monotonic()
    results = run_forked(scripts, local_sandbox, timeout_s=1.0, memory_mb=256, batch=16, output_limit_bytes=1000)
    assert time.monotonic() - started < 20
    assert [r.status for r in results] == [
        "ok", "timeout", "output_limit", "error", "error", "memory", "killed", "ok", "ok", "ok"]
    assert results[0].stdout == "first\n" and results[-1].stdout == "last\n"
    assert results[3].exit_code == 3 and results[3].stderr == "bad"
    assert "ValueError: boom" in results[4].stderr
    assert results[7].stdout == "['note.txt']\n" and results[8].stdout == "[]\n"  # a directory each
