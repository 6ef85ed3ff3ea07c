"""Many small programs in one sandbox run, each in a process of its own.

A sandbox run costs a few milliseconds of set-up (a fork from the warm worker, a private temp dir,
rlimits, clean-up); the programs we trace run in well under one. So ``run_forked`` packs ``batch``
programs into one sandbox run whose runner forks one child per program, one at a time, each in a new
session with its own working directory, its own wall-clock limit and output cap, and reports for each
the same verdicts the sandbox uses (ok, error, timeout, memory, output_limit, killed). The sandbox
still contains the whole run (namespaces, uid, rlimits, network); a program can only disturb the
programs after it in the same batch, and only through the shared scratch space. A batch whose run
fails as a whole is re-run one program per sandbox run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

_RUNNER = r'''
import json, os, select, signal, sys, time

if len(sys.argv) > 1:  # re-executed below, with the payload in a file
    with open(sys.argv[1]) as handle:
        payload = json.load(handle)
else:
    payload = json.loads(sys.stdin.read())
seed = payload.get("hash_seed")
if seed is not None and os.environ.get("PYTHONHASHSEED") != str(seed):
    # String hashing is seeded once per interpreter: a fresh one is the only way to run under another seed.
    path = os.path.join(os.getcwd(), "payload.json")
    with open(path, "w") as handle:
        json.dump(payload, handle)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-S", sys.argv[0], path], {"PYTHONHASHSEED": str(seed)})
# What the sandbox worker has imported before it forks: a re-executed runner imports it too, so that
# each forked program does not pay for it (and both runs see the same modules loaded).
import bisect, collections, copy, functools, heapq, io, itertools, math, operator, re, string, traceback
timeout, cap = payload["timeout"], payload["output_limit"]
base = os.getcwd()
shared = {"__name__": "__main__"}
if payload.get("prelude"):  # compiled and run once; every forked program starts from a copy of it
    exec(compile(payload["prelude"], os.path.join(base, "prelude.py"), "exec"), shared)
import gc
gc.freeze()  # the collector leaves the parent's objects alone, so children do not copy their pages
reports = []
for index, script in enumerate(payload["scripts"]):
    workdir = os.path.join(base, "p%d" % index)
    os.mkdir(workdir)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.setsid()
        os.chdir(workdir)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
        code = 0
        try:
            exec(compile(script, os.path.join(workdir, "program.py"), "exec"), shared)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        try:
            sys.stdout.flush(); sys.stderr.flush()
        except BaseException:
            code = code or 120
        os._exit(code & 0xFF)
    os.close(out_w)
    os.close(err_w)
    buffers = {out_r: bytearray(), err_r: bytearray()}
    status, open_fds, deadline = None, {out_r, err_r}, start + timeout
    while open_fds:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            status = "timeout"
            break
        ready, _, _ = select.select(list(open_fds), [], [], remaining)
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.discard(fd)
            else:
                buffers[fd] += chunk
                if len(buffers[fd]) > cap:
                    status = "output_limit"
        if status:
            break
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    _, wait_status = os.waitpid(pid, 0)
    for fd in (out_r, err_r):
        os.close(fd)
    stdout = bytes(buffers[out_r][:cap]).decode("utf-8", errors="replace")
    stderr = bytes(buffers[err_r][:cap]).decode("utf-8", errors="replace")
    exit_code = None
    if status is None:
        if os.WIFSIGNALED(wait_status):
            exit_code = -os.WTERMSIG(wait_status)
            status = "timeout" if os.WTERMSIG(wait_status) == signal.SIGXCPU else "killed"
        else:
            exit_code = os.WEXITSTATUS(wait_status)
            last = stderr.rstrip().rsplit("\n", 1)[-1]
            status = "ok" if exit_code == 0 else ("memory" if last.startswith("MemoryError") else "error")
    reports.append({"status": status, "exit_code": exit_code, "stdout": stdout, "stderr": stderr,
                    "duration_s": round(time.monotonic() - start, 6)})
sys.__stdout__.write(json.dumps(reports))
'''


@dataclass(frozen=True)
class ForkedResult:
    """The verdict of one program, in the sandbox contract's terms."""

    status: str
    exit_code: int | None
    stdout: str
    stderr: str
    duration_s: float


