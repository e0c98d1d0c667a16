"""The hand-assembled seccomp filter: its shape, and what it denies inside both isolation modes."""

from __future__ import annotations

import platform
import struct
from collections.abc import Iterator

import pytest
from sandbox.executor import SandboxExecutor
from sandbox.seccomp import DENIED_SYSCALLS, UnsupportedArchitecture, build_filter
from sandbox.settings import Settings

from chatforge.tools import ToolLimits

from .conftest import namespaces_executor

# ctypes probes inside the sandbox: each prints "<name> <return> <errno>".
PROBE = """
import ctypes, socket
libc = ctypes.CDLL(None, use_errno=True)
def probe(name, fn, *args):
    ctypes.set_errno(0)
    print(name, fn(*args), ctypes.get_errno())
probe("ptrace", libc.ptrace, 0, 0, 0, 0)
probe("unshare", libc.unshare, 0x10000000)
probe("mount", libc.mount, b"none", b"/tmp", b"tmpfs", 0, None)
probe("bpf", libc.syscall, BPF_NR, 0, 0, 0)
probe("keyctl", libc.syscall, KEYCTL_NR, 0, 0, 0)
probe("clone_newuser", libc.syscall, CLONE_NR, 0x10000000 | 17, 0, 0, 0, 0)
try:
    socket.socket(16, socket.SOCK_RAW, 0)
    print("netlink opened")
except OSError as e:
    print("netlink", -1, e.errno)
socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()
print("inet_unix ok")
"""
X86_64_NR = {"BPF_NR": 321, "KEYCTL_NR": 250, "CLONE_NR": 56}
x86_64_only = pytest.mark.skipif(
    platform.machine() != "x86_64", reason="the probe uses x86_64 syscall numbers"
)


def probe_code() -> str:
    code = PROBE
    for name, nr in X86_64_NR.items():
        code = code.replace(name, str(nr))
    return code


def test_filter_is_whole_instructions_with_forward_jumps() -> None:
    for machine in ("x86_64", "aarch64"):
        prog = build_filter(machine)
        assert len(prog) % 8 == 0 and 0 < len(prog) // 8 < 4096
        insns = list(struct.iter_unpack("=HBBI", prog))
        assert insns[-1][0] == 0x06, "the program must end in a return"
        for i, (code, jt, jf, _) in enumerate(insns):
            if code & 0x07 == 0x05:  # BPF_JMP: targets must lie inside the program
                assert i + 1 + max(jt, jf) < len(insns)


def test_filter_covers_the_dangerous_calls_and_rejects_unknown_arches() -> None:
    for name in ("ptrace", "mount", "kexec_load", "bpf", "perf_event_open", "keyctl", "unshare", "setns"):
        assert name in DENIED_SYSCALLS
    with pytest.raises(UnsupportedArchitecture):
        build_filter("mips")


def check_probe_output(stdout: str) -> None:
    lines = {line.split()[0]: line.split()[1:] for line in stdout.strip().splitlines()}
    for name in ("ptrace", "unshare", "mount", "bpf", "keyctl", "clone_newuser"):
        assert lines[name] == ["-1", "1"], (name, lines[name])  # EPERM
    assert lines["netlink"] == ["-1", "97"]  # EAFNOSUPPORT
    assert "inet_unix" in lines


@pytest.fixture(scope="module")
def weak() -> Iterator[SandboxExecutor]:
    with SandboxExecutor(Settings(mode="weak", max_concurrent=2)) as ex:
        yield ex


@x86_64_only
def test_filter_denies_inside_namespaces_mode() -> None:
    with namespaces_executor(max_concurrent=1) as ex:
        result = ex.run(probe_code(), ToolLimits(timeout_s=15.0))
    assert result.outcome == "ok", result
    check_probe_output(result.stdout)


@x86_64_only
def test_filter_denies_inside_weak_mode(weak: SandboxExecutor) -> None:
    assert weak.isolation.mode == "weak" and weak.isolation.seccomp
    result = weak.run(probe_code(), ToolLimits(timeout_s=15.0))
    assert result.outcome == "ok", result
    check_probe_output(result.stdout)
