"""The one contract, run against every backend."""

from __future__ import annotations

import json

import pytest

from sandbox import STATUSES, ExecutionRequest, ExecutionResult, open_sandbox

R = ExecutionRequest


def test_ok_run_returns_stdout_exit_code_and_duration(sb):
    res = sb.run(R(code="print('hello')\nprint(6 * 7)"))
    assert res.status == "ok" and res.exit_code == 0
    assert res.stdout == "hello\n42\n" and res.stderr == ""
    assert 0 < res.duration_s < 5
    assert set(res.to_dict()) == {"status", "exit_code", "stdout", "stderr", "duration_s"}
    json.dumps(res.to_dict())


def test_runs_as_a_script_in_a_private_temp_dir(sb):
    code = "import os, sys\nprint(__name__)\nprint(os.getcwd() == os.path.dirname(sys.argv[0]))\nprint(os.listdir('.'))"
    a, b = sb.run_batch([R(code=code), R(code=code)])
    assert a.stdout.splitlines()[:2] == ["__main__", "True"]
    assert a.stdout.splitlines()[2] == "['program.py']"


def test_files_do_not_carry_over_between_runs(sb):
    write = "open('/tmp/leftover', 'w').write('x'); open('mine', 'w').write('y'); print('wrote')"
    read = "import os; print(os.path.exists('/tmp/leftover'), os.path.exists('mine'))"
    for _ in range(len(sb.workers)):  # every worker writes, then every worker reads
        assert sb.run(R(code=write)).stdout == "wrote\n"
    assert {r.stdout for r in sb.run_batch([R(code=read)] * (2 * len(sb.workers)))} == {"False False\n"}


def test_environment_is_empty(sb):
    assert sb.run(R(code="import os; print(dict(os.environ))")).stdout == "{}\n"


def test_stdin_is_passed(sb):
    res = sb.run(R(code="import sys; data = sys.stdin.read(); print(data.upper(), end='')", stdin="abc\nü\n"))
    assert res.stdout == "ABC\nÜ\n"
    assert sb.run(R(code="print(repr(input()))", stdin="x y\n")).stdout == "'x y'\n"
    empty = sb.run(R(code="import sys; print(repr(sys.stdin.read()))"))
    assert empty.stdout == "''\n"


@pytest.mark.parametrize(("code", "status", "exit_code"), [
    ("raise ValueError('boom')", "error", 1),
    ("import sys; sys.exit(3)", "error", 3),
    ("import sys; sys.exit()", "ok", 0),
    ("raise SystemExit('bye')", "error", 1),
    ("import os; os._exit(7)", "error", 7),
])
def test_exit_statuses(sb, code, status, exit_code):
    res = sb.run(R(code=code))
    assert (res.status, res.exit_code) == (status, exit_code)


def test_traceback_is_the_programs_own(sb):
    res = sb.run(R(code="def f():\n    return 1 / 0\nf()"))
    assert res.status == "error"
    assert res.stderr.startswith("Traceback (most recent call last):\n  File ")
    assert "program.py\", line 2, in f" in res.stderr and "return 1 / 0" in res.stderr
    assert res.stderr.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "worker" not in res.stderr


def test_program_is_not_compiled_with_the_workers_future_flags(sb):
    res = sb.run(R(code="def f(x: undefined_name): pass\nprint('defined')"))
    assert res.status == "error" and "NameError" in res.stderr


def test_threads_and_atexit_finish_like_an_interpreter_exit(sb):
    code = ("import atexit, threading, time\natexit.register(lambda: print('atexit'))\n"
            "t = threading.Thread(target=lambda: (time.sleep(0.05), print('thread')))\nt.start()\nprint('main')")
    assert sb.run(R(code=code)).stdout == "main\nthread\natexit\n"


def test_unflushed_output_and_stderr_are_kept(sb):
    res = sb.run(R(code="import sys\nprint('a', end='')\nsys.stderr.write('warn\\n')\nsys.stdout.write('b')"))
    assert (res.stdout, res.stderr) == ("ab", "warn\n")


