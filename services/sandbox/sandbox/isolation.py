"""How one run is launched: the isolation layers around a fresh Python process.

Namespaces mode (the normal one) runs the snippet under bubblewrap:
- a fresh process per run, as an unprivileged host uid (one per run slot when the service is root)
  and as `nobody` (65534) inside its own user namespace, with no capabilities;
- its own network namespace (only a private loopback: the host's 127.0.0.1 is unreachable, no DNS),
  pid namespace (the snippet is its pid 1 and sees only its own processes; when it exits, every
  process it left behind is killed), IPC,
  UTS and cgroup namespaces; no further user namespaces;
- a private filesystem: /usr (the interpreter and its stdlib) read-only, /proc and a minimal
  read-only /dev, fresh size-capped tmpfs mounts at /tmp and /dev/shm, the root read-only; no /etc,
  /home, /root or service files;
- an empty environment except PATH/HOME/LANG; bubblewrap itself gets an empty environment too,
  because its pid 1 inside the sandbox would otherwise expose the service's variables via /proc;
- the seccomp filter from `seccomp.py`, and rlimits (CPU, address space, processes, file size,
  open files, no core dumps) and OOM priority set before bubblewrap starts, inherited by everything;
- the run's placement (`cgroups.py`): its slot's cgroup (a CPU quota, memory and process caps for
  the whole run), joined first of all, or where cgroups are not writable its own pinned cores.

Weak mode is for hosts where namespaces are unavailable: the same fresh process, uid drop, rlimits
and seccomp filter, a per-run private directory as cwd, but the host's filesystem and network stay
visible. The service logs a warning at start and reports the mode at /healthz and /info.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import platform
import resource
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from chatforge.tools import ToolLimits

from .cgroups import Placement
from .process import MIN_RUN_UID, run_capped
from .seccomp import UnsupportedArchitecture, build_filter
from .settings import Settings

log = logging.getLogger(__name__)

SANDBOX_UID = 65534  # nobody, inside the run's user namespace
SNIPPET_PATH = "/sandbox/main.py"
_RUN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
# -I: ignore PYTHON* variables, user site and cwd; -B: no .pyc writes; -u: output reaches us
# as it is printed, so a run killed at its timeout still returns what it printed before.
_PYTHON_FLAGS = ("-I", "-B", "-u")
# How the launchers in front of the snippet report their own failures on stderr.
LAUNCHER_ERROR_PREFIXES = (b"bwrap: ", b"choom: ", b"prlimit: ", b"setpriv: ")

IsolationMode = Literal["namespaces", "weak"]


class SandboxUnavailable(RuntimeError):
    """The requested isolation cannot run on this host; the message says what failed."""


@dataclass(frozen=True)
class Isolation:
    """What this host can do, decided once at start by `detect_isolation`."""

    mode: IsolationMode
    python: str
    bwrap: str
    per_run_uid: bool  # the service is root, so each run slot gets its own host uid
    seccomp: bool
    reason: str = ""  # why the mode is weak
    # util-linux's choom, prlimit and setpriv: OOM priority, rlimits and the uid drop as a chain of
    # execs in front of bubblewrap. Then the service starts runs with vfork instead of fork plus
    # Python code in the child, which costs tens of ms in a large process (an engine with torch
    # loaded) and is unsafe in a threaded one. None: that work runs in a preexec function.
    exec_chain: tuple[str, str, str] | None = None
    run_caps: tuple[str, ...] = ()  # the executor's per-run caps: cgroup controllers, or cpu-pinning

    def layers(self) -> list[str]:
        out = ["fresh-process", "rlimits", "wall-clock-kill", "output-cap", *self.run_caps]
        out.append("per-run-uid" if self.per_run_uid else "service-uid")
        if self.mode == "namespaces":
            out += ["user-namespace", "pid-namespace", "network-namespace", "private-readonly-fs", "tmpfs"]
        if self.seccomp:
            out.append("seccomp")
        return out


@dataclass
class Launch:
    """Everything `process.run_capped` needs to start one run, plus what to release afterwards."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    uid: int | None  # host uid the run executes as; None keeps the service's
    preexec: Callable[[], None] | None  # run in the child before exec; None lets Popen use vfork
    pass_fds: tuple[int, ...] = ()  # memfds the launcher reads; closed by release()
    workdir: str | None = None  # weak mode's private directory; removed by release()

    def release(self) -> None:
        for fd in self.pass_fds:
            os.close(fd)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.pass_fds = ()
        self.workdir = None


