"""A cgroup per sandbox, where the host lets the grader make one: the submission's memory total,
process count and CPU quota, enforced by the kernel. Trusted code.

cgroup v2 with a delegated subtree, else the cgroup v1 memory/pids/cpu hierarchies (root); where
neither works (or ``NBLIB_GRADING_CGROUP=off``), ``watchdog.Watchdog`` keeps the memory total.
Serves the README's "Exercises and grading (instructors)" section, *What it needs from the host*
(cgroups for each submission's memory total, process count and CPU quota), and docs/grading.md
section 1 (*Limits for the whole submission*). Introduced for the graded exercises of the lessons.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import signal
from pathlib import Path

from grader import host
from grader.checks import Limits

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _read(path: Path) -> str:
    return path.read_text().strip()


class Cgroup:
    """Memory total, process count and a CPU quota for one sandbox, if the host lets us.

    cgroup v2 where the grader's own cgroup can have children with the memory, pids and cpu
    controllers (a delegated subtree); else the cgroup v1 memory/pids/cpu hierarchies (root).
    ``Cgroup.make`` returns None when neither works; the watchdog then does the memory part.
    """

    def __init__(self, dirs: dict[str, Path], version: int) -> None:
        self.dirs, self.version = dirs, version

    @staticmethod
    def _own(controller: str | None) -> Path | None:
        try:
            lines = Path("/proc/self/cgroup").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            number, names, path = line.split(":", 2)
            if (controller is None and number == "0") or (controller and controller in names.split(",")):
                return Path(path)
        return None

    @classmethod
    def make(cls, name: str, limits: Limits) -> Cgroup | None:
        if os.environ.get("NBLIB_GRADING_CGROUP", "auto") == "off":
            return None
        for attempt in (cls._make_v2, cls._make_v1):
            try:
                group = attempt(name, limits)
            except OSError:
                group = None
            if group is not None:
                return group
        return None

    @classmethod
    def _make_v2(cls, name: str, limits: Limits) -> Cgroup | None:
        root = CGROUP_ROOT
        own = cls._own(None)
        if own is None or not (root / "cgroup.controllers").exists():
            return None
        parent = root / str(own).lstrip("/")
        if not {"memory", "pids", "cpu"} <= set(_read(parent / "cgroup.subtree_control").split()):
            try:
                (parent / "cgroup.subtree_control").write_text("+memory +pids +cpu")
            except OSError as err:
                if err.errno != errno.EBUSY:
                    raise  # not delegated to us: the watchdog takes over
                # A delegated cgroup (systemd-run --scope -p Delegate=yes) that holds the grader
                # itself: cgroup v2 wants processes only in leaves, so move the grader into one.
                own_leaf = parent / "nblib-grader"
                own_leaf.mkdir(exist_ok=True)
                (own_leaf / "cgroup.procs").write_text(str(os.getpid()))
                (parent / "cgroup.subtree_control").write_text("+memory +pids +cpu")
        leaf = parent / name
        leaf.mkdir()
        group = cls({"all": leaf}, 2)
        try:
            (leaf / "memory.max").write_text(str(limits.total_memory_mb * 2**20))
            with contextlib.suppress(OSError):
                (leaf / "memory.swap.max").write_text("0")
            (leaf / "pids.max").write_text(str(limits.nproc))
            (leaf / "cpu.max").write_text(f"{int(limits.cpus * 100000)} 100000")
        except OSError:
            group.remove()
            raise
        return group

    @classmethod
    def _make_v1(cls, name: str, limits: Limits) -> Cgroup | None:
        if not host.is_root():
            return None
        dirs: dict[str, Path] = {}
        for controller in ("memory", "pids", "cpu"):
            mount = CGROUP_ROOT / controller
            own = cls._own(controller)
            if own is None or not (mount / "cgroup.procs").exists():
                continue
            leaf = mount / str(own).lstrip("/") / name
            leaf.mkdir()
            dirs[controller] = leaf
        if "memory" not in dirs:
            cls(dirs, 1).remove()
            return None
        group = cls(dirs, 1)
        try:
            total = limits.total_memory_mb * 2**20
            (dirs["memory"] / "memory.limit_in_bytes").write_text(str(total))
            with contextlib.suppress(OSError):  # only where swap accounting is on
                (dirs["memory"] / "memory.memsw.limit_in_bytes").write_text(str(total))
            if "pids" in dirs:
                (dirs["pids"] / "pids.max").write_text(str(limits.nproc))
            if "cpu" in dirs:
                (dirs["cpu"] / "cpu.cfs_period_us").write_text("100000")
                (dirs["cpu"] / "cpu.cfs_quota_us").write_text(str(int(limits.cpus * 100000)))
        except OSError:
            group.remove()
            raise
        return group

    @property
    def has_memory(self) -> bool:
        return "all" in self.dirs or "memory" in self.dirs

    def enter_command(self) -> list[str]:
        """A prefix that moves the command into this cgroup before it execs."""
        procs = [d / "cgroup.procs" for d in self.dirs.values()]
        script = " && ".join(f"echo $$ > {shlex.quote(str(p))}" for p in procs) + ' && exec "$@"'
        return ["/bin/sh", "-c", script, "nblib-cgroup"]

    def pids(self) -> list[int]:
        found: set[int] = set()
        for d in self.dirs.values():
            with contextlib.suppress(OSError, ValueError):
                found.update(int(x) for x in _read(d / "cgroup.procs").split())
        return sorted(found)

    def oom_kills(self) -> int:
        d = self.dirs.get("all") or self.dirs.get("memory")
        for name in ("memory.events", "memory.oom_control"):
            with contextlib.suppress(OSError, ValueError):
                for line in _read(d / name).splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        return 0

    def kill_all(self) -> None:
        if "all" in self.dirs and (self.dirs["all"] / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (self.dirs["all"] / "cgroup.kill").write_text("1")
        for pid in self.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        for d in self.dirs.values():
            with contextlib.suppress(OSError):
                d.rmdir()
