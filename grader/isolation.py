"""Which sandbox grades the submissions here: probe ``bwrap`` and ``unshare`` once per process,
pick the best that works, and refuse to grade without one. Trusted code.

There is no silent fallback: ``auto`` picks one of the :data:`ISOLATIONS` or raises
:class:`SandboxUnavailable` with the reason. ``none`` (a plain subprocess with the grader's
permissions) is chosen only when the instructor asks for it by name *and* passes
``--unsafe-no-sandbox``; every feedback file then carries :data:`WARNING`. Serves the README's
"Exercises and grading (instructors)" section (*Without a working sandbox* ``make grade`` stops and
says what is missing) and the table in docs/grading.md section 1. Introduced for the graded
exercises of the lessons.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from grader import host, launch

ISOLATIONS = ("bwrap", "unshare")  # the sandboxes; "none" is not one of them
UNSAFE = "none"
PROBE_UID = 65534  # nobody: the probe's /bin/true runs as it
WARNING = (
    "WARNING: graded WITHOUT a sandbox (--unsafe-no-sandbox): the submission ran with the "
    "grader's permissions and could have read or changed any file the grader can, including "
    "other students' grades. Do not trust these grades; install bubblewrap and grade again."
)


WHAT_TO_DO = ("Install bubblewrap, grade as root, or allow user namespaces to regular users; "
              "--unsafe-no-sandbox grades without a sandbox, with your permissions (not safe).")


class SandboxUnavailable(RuntimeError):
    """The requested isolation cannot run on this machine (the message says why)."""


_probe_cache: dict[str, str | None] = {}  # isolation -> None if it works, else why not


def why_unavailable(isolation: str) -> str | None:
    """None if ``isolation`` works here, else the reason (tried once per process)."""
    if isolation == UNSAFE:
        return None
    if isolation not in ISOLATIONS:
        return f"unknown isolation {isolation!r}"
    if isolation not in _probe_cache:
        _probe_cache[isolation] = _probe(isolation)
    return _probe_cache[isolation]


def _probe(isolation: str) -> str | None:
    needed = ["bwrap"] if isolation == "bwrap" else ["unshare", "mount", "chroot"]
    if host.is_root():
        needed.append("setpriv")
    elif isolation == "unshare":
        return "the unshare sandbox needs root (run the grader as root, or install bubblewrap)"
    missing = [t for t in needed if shutil.which(host.tool(t)) is None]
    if missing:
        package = {"bwrap": "bubblewrap", "setpriv": "util-linux (setpriv)"}
        return "not found: " + ", ".join(f"{t} (install {package.get(t, 'util-linux')})"
                                         for t in missing)
    make = launch.bwrap_command if isolation == "bwrap" else launch.unshare_command
    cmd = make(["/bin/true"], uid=PROBE_UID, tmpfs_mb=8, paths=launch.read_only_paths())
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        return f"{Path(cmd[0]).name} could not start: {err}"
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = (f"{Path(cmd[0]).name} failed on this machine (exit {done.returncode}): "
                  + (said[-1][:200] if said else "no message"))
        restriction = None if host.is_root() else host.userns_restriction()
        if restriction:  # what a regular user's bubblewrap needs, and the kernel setting against it
            reason += ("; as a regular user bubblewrap needs user namespaces, which this kernel "
                       f"forbids: {restriction}")
        return reason
    return None


def available(isolation: str) -> bool:
    """Whether ``isolation`` works here."""
    return why_unavailable(isolation) is None


def choose_isolation(requested: str | None = None, allow_unsafe: bool = False) -> str:
    """The sandbox to use: ``requested``, else $NBLIB_GRADING_ISOLATION, else the best one here.

    Never falls back to running without a sandbox: ``"none"`` is returned only when it was asked
    for by name *and* ``allow_unsafe`` is set (the instructor's ``--unsafe-no-sandbox``); otherwise
    :class:`SandboxUnavailable` says what is missing.
    """
    requested = requested or os.environ.get("NBLIB_GRADING_ISOLATION") or "auto"
    if requested == UNSAFE:
        if not allow_unsafe:
            raise SandboxUnavailable("running submissions without a sandbox needs the explicit "
                                     "instructor flag --unsafe-no-sandbox")
        return UNSAFE
    if requested == "auto":
        reasons = {i: why_unavailable(i) for i in ISOLATIONS}
        for isolation, reason in reasons.items():
            if reason is None:
                return isolation
        raise SandboxUnavailable("no sandbox works on this machine: " + "; ".join(
            f"{i}: {r}" for i, r in reasons.items()) + ". " + WHAT_TO_DO)
    if requested not in ISOLATIONS:
        raise ValueError(f"unknown isolation {requested!r}; choose from auto, {', '.join(ISOLATIONS)}")
    reason = why_unavailable(requested)
    if reason is not None:
        raise SandboxUnavailable(f"isolation {requested!r} does not work on this machine: {reason}")
    return requested


def unavailable_reasons() -> str:
    """Why each sandbox is unavailable here (for the --unsafe-no-sandbox banner)."""
    return "; ".join(f"{i}: {why_unavailable(i) or 'available'}" for i in ISOLATIONS)