def detect_isolation(settings: Settings, probe_uid: int | None = None) -> Isolation:
    """Pick the mode for this host, probing bubblewrap with a real run (as `probe_uid`, a run uid
    this process owns) unless told `weak`."""
    python = find_interpreter(settings.python_path)
    per_run_uid = os.geteuid() == 0
    try:
        build_filter()
        seccomp = True
    except UnsupportedArchitecture as e:
        log.warning("no seccomp filter: %s", e)
        seccomp = False
    bwrap = shutil.which(settings.bwrap_path) or settings.bwrap_path
    choom, prlimit, setpriv = (shutil.which(tool) for tool in ("choom", "prlimit", "setpriv"))
    chain = (choom, prlimit, setpriv) if choom and prlimit and setpriv else None
    ns = Isolation("namespaces", python, bwrap, per_run_uid, seccomp, exec_chain=chain)
    if settings.mode == "weak":
        return Isolation("weak", python, bwrap, per_run_uid, seccomp, reason="configured")
    problem = _probe(ns, settings, probe_uid)
    if problem is None:
        return ns
    if settings.mode == "namespaces":
        raise SandboxUnavailable(f"namespaces mode requested but bubblewrap cannot run here: {problem}")
    log.warning("SANDBOX RUNS IN WEAK MODE (no namespaces: host files and network are visible): %s", problem)
    return Isolation("weak", python, bwrap, per_run_uid, seccomp, reason=problem)


def prepare(
    iso: Isolation,
    settings: Settings,
    code: str,
    limits: ToolLimits,
    uid: int | None,
    placement: Placement | None = None,
) -> Launch:
    """Build the launch for one run as host `uid` (None: the service's own), joining `placement`
    (its slot's cgroup or cores) before anything else; the caller must `release()` it."""
    if uid is not None and uid < MIN_RUN_UID:
        raise ValueError(f"run uid {uid} is a system uid; run uids come from a UidLease")
    if iso.mode == "namespaces":
        return _prepare_namespaces(iso, settings, code, limits, uid, placement)
    preexec = _make_preexec(settings, limits, uid, build_filter() if iso.seccomp else None, placement)
    return _prepare_weak(iso, code, uid, preexec)


def find_interpreter(configured: str = "") -> str:
    """A Python every run uid can execute: the configured one, this one, or a system one."""
    if configured:
        if not os.path.isfile(configured):
            raise SandboxUnavailable(f"python_path {configured!r} is not a file")
        return configured
    candidates = [os.path.realpath(sys.executable), "/usr/local/bin/python3", "/usr/bin/python3"]
    for path in candidates:
        real = os.path.realpath(path)
        if os.path.isfile(real) and _world_executable(real):
            return real
    raise SandboxUnavailable(f"no interpreter readable by unprivileged users among {candidates}")


def _world_executable(path: str) -> bool:
    """True when an unrelated uid can reach and run `path` (every parent directory searchable)."""
    mode = os.stat(path).st_mode
    if not (mode & stat.S_IXOTH and mode & stat.S_IROTH):
        return False
    parent = os.path.dirname(path)
    while True:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return False
        if parent == "/":
            return True
        parent = os.path.dirname(parent)


def _prepare_namespaces(
    iso: Isolation,
    settings: Settings,
    code: str,
    limits: ToolLimits,
    uid: int | None,
    placement: Placement | None = None,
) -> Launch:
    # bubblewrap needs unshare and mount itself, so it installs the seccomp filter just before exec.
    if iso.exec_chain is not None:
        prefix = _exec_chain(iso.exec_chain, _rlimits(settings, limits, uid), uid)
        if placement is not None:  # first, as the service's user: the rest of the chain runs inside
            prefix = [*placement.exec_prefix(), *prefix]
        preexec = None
    else:
        prefix, preexec = [], _make_preexec(settings, limits, uid, None, placement)
    code_fd = _memfd("snippet", code.encode("utf-8", errors="surrogatepass"))
    fds = [code_fd]
    argv = [
        *prefix,
        iso.bwrap,
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        # The snippet is the namespace's pid 1, so bubblewrap's launcher waits for (and reaps) it
        # instead of exiting on a status message and orphaning an init process to the host.
        "--as-pid-1",
        "--uid", str(SANDBOX_UID),
        "--gid", str(SANDBOX_UID),
        "--hostname", "sandbox",
        *_system_mounts(iso.python),
        "--proc", "/proc",
        "--dev", "/dev",
        # Writable places are size-capped tmpfs mounts only (tmpfs pages are memory no rlimit
        # counts): /tmp, and /dev/shm for POSIX semaphores (multiprocessing); /dev itself read-only.
        "--size", str(settings.tmpfs_bytes),
        "--tmpfs", "/tmp",
        "--size", str(settings.tmpfs_bytes),
        "--tmpfs", "/dev/shm",
        "--remount-ro", "/dev",
        "--perms", "0444",
        "--file", str(code_fd), SNIPPET_PATH,
        "--remount-ro", "/",
        "--chdir", "/tmp",
        "--clearenv",
    ]  # fmt: skip
    for key, value in _RUN_ENV.items():
        argv += ["--setenv", key, value]
    if iso.seccomp:
        seccomp_fd = _memfd("seccomp", build_filter())
        fds.append(seccomp_fd)
        argv += ["--seccomp", str(seccomp_fd)]
    argv += ["--", iso.python, *_PYTHON_FLAGS, SNIPPET_PATH]
    return Launch(argv, env={}, cwd="/", uid=uid, preexec=preexec, pass_fds=tuple(fds))


