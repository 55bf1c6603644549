"""A seccomp filter for sandboxed processes: the syscalls a tool never needs fail with EPERM.

bubblewrap loads it (`--add-seccomp-fd`) just before it execs the launcher, so it covers the launcher and
everything the tool starts. It is a deny list over the x86-64 syscall table (other architectures get no
filter, and the probe reports it): kernel-surface and escape-prone calls (ptrace and process_vm_*, bpf,
perf_event_open, userfaultfd, io_uring, keyrings, mounts and the new mount API, setns/unshare, modules,
kexec, reboot, swap, clock setting, syslog, open_by_handle_at, ioperm/iopl), `clone` with any namespace flag,
`clone3` as ENOSYS (so the C library falls back to `clone`, whose flags the filter can see), and every x32
syscall. A process of a foreign architecture is killed.
"""

from __future__ import annotations

import errno
import platform
import struct
from dataclasses import dataclass

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
RET_KILL_PROCESS = 0x80000000

BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_JGE_K = 0x35
BPF_JSET_K = 0x45
BPF_RET_K = 0x06

OFFSET_NR = 0
OFFSET_ARCH = 4
OFFSET_ARG0_LOW = 16

CLONE_NAMESPACE_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)

X86_64_CLONE = 56
X86_64_CLONE3 = 435
X86_64_DENIED = {
    "ptrace": 101,
    "syslog": 103,
    "vhangup": 153,
    "modify_ldt": 154,
    "pivot_root": 155,
    "adjtimex": 159,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "swapon": 167,
    "swapoff": 168,
    "reboot": 169,
    "iopl": 172,
    "ioperm": 173,
    "init_module": 175,
    "delete_module": 176,
    "quotactl": 179,
    "lookup_dcookie": 212,
    "clock_settime": 227,
    "kexec_load": 246,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "unshare": 272,
    "perf_event_open": 298,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "clock_adjtime": 305,
    "setns": 308,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "finit_module": 313,
    "kexec_file_load": 320,
    "bpf": 321,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
}


@dataclass(frozen=True)
class _Insn:
    code: int
    k: int
    true: str | None = None
    false: str | None = None
    label: str | None = None


def supported() -> bool:
    """Whether this machine's architecture has a filter."""
    return platform.machine() in {"x86_64", "AMD64"}


def program() -> bytes:
    """The filter as bwrap reads it: an array of `struct sock_filter` in native byte order."""
    insns = [
        _Insn(BPF_LD_W_ABS, OFFSET_ARCH),
        _Insn(BPF_JEQ_K, AUDIT_ARCH_X86_64, None, "kill"),
        _Insn(BPF_LD_W_ABS, OFFSET_NR),
        _Insn(BPF_JGE_K, X32_SYSCALL_BIT, "deny", None),
        *(_Insn(BPF_JEQ_K, nr, "deny", None) for nr in sorted(X86_64_DENIED.values())),
        _Insn(BPF_JEQ_K, X86_64_CLONE3, "enosys", None),
        _Insn(BPF_JEQ_K, X86_64_CLONE, "clone", None),
        _Insn(BPF_RET_K, RET_ALLOW),
        _Insn(BPF_LD_W_ABS, OFFSET_ARG0_LOW, label="clone"),
        _Insn(BPF_JSET_K, CLONE_NAMESPACE_FLAGS, "deny", None),
        _Insn(BPF_RET_K, RET_ALLOW),
        _Insn(BPF_RET_K, RET_ERRNO | errno.EPERM, label="deny"),
        _Insn(BPF_RET_K, RET_ERRNO | errno.ENOSYS, label="enosys"),
        _Insn(BPF_RET_K, RET_KILL_PROCESS, label="kill"),
    ]
    labels = {insn.label: index for index, insn in enumerate(insns) if insn.label is not None}

    def offset(index: int, target: str | None) -> int:
        if target is None:
            return 0
        distance = labels[target] - index - 1
        if not 0 <= distance <= 255:
            raise ValueError(f"seccomp jump to {target} out of range")
        return distance

    return b"".join(
        struct.pack("=HBBI", insn.code, offset(i, insn.true), offset(i, insn.false), insn.k)
        for i, insn in enumerate(insns)
    )
