"""The one request/result contract every backend honours.

A request is one Python program with its limits; a :class:`Batch` is many of them that share a
prelude (code compiled once, run before each item) and a string-hash seed. Every item runs in a
process of its own, under its own limits, and gets its own :class:`ExecutionResult`; nothing an
item starts outlives it, and it cannot see or change another item's files, processes or result.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

STATUSES = ("ok", "error", "timeout", "memory", "output_limit", "killed")
MIB = 1024 * 1024


@dataclass(frozen=True)
class ExecutionRequest:
    """One Python program to run as ``python3 program.py`` in a private temp dir.

    Limits are per run: wall time (``timeout_s``, compiling included), address space (``memory_mb``,
    compiling included) and bytes kept of each of stdout and stderr (``output_limit_bytes``; going
    over ends the run as ``output_limit``). Invalid values raise at construction, so a bad request
    fails before anything runs. A program over ``sandbox.worker.MAX_CODE_CHARS`` (1 MiB characters)
    is not compiled: its result is ``error``, with the cap in its stderr.
    """

    code: str
    stdin: str = ""
    timeout_s: float = 5.0
    memory_mb: int = 512
    output_limit_bytes: int = MIB

    def __post_init__(self) -> None:
        if not isinstance(self.code, str):
            raise TypeError(f"code must be str, not {type(self.code).__name__}")
        if not isinstance(self.stdin, str):
            raise TypeError(f"stdin must be str, not {type(self.stdin).__name__}")
        t = self.timeout_s
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not 0 < t <= 3600:
            raise ValueError(f"timeout_s must be a number in (0, 3600], got {t!r}")
        m = self.memory_mb
        if isinstance(m, bool) or not isinstance(m, int) or not 64 <= m <= 64 * 1024:
            raise ValueError(f"memory_mb must be an int in [64, 65536], got {m!r}")
        o = self.output_limit_bytes
        if isinstance(o, bool) or not isinstance(o, int) or not 0 <= o <= 256 * MIB:
            raise ValueError(f"output_limit_bytes must be an int in [0, 256 MiB], got {o!r}")
        if len(self.code) + len(self.stdin) > 64 * MIB:
            raise ValueError("code plus stdin must be under 64 MiB")

    def to_wire(self) -> dict:
        return {"code": self.code, "stdin": self.stdin, "timeout_s": self.timeout_s, "memory_mb": self.memory_mb,
                "output_limit_bytes": self.output_limit_bytes}


@dataclass(frozen=True)
class ExecutionResult:
    """What happened: ``status`` is one of :data:`STATUSES`; ``exit_code`` is the process exit
    status (negative signal number when killed by a signal, None when the sandbox ended the run)."""

    status: str
    exit_code: int | None
    stdout: str
    stderr: str
    duration_s: float

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_wire(cls, raw: dict) -> "ExecutionResult":
        status = raw.get("status")
        if status not in STATUSES:
            raise ValueError(f"bad status from worker: {status!r}")
        return cls(status, raw.get("exit_code"), raw.get("stdout", ""), raw.get("stderr", ""),
                   float(raw.get("duration_s", 0.0)))


MAX_HASH_SEED = 2**32 - 1  # PYTHONHASHSEED's range


@dataclass(frozen=True)
class Batch:
    """Items that run together: in order, one process each, packed into as few sandbox runs as
    keeps every worker busy.

    ``prelude`` is Python code compiled once per sandbox run and executed in each item's process
    before the item's own code, in the same ``__main__`` namespace (a runtime the items call, for
    example); it is untrusted like the items. ``hash_seed`` runs the items under that
    ``PYTHONHASHSEED`` (a fresh interpreter when the worker's differs); None takes the worker's.
    ``preload`` names library modules (from the sandbox's package folders: numpy, pandas) that the
    worker imports before forking the items, so that each item finds them loaded instead of paying
    their import; a worker restarts its interpreter to change what it has preloaded.
    """

    items: tuple[ExecutionRequest, ...]
    prelude: str = ""
    hash_seed: int | None = None
    preload: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", tuple(self.items))
        for index, item in enumerate(self.items):
            if not isinstance(item, ExecutionRequest):
                raise TypeError(f"item {index} is a {type(item).__name__}, not an ExecutionRequest")
        if not isinstance(self.prelude, str):
            raise TypeError(f"prelude must be str, not {type(self.prelude).__name__}")
        if len(self.prelude) > 64 * MIB:
            raise ValueError("prelude must be under 64 MiB")
        object.__setattr__(self, "preload", tuple(self.preload))
        for name in self.preload:
            if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
                raise ValueError(f"preload names modules, got {name!r}")
        seed = self.hash_seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_HASH_SEED):
            raise ValueError(f"hash_seed must be None or an int in [0, {MAX_HASH_SEED}], got {seed!r}")


class SandboxError(RuntimeError):
    """The sandbox itself failed (a backend cannot start), as opposed to the program failing."""
