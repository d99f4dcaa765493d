"""The grader's watchdog over one sandbox's processes: their memory total where no cgroup holds
it, and their CPU seconds. Trusted code.

Serves the README's "Exercises and grading (instructors)" section (*Without cgroups, a watchdog in
the grader keeps the memory total and CPU seconds*) and docs/grading.md section 1 (*Limits for the
whole submission*). Introduced for the graded exercises of the lessons.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from grader.checks import Limits

WATCHDOG_PERIOD_S = 0.5


def _descendants(root_pid: int) -> list[int]:
    """``root_pid`` and every process below it (the sandbox's PID namespace keeps orphans there)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = entry.read_text()
            ppid = int(text[text.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.parent.name))
    found, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _memory_of(pid: int) -> int:
    """Proportional set size in bytes (shared pages split between sharers), else the RSS."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _cpu_seconds_of(pid: int) -> float:
    """User + system time of ``pid`` and of the children it has reaped."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        fields = text[text.rindex(")") + 2:].split()
        return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


class Watchdog(threading.Thread):
    """Polls the processes of one sandbox: their memory total (when no cgroup holds it) and
    their CPU seconds. Above the memory total it kills the largest process, as the kernel's OOM
    killer would; past the CPU budget it stops the whole sandbox."""

    def __init__(self, proc: subprocess.Popen, limits: Limits, memory: bool) -> None:
        super().__init__(daemon=True)
        self.proc, self.memory = proc, memory
        self.max_bytes = limits.total_memory_mb * 2**20
        self.cpu_budget = limits.cpu_s
        self.stop = threading.Event()
        self.kills = 0
        self.cpu_exceeded = False

    def run(self) -> None:
        while not self.stop.is_set() and self.proc.poll() is None:
            started = time.monotonic()
            pids = _descendants(self.proc.pid)
            if sum(_cpu_seconds_of(p) for p in pids) > self.cpu_budget:
                self.cpu_exceeded = True
                _kill_pids(pids)
                return
            if self.memory:
                sizes = {p: _memory_of(p) for p in pids[1:]}  # not the grader-side wrapper
                if sizes and sum(sizes.values()) > self.max_bytes:
                    largest = max(sizes, key=sizes.get)
                    with contextlib.suppress(OSError):
                        os.kill(largest, signal.SIGKILL)
                    self.kills += 1
                    continue
            spent = time.monotonic() - started
            self.stop.wait(max(WATCHDOG_PERIOD_S, 3 * spent))


def _kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
