"""Sandboxed execution of untrusted Python programs: one contract, a local and a Docker backend.

    from sandbox import ExecutionRequest, open_sandbox
    with open_sandbox(backend="auto") as sb:
        results = sb.run_batch([ExecutionRequest(code="print(1)")])

Every run has a wall-time limit, a memory limit, no network, a private writable temp dir and nothing else
writable, a process limit, capped output, an empty environment, and a status that says what happened;
the items of a batch each get all of that, and nothing one item starts outlives it. This package
imports nothing from stepcode_core, pipelines or dagster.
"""

from sandbox.contract import (
    STATUSES,
    Batch,
    ExecutionRequest,
    ExecutionResult,
    SandboxError,
)
from sandbox.open import open_sandbox, remove_orphaned_workers
from sandbox.pool import Sandbox

__all__ = ["STATUSES", "Batch", "ExecutionRequest", "ExecutionResult", "Sandbox", "SandboxError", "open_sandbox",
           "remove_orphaned_workers"]
