"""Per-run caps for the run as a whole: a CPU quota, and memory and process caps over all its processes.

rlimits count per process: without more, a run that forks 30 busy children takes every core until
its timeout, and 30 children of `memory_mb` each hold 30 x `memory_mb`. A cgroup counts the run as
one. At start the executor makes one cgroup per run slot under its own cgroup, in whichever
hierarchy this host lets it write (`RunCgroups.create`):

- cgroup v2 (one tree with the cpu, memory and pids controllers): `cpu.max`, `memory.max` (and
  `memory.swap.max` 0), `pids.max`; afterwards `memory.events` (oom_kill), `pids.events` (max) and
  `cgroup.kill`. v2 lets only a cgroup without processes hand controllers to children, so when the
  executor's own cgroup holds processes it first moves itself into a leaf beside the run slots
  (what systemd's `Delegate=` expects of a service that manages its own cgroups).
- cgroup v1 (a hierarchy per controller, e.g. a VM or an older host): `cpu.cfs_quota_us`,
  `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`), `pids.max`; afterwards
  `memory.oom_control` (oom_kill) and `pids.events`.

A run joins its slot's cgroup before it starts anything: the first exec of its launch chain is a
`/bin/sh` that writes its own pid into each `cgroup.procs` and execs the rest (`exec_prefix`), or
the preexec function writes it (`in_child`), so every process the run ever starts is born inside.
The CPU quota is `cpu_quota_cores`; the memory cap is `memory_mb` plus the two tmpfs mounts (tmpfs
pages are charged to the run), so one process still meets its address-space rlimit first (a
`MemoryError`) while many children together meet the cap (the kernel kills one: outcome `memory`);
the process cap is `max_processes`, whatever uid the run has. After the run every process still in
the cgroup is killed: a third net, after the run uid and the process group.

Where no hierarchy is writable (an unprivileged container without delegation) or `cgroups=off`, the
fallback (`CorePinning`): each run is pinned to `ceil(cpu_quota_cores)` cores of its own (by slot)
at nice 10, and the seccomp filter refuses `sched_setaffinity`, so the snippet cannot widen the set;
memory stays capped per process (`memory_mb` each, `max_processes` of them per run uid), with
`oom_score_adj` 1000 so that the kernel kills a snippet, never the service.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import math
import os
import shutil
import signal
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

log = logging.getLogger(__name__)

CgroupVersion = Literal["v2", "v1"]
PERIOD_US = 100_000  # the kernel's default CFS period: the quota is enforced per 100 ms
PREFIX = "chatforge-sandbox-"
_V1_CONTROLLERS = ("cpu", "memory", "pids")
_V2_CONTROLLERS = ("cpu", "memory", "pids")
_KILL_WAIT_S = 2.0
_names = itertools.count()


@dataclass(frozen=True)
class RunCaps:
    cpu_cores: float
    memory_bytes: int
    max_processes: int


@dataclass(frozen=True)
class RunUsage:
    """What the run's caps did: processes killed at the memory cap, forks refused at the process cap."""

    oom_kills: int = 0
    forks_refused: int = 0


class Placement(Protocol):
    """Where one run executes and under which caps, for one run at a time."""

    def begin(self, caps: RunCaps) -> None: ...

    def exec_prefix(self) -> list[str]:
        """argv that joins the placement and execs the rest (the front of an exec chain)."""
        ...

    def in_child(self) -> None:
        """The same from a preexec function (between fork and exec, before the uid drop)."""
        ...

    def end(self) -> RunUsage:
        """After the run: kill whatever is left inside, report what the caps did."""
        ...