def test_timeout(sb):
    res = sb.run(R(code="while True: pass", timeout_s=0.5))
    assert res.status == "timeout" and res.exit_code is None
    assert 0.5 <= res.duration_s < 2.5
    part = sb.run(R(code="import time\nprint('before', flush=True)\ntime.sleep(30)", timeout_s=0.5))
    assert part.status == "timeout" and part.stdout == "before\n"


def test_memory_limit(sb):
    res = sb.run(R(code="x = bytearray(600 * 1024 * 1024)\nprint('allocated')", memory_mb=256))
    assert res.status == "memory" and "allocated" not in res.stdout
    fits = sb.run(R(code="x = bytearray(100 * 1024 * 1024)\nprint(len(x))", memory_mb=512))
    assert fits.status == "ok" and fits.stdout == f"{100 * 1024 * 1024}\n"


def test_output_limit_caps_and_ends_the_run(sb):
    res = sb.run(R(code="print('x' * 5000, flush=True)\nimport time; time.sleep(5)", output_limit_bytes=1000, timeout_s=4))
    assert res.status == "output_limit"
    assert res.stdout == "x" * 1000
    assert res.duration_s < 2
    exact = sb.run(R(code="print('y' * 999)", output_limit_bytes=1000))
    assert exact.status == "ok" and exact.stdout == "y" * 999 + "\n"
    err = sb.run(R(code="import sys; sys.stderr.write('e' * 5000)", output_limit_bytes=100))
    assert err.status == "output_limit" and err.stderr == "e" * 100


def test_stdout_is_decoded_faithfully(sb):
    code = "import sys\nprint('ünïcödé ✓ \\x1emarker:1', flush=True)\nsys.stdout.buffer.write(b'raw\\xff\\n')"
    res = sb.run(R(code=code))
    assert res.status == "ok"
    assert res.stdout == "ünïcödé ✓ \x1emarker:1\nraw\ufffd\n"


def test_batch_keeps_request_order(sb):
    reqs = [R(code=f"import time; time.sleep({0.02 * (i % 3)}); print({i})") for i in range(40)]
    results = sb.run_batch(reqs)
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(40)]
    assert sb.run_batch([]) == []


def test_a_bad_run_does_not_disturb_its_batch(sb):
    reqs = [R(code="print(1)"), R(code="while True: pass", timeout_s=0.3), R(code="raise KeyError"), R(code="print(2)")]
    assert [r.status for r in sb.run_batch(reqs)] == ["ok", "timeout", "error", "ok"]


def test_every_status_is_known():
    assert STATUSES == ("ok", "error", "timeout", "memory", "output_limit", "killed")
    with pytest.raises(ValueError):
        ExecutionResult.from_wire({"status": "weird"})


@pytest.mark.parametrize("kwargs", [
    {"code": b"print(1)"},
    {"code": "x", "stdin": None},
    {"code": "x", "timeout_s": 0},
    {"code": "x", "timeout_s": -1},
    {"code": "x", "timeout_s": float("nan")},
    {"code": "x", "timeout_s": True},
    {"code": "x", "memory_mb": 1},
    {"code": "x", "memory_mb": 512.5},
    {"code": "x", "output_limit_bytes": -1},
])
def test_bad_requests_are_rejected_clearly(kwargs):
    with pytest.raises((TypeError, ValueError)):
        ExecutionRequest(**kwargs)


def test_bad_batch_items_raise_before_anything_runs(local_pool):
    with pytest.raises(TypeError, match="item 1"):
        local_pool.run_batch([R(code="print(1)"), "print(2)"])


def test_open_sandbox_rejects_unknown_backend_and_worker_count():
    with pytest.raises(ValueError):
        open_sandbox("podman")
    with pytest.raises(ValueError):
        open_sandbox("local", workers=0)


def test_closed_sandbox_refuses_work():
    sb = open_sandbox("local", workers=1)
    assert sb.run(R(code="print(1)")).status == "ok"
    sb.close()
    sb.close()
    with pytest.raises(Exception, match="closed"):
        sb.run(R(code="print(1)"))
