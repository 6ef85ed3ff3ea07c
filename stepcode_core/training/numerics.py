"""One kernel path on every x86 CPU, so that a small CPU run trains the same weights on any machine.

fp32 alone does not make a run portable. PyTorch picks its vectorized kernels by the CPU's
instruction set (AVX512, AVX2, none) and MKL picks its GEMM code path the same way; each adds in a
different order, so the last bits differ, and a long run at a high learning rate amplifies them.
The miniature ablation, same seed and settings, started GRPO from a warm start scoring 65.0 on an
AMD EPYC and 32.4 on an Intel Xeon. Two switches the libraries document fix the path:

- ``ATEN_CPU_CAPABILITY=default``: PyTorch's portable kernels instead of the AVX2/AVX512 ones;
- ``MKL_CBWR=COMPATIBLE``: MKL's Conditional Numerical Reproducibility, one code path on every
  x86 CPU.

Both are read when the process runs its first kernel, so :func:`pin_portable_kernels` sets them and
then checks that PyTorch took the portable path: called after a kernel has run, it raises instead
of training on a path it did not pin. The cost is speed (about 15% on the miniature's tiny model);
``tests/core/test_numerics.py`` trains the same weights under different instruction-set limits.
"""

from __future__ import annotations

import os

PORTABLE_KERNELS = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}


class KernelPathError(RuntimeError):
    """The process chose its kernels before they could be pinned."""


def pin_portable_kernels() -> None:
    """Put this process on :data:`PORTABLE_KERNELS`' path; raise :class:`KernelPathError` when
    PyTorch had already chosen another one."""
    os.environ.update(PORTABLE_KERNELS)
    import torch

    chosen = torch.backends.cpu.get_cpu_capability()
    if chosen != "DEFAULT":
        settings = " ".join(f"{name}={value}" for name, value in PORTABLE_KERNELS.items())
        raise KernelPathError(f"PyTorch already runs its {chosen} kernels in this process, so the portable path "
                              f"cannot be pinned; start the process with {settings}")