class SlotCgroup:
    """One run slot's cgroup: one directory (v2), or one per hierarchy (v1)."""

    def __init__(self, version: CgroupVersion, dirs: dict[str, Path]):
        self.version = version
        self.dirs = dirs  # controller -> directory ("" holds the v2 directory)
        self._procs = sorted({str(d / "cgroup.procs") for d in dirs.values()})
        self._before = RunUsage()

    @property
    def controllers(self) -> tuple[str, ...]:
        return tuple(c for c in ("cpu", "memory", "pids") if c in self.dirs or self.version == "v2")

    def begin(self, caps: RunCaps) -> None:
        quota = max(1000, round(caps.cpu_cores * PERIOD_US))
        if self.version == "v2":
            d = self.dirs[""]
            _write(d / "cpu.max", f"{quota} {PERIOD_US}")
            _write(d / "memory.max", str(caps.memory_bytes))
            _write_if_present(d / "memory.swap.max", "0")
            _write(d / "pids.max", str(caps.max_processes))
        else:
            if "cpu" in self.dirs:
                _write(self.dirs["cpu"] / "cpu.cfs_period_us", str(PERIOD_US))
                _write(self.dirs["cpu"] / "cpu.cfs_quota_us", str(quota))
            if "memory" in self.dirs:
                m = self.dirs["memory"]
                # memsw (memory + swap) must stay >= memory: lift it, set memory, then lower it.
                _write_if_present(m / "memory.memsw.limit_in_bytes", "-1")
                _write(m / "memory.limit_in_bytes", str(caps.memory_bytes))
                _write_if_present(m / "memory.memsw.limit_in_bytes", str(caps.memory_bytes))
            if "pids" in self.dirs:
                _write(self.dirs["pids"] / "pids.max", str(caps.max_processes))
        self._before = self._counters()

    def exec_prefix(self) -> list[str]:
        joins = " && ".join(f'echo $$ > "${i}"' for i in range(1, len(self._procs) + 1))
        return ["/bin/sh", "-c", f'{joins} && shift {len(self._procs)} && exec "$@"', "sh", *self._procs]

    def in_child(self) -> None:
        pid = str(os.getpid()).encode()
        for path in self._procs:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    def end(self) -> RunUsage:
        self.kill_all()
        after = self._counters()
        return RunUsage(
            oom_kills=after.oom_kills - self._before.oom_kills,
            forks_refused=after.forks_refused - self._before.forks_refused,
        )

    def kill_all(self, wait_s: float = _KILL_WAIT_S) -> bool:
        """SIGKILL every process in the cgroup until none is left; False if some survive `wait_s`."""
        kill = self.dirs[""] / "cgroup.kill" if "" in self.dirs else None
        deadline = time.monotonic() + wait_s
        while pids := self.pids():
            if time.monotonic() > deadline:
                log.warning("run cgroup %s still holds %s after SIGKILL", self._procs[0], pids)
                return False
            if kill and kill.exists():  # v2, Linux 5.14+: one write kills the whole cgroup, forks included
                _write(kill, "1")
            else:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
            time.sleep(0.002)
        return True

    def pids(self) -> list[int]:
        out: set[int] = set()
        for path in self._procs:
            with contextlib.suppress(FileNotFoundError):
                out.update(int(line) for line in Path(path).read_text().split())
        return sorted(out)

    def remove(self) -> None:
        self.kill_all()
        for d in set(self.dirs.values()):
            _rmdir(d)

    def _counters(self) -> RunUsage:
        memory = self.dirs.get("memory", self.dirs.get(""))
        pids = self.dirs.get("pids", self.dirs.get(""))
        events = "memory.events" if self.version == "v2" else "memory.oom_control"
        return RunUsage(
            oom_kills=_field(memory / events, "oom_kill") if memory else 0,
            forks_refused=_field(pids / "pids.events", "max") if pids else 0,
        )


