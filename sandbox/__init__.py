"""Sandboxed execution of untrusted Python programs: one contract, a local and a Docker backend.

    from sandbox import ExecutionRequest, open_sandbox
    with open_sandbox(backend="auto") as sb:
        results = sb.run_batch([ExecutionRequest(code="print(1)")])

See DESIGN §5. This package imports nothing from stepcode_core, pipelines or dagster.
"""

from sandbox.contract import (
    STATUSES,
    Batch,
    ExecutionRequest,
    ExecutionResult,
    SandboxError,
)
from sandbox.open import open_sandbox
from sandbox.pool import Sandbox

__all__ = ["STATUSES", "Batch", "ExecutionRequest", "ExecutionResult", "Sandbox", "SandboxError", "open_sandbox"]
