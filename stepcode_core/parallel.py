"""Spread pure, CPU-bound work on our own code (never untrusted programs) over the machine's cores."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def parallel_map(function: Callable[[T], R], items: Sequence[T], *, min_items: int = 2000, workers: int | None = None) -> list[R]:
    """``[function(x) for x in items]`` in order, over a process pool once the list is large enough to
    repay the pool's start-up (about 0.2 s)."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(items) < min_items:
        return [function(item) for item in items]
    chunk = max(1, len(items) // (workers * 4))
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(function, items, chunksize=chunk))