class CorePinning:
    """The fallback without cgroups: the slot's own cores at nice 10 (see the module doc)."""

    def __init__(self, cores: set[int]):
        self.cores = cores
        self._taskset, self._nice = shutil.which("taskset"), shutil.which("nice")

    def begin(self, caps: RunCaps) -> None:
        return None

    def exec_prefix(self) -> list[str]:
        if not (self._taskset and self._nice):
            raise RuntimeError("CPU pinning needs taskset (util-linux) and nice (coreutils) on PATH")
        cores = ",".join(str(c) for c in sorted(self.cores))
        return [self._taskset, "--cpu-list", cores, self._nice, "-n", "10"]

    def in_child(self) -> None:
        os.sched_setaffinity(0, self.cores)
        os.nice(10)

    def end(self) -> RunUsage:
        return RunUsage()


class RunCgroups:
    """The placements of an executor's slots: cgroups where this host allows, else core pinning."""

    def __init__(
        self,
        placements: list[Placement],
        version: CgroupVersion | None,
        bases: list[Path],
        reason: str = "",
        leaf: Path | None = None,
    ):
        self.placements = placements
        self.version = version
        self.reason = reason  # why there are no cgroups
        # Removed by close(), or when the executor is dropped or the interpreter exits without it.
        # v2: the leaf this process moved itself into stays while it lives (its parent now hands
        # controllers to children, so it may hold no process); the next executor removes it.
        self.leaf = leaf
        self._remove = weakref.finalize(self, _remove_all, list(placements), bases)

    @classmethod
    def create(cls, slots: int, cpu_cores: float, *, enabled: bool = True) -> RunCgroups:
        reason = "cgroups=off"
        if enabled:
            try:
                found = _create_v2(slots) or _create_v1(slots)
                if found is not None:
                    return found
                reason = "no writable cgroup hierarchy with a cpu controller"
            except OSError as e:
                reason = f"cannot set up run cgroups: {e}"
        log.warning("sandbox runs without cgroups (%s): each run pinned to its own cores at nice 10", reason)
        return cls(_pinnings(slots, cpu_cores), None, [], reason)

    @property
    def layers(self) -> tuple[str, ...]:
        if self.version is None:
            return ("cpu-pinning",)
        first = self.placements[0]
        assert isinstance(first, SlotCgroup)
        return tuple(f"cgroup-{self.version}-{c}" for c in first.controllers)

    def placement(self, slot: int) -> Placement:
        return self.placements[slot]

    def close(self) -> None:
        """Remove the slots' cgroups (runs must have finished)."""
        self._remove()
        self.placements = []


# --- helpers -------------------------------------------------------------------------------------
def _remove_all(placements: list[Placement], bases: list[Path]) -> None:
    for p in placements:
        if isinstance(p, SlotCgroup):
            p.remove()
    for base in bases:
        _rmdir(base)


def _pinnings(slots: int, cpu_cores: float) -> list[Placement]:
    cpus = sorted(os.sched_getaffinity(0))
    width = min(len(cpus), max(1, math.ceil(cpu_cores)))
    return [
        CorePinning({cpus[(slot * width + i) % len(cpus)] for i in range(width)}) for slot in range(slots)
    ]


def _create_v2(slots: int) -> RunCgroups | None:
    mount = _mount_of("cgroup2")
    own = _own_paths().get("")
    if mount is None or own is None:
        return None
    home = _join(mount, own)
    available = set((home / "cgroup.controllers").read_text().split())
    if not set(_V2_CONTROLLERS) <= available:
        return None
    _reap_stale([home])
    leaf = None
    want = " ".join(f"+{c}" for c in _V2_CONTROLLERS)
    try:
        _write(home / "cgroup.subtree_control", want)
    except OSError as e:
        if e.errno != errno.EBUSY:  # EBUSY: processes live here; anything else is "not allowed"
            return None
        leaf = home / f"{PREFIX}service-{os.getpid()}"
        leaf.mkdir(exist_ok=True)
        _write(leaf / "cgroup.procs", str(os.getpid()))
        try:
            _write(home / "cgroup.subtree_control", want)
        except OSError:  # other processes share the cgroup: give up and move back
            _write(home / "cgroup.procs", str(os.getpid()))
            leaf.rmdir()
            return None
    base = home / f"{PREFIX}{os.getpid()}-{next(_names)}"
    base.mkdir()
    _write(base / "cgroup.subtree_control", want)
    placements: list[Placement] = []
    for slot in range(slots):
        d = base / f"slot-{slot}"
        d.mkdir()
        placements.append(SlotCgroup("v2", {"": d}))
    return RunCgroups(placements, "v2", [base], leaf=leaf)


