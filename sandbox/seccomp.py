"""The system-call filter every item runs under, built with libseccomp (through ``pyseccomp``).

The host compiles the filter once into classic BPF and hands the bytes to each worker, which loads
them in every item's process with one ``prctl`` after dropping to the item's uid. libseccomp knows
each architecture's system-call numbers and the ABI checks a filter needs; the worker stays stdlib
only (it is copied alone into the Docker image) and never parses a policy.

The policy: allow by default, deny (``EPERM``) what untrusted Python never needs and what would
let an item reach past its own process: new namespaces, mounts, the kernel keyrings, io_uring,
perf, bpf, userfaultfd, ptrace and cross-process memory access, module and kexec loading.
``clone3`` answers ``ENOSYS`` (its flags sit in a struct a filter cannot read), so the C library
falls back to ``clone``, whose namespace flags the filter does see. A system call of another
architecture's ABI kills the process.
"""

from __future__ import annotations

import base64
import errno
import functools
import tempfile

from sandbox.contract import SandboxError

DENIED = (
    # namespaces and mounts: an item stays in the ones its supervisor made for it
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsmount", "fsconfig", "fspick",
    "move_mount", "open_tree", "mount_setattr", "open_by_handle_at", "name_to_handle_at",
    # kernel keyrings outlive a process (the user keyring belongs to the uid)
    "keyctl", "add_key", "request_key",
    # large attack surface, no use to a Python program we score
    "io_uring_setup", "io_uring_enter", "io_uring_register", "perf_event_open", "bpf", "userfaultfd",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "acct", "swapon", "swapoff", "reboot", "syslog", "quotactl", "lookup_dcookie", "vhangup",
)
NAMESPACE_FLAGS = {  # clone(2) flags that would make a new namespace
    "CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000, "CLONE_NEWTIME": 0x00000080,
}


@functools.lru_cache(maxsize=1)
def filter_bpf() -> bytes:
    """The compiled filter (classic BPF, ``struct sock_filter`` records). Raises SandboxError when
    libseccomp is missing: the sandbox does not run items without it."""
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError) as exc:  # OSError: the package is there, libseccomp.so.2 is not
        raise SandboxError(f"the sandbox's syscall filter needs libseccomp and pyseccomp: {exc} "
                           "(Debian: apt-get install libseccomp2; pip install pyseccomp)") from exc
    policy = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in DENIED:
        try:
            policy.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except (OSError, ValueError, RuntimeError):  # not a system call on this architecture
            continue
    for flag in NAMESPACE_FLAGS.values():
        policy.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    try:
        policy.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    except (OSError, ValueError, RuntimeError):
        pass
    with tempfile.TemporaryFile() as fh:
        policy.export_bpf(fh)
        fh.seek(0)
        program = fh.read()
    if not program or len(program) % 8:
        raise SandboxError(f"libseccomp exported a filter of {len(program)} bytes")
    return program


def filter_for_worker() -> str:
    """The filter as the worker's configuration carries it (base64)."""
    return base64.b64encode(filter_bpf()).decode("ascii")


def syscall_number(name: str) -> int:
    """This machine's number for a system call (for tests that call it raw)."""
    import pyseccomp as seccomp

    return seccomp.resolve_syscall(seccomp.system_arch(), name)

