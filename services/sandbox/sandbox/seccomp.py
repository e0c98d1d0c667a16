"""A seccomp-BPF filter for sandboxed snippets, assembled by hand (no libseccomp binding needed).

The namespaces already take away the network and the host's files; this filter closes the kernel
interfaces a snippet has no business with and that have carried local privilege escalations:
ptrace and cross-process memory access, mounting and namespace creation, kernel modules and kexec,
BPF, perf, keyrings, userfaultfd, io_uring, clock setting; and changing its CPU affinity (the
fallback CPU quota pins a run to its cores). Everything else is allowed, so ordinary
Python (threads, fork, files in /tmp, sockets on the private loopback) keeps working.

The program is a list of classic BPF instructions (`struct sock_filter`, 8 bytes each) in the
layout bubblewrap's `--seccomp FD` and `prctl(PR_SET_SECCOMP)` both take.
"""

from __future__ import annotations

import errno
import platform
import struct
from dataclasses import dataclass

# Syscall numbers per architecture, from the kernel's unistd headers: (x86_64, aarch64).
_SYSCALLS: dict[str, tuple[int, int]] = {
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "chroot": (161, 51),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "reboot": (169, 142),
    "sethostname": (170, 161),
    "setdomainname": (171, 162),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "unshare": (272, 97),
    "setns": (308, 268),
    "userfaultfd": (323, 282),
    "acct": (163, 89),
    "quotactl": (179, 60),
    "open_by_handle_at": (304, 265),
    "name_to_handle_at": (303, 264),
    "syslog": (103, 116),
    "fanotify_init": (300, 262),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "clock_settime": (227, 112),
    "settimeofday": (164, 170),
    "adjtimex": (159, 171),
    "clock_adjtime": (305, 266),
    "vhangup": (153, 58),
    "move_mount": (429, 429),
    "open_tree": (428, 428),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "clone": (56, 220),
    "clone3": (435, 435),
    "socket": (41, 198),
    # Where no cgroup can hold a run's CPU quota, the run is pinned to its own cores; the snippet
    # must not be able to widen that set (cgroups.py).
    "sched_setaffinity": (203, 122),
}

DENIED_SYSCALLS: tuple[str, ...] = tuple(n for n in _SYSCALLS if n not in ("clone", "clone3", "socket"))

# Address families a snippet may open: local sockets and IP (which only reaches the run's own
# loopback, since the run has its own network namespace). Netlink, packet, vsock... are refused.
ALLOWED_SOCKET_FAMILIES: tuple[int, ...] = (1, 2, 10)  # AF_UNIX, AF_INET, AF_INET6

# clone() flags that create namespaces; with unshare/setns denied, a snippet cannot build a new
# user namespace to regain capabilities in.
_CLONE_NAMESPACE_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)

_ARCHES = {"x86_64": (0, 0xC000003E), "aarch64": (1, 0xC00000B7)}  # column, AUDIT_ARCH_*
_X32_SYSCALL_BIT = 0x40000000  # x86_64 also accepts x32-ABI numbers; refuse that whole range

# Classic BPF opcodes and seccomp return values (linux/filter.h, linux/seccomp.h).
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000

# struct seccomp_data offsets: nr, arch, then args[0] at 16 (its low 32 bits on little-endian).
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16


class UnsupportedArchitecture(RuntimeError):
    pass


@dataclass(frozen=True)
class _Insn:
    code: int
    k: int
    jt: int | str = 0  # a relative offset, or a label resolved at assembly time
    jf: int | str = 0


def build_filter(machine: str | None = None) -> bytes:
    """The filter as raw `struct sock_filter` bytes for `machine` (default: this host)."""
    machine = machine or platform.machine()
    if machine not in _ARCHES:
        raise UnsupportedArchitecture(f"no seccomp syscall table for architecture {machine!r}")
    column, audit_arch = _ARCHES[machine]
    nr = {name: numbers[column] for name, numbers in _SYSCALLS.items()}

    prog: list[tuple[str | None, _Insn]] = [
        (None, _Insn(_LD_W_ABS, _OFF_ARCH)),
        (None, _Insn(_JEQ_K, audit_arch, 0, "kill")),  # a foreign ABI could bypass the table
        (None, _Insn(_LD_W_ABS, _OFF_NR)),
    ]
    if machine == "x86_64":
        prog.append((None, _Insn(_JGE_K, _X32_SYSCALL_BIT, "eperm", 0)))
    prog += [(None, _Insn(_JEQ_K, nr[name], "eperm", 0)) for name in DENIED_SYSCALLS]
    prog += [
        # clone3 hides its flags in memory BPF cannot read; ENOSYS makes libc fall back to clone.
        (None, _Insn(_JEQ_K, nr["clone3"], "enosys", 0)),
        (None, _Insn(_JEQ_K, nr["clone"], "clone", 0)),
        (None, _Insn(_JEQ_K, nr["socket"], "socket", 0)),
        ("allow", _Insn(_RET_K, _RET_ALLOW)),
        ("eperm", _Insn(_RET_K, _RET_ERRNO | errno.EPERM)),
        ("enosys", _Insn(_RET_K, _RET_ERRNO | errno.ENOSYS)),
        ("kill", _Insn(_RET_K, _RET_KILL_PROCESS)),
        ("clone", _Insn(_LD_W_ABS, _OFF_ARG0)),
        (None, _Insn(_JSET_K, _CLONE_NAMESPACE_FLAGS, "eperm_back", "allow_back")),
        ("socket", _Insn(_LD_W_ABS, _OFF_ARG0)),
    ]
    prog += [(None, _Insn(_JEQ_K, family, "allow_back", 0)) for family in ALLOWED_SOCKET_FAMILIES]
    prog += [
        (None, _Insn(_RET_K, _RET_ERRNO | errno.EAFNOSUPPORT)),
        # BPF jumps only go forward, so the argument checks need their own returns after them.
        ("allow_back", _Insn(_RET_K, _RET_ALLOW)),
        ("eperm_back", _Insn(_RET_K, _RET_ERRNO | errno.EPERM)),
    ]
    return _assemble(prog)


def _assemble(prog: list[tuple[str | None, _Insn]]) -> bytes:
    labels = {label: i for i, (label, _) in enumerate(prog) if label}
    out = bytearray()
    for i, (_, insn) in enumerate(prog):
        jt, jf = (_offset(i, j, labels) for j in (insn.jt, insn.jf))
        out += struct.pack("=HBBI", insn.code, jt, jf, insn.k)
    return bytes(out)


def _offset(at: int, target: int | str, labels: dict[str, int]) -> int:
    if isinstance(target, int):
        return target
    offset = labels[target] - at - 1
    if not 0 <= offset <= 255:
        raise ValueError(f"BPF jump from {at} to {target!r} is out of range ({offset})")
    return offset
