"""What the grader reads about the machine it runs on: whether it is root, where a system tool
lives, whether the kernel lets a regular user make user namespaces, and which processes a uid owns
(from ``/proc``). Trusted code.

Shared by the sandbox's pieces (``launch``, ``isolation``, ``uids``, ``sandbox``). It serves the
README's "Exercises and grading (instructors)" section, *What it needs from the host* (root, so that
each sandbox runs as its own uid), and docs/grading.md section 1. Introduced for the graded
exercises of the lessons.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def is_root() -> bool:
    """Whether the grader runs as root (then each sandbox runs as its own uid)."""
    return os.geteuid() == 0


def tool(name: str) -> str:
    """Absolute path of a system tool (sbin included: the sandbox's PATH has no sbin)."""
    found = shutil.which(name, path=os.pathsep.join(
        [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]))
    return found or name


# The kernel settings that forbid user namespaces to a regular user: (file, value that forbids, name).
USERNS_SETTINGS = (
    ("/proc/sys/kernel/unprivileged_userns_clone", "0", "kernel.unprivileged_userns_clone = 0"),
    ("/proc/sys/user/max_user_namespaces", "0", "user.max_user_namespaces = 0"),
    ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1",
     "kernel.apparmor_restrict_unprivileged_userns = 1 (AppArmor allows them only to programs "
     "with a profile that permits them)"),
)


def userns_restriction() -> str | None:
    """Why this kernel keeps regular users from creating user namespaces (the settings that say
    so, as ``sysctl`` names them), or None when none of them does."""
    found = []
    for path, forbids, name in USERNS_SETTINGS:
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue  # this kernel has no such setting
        if value == forbids:
            found.append(name)
    return "; ".join(found) or None


def user_tasks(uid: int) -> int:
    """Processes + threads owned by ``uid`` now (RLIMIT_NPROC counts those)."""
    count = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if int(fields.get("Uid", "-1 ").split()[0]) == uid:
            count += int(fields.get("Threads", "1").strip())
    return count


def uids_in_use() -> dict[int, list[int]]:
    """Real uid -> its PIDs, for every process now (one pass over /proc)."""
    found: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.startswith("Uid:"):
                    found.setdefault(int(line.split()[1]), []).append(int(status.parent.name))
                    break
        except (OSError, ValueError):
            continue
    return found


def processes_of(uid: int) -> list[int]:
    """PIDs whose real uid is ``uid`` (zombies included: they still hold the uid)."""
    return uids_in_use().get(uid, [])