def _create_v1(slots: int) -> RunCgroups | None:
    own = _own_paths()
    homes: dict[str, Path] = {}
    for controller in _V1_CONTROLLERS:
        mount = _mount_of("cgroup", controller)
        if mount is not None and controller in own:
            homes[controller] = _join(mount, own[controller])
    if "cpu" not in homes:
        return None
    _reap_stale(list(homes.values()))
    name = f"{PREFIX}{os.getpid()}-{next(_names)}"
    bases: dict[Path, Path] = {}  # one base per hierarchy (controllers may share one)
    for controller, home in list(homes.items()):
        try:
            if home not in bases:
                (home / name).mkdir()
                bases[home] = home / name
        except OSError as e:
            if controller == "cpu":
                for b in bases.values():
                    b.rmdir()
                log.info("cgroup v1 cpu hierarchy not writable here: %s", e)
                return None
            del homes[controller]  # memory or pids not delegated: the run goes without that cap
    placements: list[Placement] = []
    for slot in range(slots):
        dirs = {c: bases[h] / f"slot-{slot}" for c, h in homes.items()}
        for d in set(dirs.values()):
            d.mkdir()
        placements.append(SlotCgroup("v1", dirs))
    return RunCgroups(placements, "v1", list(bases.values()))


def _reap_stale(homes: list[Path]) -> None:
    """Slot cgroups left by an executor whose process died (SIGKILL): kill what runs there, remove them."""
    for home in homes:
        for base in home.glob(f"{PREFIX}*"):
            owner = base.name[len(PREFIX) :].removeprefix("service-").split("-")[0]
            if not owner.isdigit() or _alive(int(owner)):
                continue
            for slot in [*base.glob("slot-*"), base]:
                SlotCgroup("v1", {"": slot}).kill_all()
                with contextlib.suppress(OSError):
                    slot.rmdir()
            log.warning("removed run cgroups %s left by a dead sandbox (pid %s)", base, owner)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _own_paths() -> dict[str, str]:
    """This process's cgroup per v1 controller, and "" for the v2 tree (/proc/self/cgroup)."""
    out: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            out[c] = path
    return out


def _mount_of(fstype: str, controller: str = "") -> tuple[Path, str] | None:
    """(mount point, root inside the hierarchy) of a writable cgroup mount, from /proc/self/mountinfo."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 6 or len(tail) < 3 or tail[0] != fstype or "ro" in fields[5].split(","):
            continue
        if controller and controller not in tail[2].split(","):
            continue
        return Path(fields[4].replace("\\040", " ")), fields[3]
    return None


def _join(mount: tuple[Path, str], path: str) -> Path:
    """The directory of cgroup `path` under a mount whose root is itself a cgroup (a container's)."""
    point, root = mount
    if root != "/" and (path == root or path.startswith(root + "/")):
        path = path[len(root) :]
    return point / path.lstrip("/")


def _rmdir(path: Path, wait_s: float = _KILL_WAIT_S) -> None:
    """Remove a cgroup directory; EBUSY lasts while its last processes finish exiting."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                log.warning("cannot remove run cgroup %s: %s", path, e)
                return
            time.sleep(0.01)


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _write_if_present(path: Path, value: str) -> None:
    if path.exists():
        _write(path, value)


def _field(path: Path, name: str) -> int:
    """The number after `name` in a flat-keyed cgroup file ("oom_kill 3"); 0 when absent."""
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
    return 0
