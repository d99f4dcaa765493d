"""The sandboxes' own unprivileged uids (root only): a pool locked across grader runs, and the
wait until no process of a uid is left before it is used again. Trusted code.

Serves the README's "Exercises and grading (instructors)" section, *What it needs from the host*
(each sandbox runs as its own unprivileged uid from a locked pool, so two graders can share a
machine), and docs/grading.md section 1 (``NBLIB_GRADING_UID_BASE``, ``NBLIB_GRADING_UID_COUNT``,
the locks in ``/run/nblib-grading/``, retired uids). Introduced for the graded exercises of the
lessons.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import stat
import tempfile
import threading
import time
from pathlib import Path

from grader import host
from grader.isolation import SandboxUnavailable

UID_BASE = int(os.environ.get("NBLIB_GRADING_UID_BASE", "61000"))
UID_COUNT = int(os.environ.get("NBLIB_GRADING_UID_COUNT", "500"))  # the pool: UID_BASE .. +COUNT-1
LOCK_DIR = Path(os.environ.get("NBLIB_GRADING_LOCK_DIR", "/run/nblib-grading"))


class UidBusy(RuntimeError):
    """The uid picked for a sandbox still runs processes: pick another one (never the student's fault)."""


def _passwd_uids() -> set[int]:
    uids = set()
    try:
        for line in Path("/etc/passwd").read_text(errors="replace").splitlines():
            parts = line.split(":")
            if len(parts) > 2 and parts[2].isdigit():
                uids.add(int(parts[2]))
    except OSError:
        pass
    return uids


def _lock_dir() -> Path:
    """A root-only folder for the uid locks (refused if anyone else could plant files there)."""
    for candidate in (LOCK_DIR, Path(tempfile.gettempdir()) / "nblib-grading-uids"):
        try:
            candidate.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = os.lstat(candidate)
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == 0 and not info.st_mode & 0o022:
            return candidate
    raise SandboxUnavailable(f"cannot make a root-only folder for the uid locks ({LOCK_DIR})")


class UidPool:
    """The unprivileged uids of the sandboxes of one grading run (root only).

    Each uid is taken under an exclusive ``flock`` on ``<LOCK_DIR>/uid-<n>.lock`` held for as long
    as this run may use it, so two graders on one machine (or a grader and the test suite) never
    share a uid, and a uid that still runs any process (a crashed run's leftovers, a real user) is
    skipped. After a sandbox ends, its uid goes back to the pool only once no process of it is left;
    one that will not empty is retired (kept locked, never used again by this run).
    """

    def __init__(self, base: int = UID_BASE, count: int = UID_COUNT) -> None:
        self.base, self.count = base, count
        self.held: dict[int, int] = {}  # uid -> lock fd
        self.free: list[int] = []
        self.retired: list[int] = []
        self.lock = threading.Lock()
        self.dir = _lock_dir()
        self.taken_by_others = _passwd_uids()

    def acquire(self) -> int:
        with self.lock:
            busy = host.uids_in_use()
            while self.free:
                uid = self.free.pop()
                if uid not in busy:
                    return uid
                self.retired.append(uid)
            for uid in range(self.base, self.base + self.count):
                if uid in self.held or uid in busy or uid in self.taken_by_others:
                    continue
                fd = os.open(self.dir / f"uid-{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)  # another grader holds it
                    continue
                if host.processes_of(uid):  # started between our scan and the lock
                    os.close(fd)
                    continue
                self.held[uid] = fd
                return uid
        raise SandboxUnavailable(f"no free uid among {self.base}..{self.base + self.count - 1} "
                                 "(set NBLIB_GRADING_UID_BASE / NBLIB_GRADING_UID_COUNT)")

    def release(self, uid: int, clean: bool) -> None:
        with self.lock:
            (self.free if clean else self.retired).append(uid)

    def close(self) -> None:
        with self.lock:
            for fd in self.held.values():
                os.close(fd)
            self.held.clear()
            self.free.clear()


def reap_uid(uid: int, timeout: float) -> tuple[bool, list[int]]:
    """Kill every process of the sandbox's uid until /proc shows none (at most ``timeout`` s).

    Returns (gone, the pids that had to be killed). Zombies count until reaped: the sandbox's
    PID namespace reaps them once its init is gone.
    """
    deadline = time.monotonic() + timeout
    killed: set[int] = set()
    while True:
        pids = host.processes_of(uid)
        if not pids:
            return True, sorted(killed)
        if time.monotonic() > deadline:
            return False, sorted(killed)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except OSError as err:
                if err.errno != errno.ESRCH:
                    raise
        time.sleep(0.05)