def _prepare_weak(iso: Isolation, code: str, uid: int | None, preexec: Callable[[], None]) -> Launch:
    workdir = tempfile.mkdtemp(prefix="chatforge-sandbox-")
    path = os.path.join(workdir, "main.py")
    with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
        f.write(code)
    if uid is not None:
        os.chown(workdir, uid, uid)
        os.chown(path, uid, uid)
    env = dict(_RUN_ENV, HOME=workdir, TMPDIR=workdir)
    argv = [iso.python, *_PYTHON_FLAGS, path]
    return Launch(argv, env=env, cwd=workdir, uid=uid, preexec=preexec, workdir=workdir)


def _system_mounts(python: str) -> list[str]:
    """Read-only /usr, the merged-/usr symlinks (or directories) beside it, and the interpreter's prefix."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    prefix = os.path.dirname(os.path.dirname(python))  # <prefix>/bin/python3
    if prefix not in ("/", "/usr") and not prefix.startswith("/usr/"):
        args += ["--ro-bind", prefix, prefix]
    return args


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, 0)  # close-on-exec off: bubblewrap reads it by number
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _make_preexec(
    settings: Settings,
    limits: ToolLimits,
    uid: int | None,
    seccomp_filter: bytes | None,
    placement: Placement | None = None,
) -> Callable[[], None]:
    """The function run in the child between fork and exec: the placement, OOM priority, the uid
    drop, rlimits, and in weak mode the seccomp filter (bubblewrap installs it in namespaces mode)."""
    rlimits = [(which, value) for which, value, _ in _rlimits(settings, limits, uid)]
    install_seccomp = _seccomp_installer(seccomp_filter) if seccomp_filter is not None else None

    def preexec() -> None:
        if placement is not None:
            placement.in_child()
        # Without a run cgroup memory is capped per process only, so the container's limit is the
        # backstop; this makes the kernel's OOM killer pick a snippet, never the service.
        # Written before the uid drop, which makes /proc/self unwritable to us. Best effort: a
        # host without it still runs snippets.
        try:
            fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
            try:
                os.write(fd, b"1000")
            finally:
                os.close(fd)
        except OSError:
            pass
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        for which, value in rlimits:
            resource.setrlimit(which, (value, value))
        if install_seccomp is not None:
            install_seccomp()

    return preexec


def _rlimits(settings: Settings, limits: ToolLimits, uid: int | None) -> list[tuple[int, int, str]]:
    """(resource, value, prlimit option) for one run; soft and hard limits are the same."""
    # The CPU limit backs up the wall-clock kill; a second of slack lets the wall clock win normally.
    out = [
        (resource.RLIMIT_CPU, math.ceil(limits.timeout_s) + 1, "--cpu"),
        (resource.RLIMIT_AS, limits.memory_mb * 1024 * 1024, "--as"),
        (resource.RLIMIT_FSIZE, settings.max_file_bytes, "--fsize"),
        (resource.RLIMIT_NOFILE, settings.max_open_files, "--nofile"),
        (resource.RLIMIT_CORE, 0, "--core"),
    ]
    if uid is not None:
        # Counted per host uid: meaningful only when each run has its own uid (the service is root).
        out.append((resource.RLIMIT_NPROC, settings.max_processes, "--nproc"))
    return out


def _exec_chain(
    tools: tuple[str, str, str], rlimits: list[tuple[int, int, str]], uid: int | None
) -> list[str]:
    """`choom -n 1000 -- prlimit --cpu=N ... -- setpriv --reuid=U ... --`: what `_make_preexec` does,
    as execs. OOM priority first (the uid drop makes /proc/self unwritable), the uid drop last."""
    choom, prlimit, setpriv = tools
    argv = [choom, "-n", "1000", "--", prlimit, *(f"{opt}={value}" for _, value, opt in rlimits), "--"]
    if uid is not None:
        argv += [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    return argv


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _seccomp_installer(program: bytes) -> Callable[[], None]:
    """prctl(PR_SET_NO_NEW_PRIVS) + prctl(PR_SET_SECCOMP, FILTER), with everything built up front
    so the child after fork only makes two calls."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2

    def install() -> None:
        keep = buf  # the filter must stay alive until prctl copies it
        if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")
        if libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.byref(prog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"PR_SET_SECCOMP failed ({len(keep)} byte filter)")

    return install


def _probe(iso: Isolation, settings: Settings, uid: int | None) -> str | None:
    """Run `pass` under bubblewrap exactly as a real run would; None if it works, else the reason."""
    if not os.path.exists(iso.bwrap) and shutil.which(iso.bwrap) is None:
        return f"{settings.bwrap_path!r} not found (install bubblewrap)"
    if platform.system() != "Linux":
        return f"namespaces need Linux, not {platform.system()}"
    launch = _prepare_namespaces(iso, settings, "pass", ToolLimits(), uid)
    try:
        raw = run_capped(launch, timeout_s=10.0, output_bytes=4096)
    except OSError as e:
        return f"cannot start {iso.bwrap}: {e}"
    finally:
        launch.release()
    if raw.exit_code != 0 or raw.timed_out:
        err = raw.stderr.decode(errors="replace").strip() or f"exit status {raw.exit_code}"
        return f"bubblewrap probe failed: {err}"
    return None