def run_forked(scripts: list[str], sandbox, *, timeout_s: float, memory_mb: int, batch: int = 64,
               output_limit_bytes: int = 1 << 20, hash_seed: int | None = None,
               prelude: str | None = None) -> list[ForkedResult]:
    """Run ``scripts`` (Python programs) in ``sandbox``, ``batch`` to a sandbox run; results in order.
    With ``hash_seed``, each batch runs in a fresh interpreter with that ``PYTHONHASHSEED`` (about
    30 ms a batch), so that set and dict orders of strings differ from the sandbox worker's. A
    ``prelude`` (code every script needs) is run once per batch, before the forks; a script that a
    failed batch re-runs alone gets it prepended."""
    (results,) = run_forked_passes([(scripts, hash_seed)], sandbox, timeout_s=timeout_s, memory_mb=memory_mb,
                                   batch=batch, output_limit_bytes=output_limit_bytes, prelude=prelude)
    return results


def run_forked_passes(passes: list[tuple[list[str], int | None]], sandbox, *, timeout_s: float, memory_mb: int,
                      batch: int = 64, output_limit_bytes: int = 1 << 20,
                      prelude: str | None = None) -> list[list[ForkedResult]]:
    """Several passes of :func:`run_forked` (``(scripts, hash_seed)`` each), submitted together so
    that the sandbox's workers stay busy across them; one result list per pass."""
    from sandbox import ExecutionRequest

    def request(chunk: list[str], hash_seed: int | None) -> ExecutionRequest:
        payload = json.dumps({"scripts": chunk, "timeout": timeout_s, "output_limit": output_limit_bytes,
                              "hash_seed": hash_seed, "prelude": prelude})
        return ExecutionRequest(code=_RUNNER, stdin=payload, timeout_s=min(3600, timeout_s * len(chunk) + 10),
                                memory_mb=memory_mb,
                                output_limit_bytes=min(256 << 20, 2 * output_limit_bytes * len(chunk) + (1 << 16)))

    chunks = [(index, scripts[start : start + batch], seed)
              for index, (scripts, seed) in enumerate(passes) for start in range(0, len(scripts), batch)]
    outcomes = sandbox.run_batch([request(chunk, seed) for _, chunk, seed in chunks])
    results: list[list[ForkedResult]] = [[] for _ in passes]
    for (index, chunk, seed), outcome in zip(chunks, outcomes):
        reports = _reports(outcome, len(chunk))
        if reports is None and seed is None:  # the batch failed as a whole: one sandbox run per program
            alone = sandbox.run_batch([ExecutionRequest(code=(prelude + "\n" if prelude else "") + script,
                                                        timeout_s=timeout_s, memory_mb=memory_mb,
                                                        output_limit_bytes=output_limit_bytes) for script in chunk])
            reports = [ForkedResult(r.status, r.exit_code, r.stdout, r.stderr, r.duration_s) for r in alone]
        elif reports is None:  # under another seed, one program per run of the same runner
            reports = [run_forked([script], sandbox, timeout_s=timeout_s, memory_mb=memory_mb, batch=1,
                                  output_limit_bytes=output_limit_bytes, hash_seed=seed, prelude=prelude)[0]
                       if len(chunk) > 1 else ForkedResult(outcome.status, outcome.exit_code, "", outcome.stderr,
                                                           outcome.duration_s)
                       for script in chunk]
        results[index].extend(reports)
    return results


def batch_size(programs: int, sandbox, largest: int = 64) -> int:
    """Batches small enough that every worker gets several (the last ones finish together)."""
    workers = len(getattr(sandbox, "workers", ())) or 1
    return max(1, min(largest, -(-programs // (4 * workers))))


def _reports(outcome, expected: int) -> list[ForkedResult] | None:
    if outcome.status != "ok":
        return None
    try:
        raw = json.loads(outcome.stdout)
    except ValueError:
        return None
    if not isinstance(raw, list) or len(raw) != expected:
        return None
    return [ForkedResult(r["status"], r["exit_code"], r["stdout"], r["stderr"], r["duration_s"]) for r in raw]
