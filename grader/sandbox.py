"""Where stage 1 runs: one throwaway sandbox per submission, with limits. Trusted code.

This module runs one request in one sandbox (:func:`run_in_sandbox`) and puts the pieces together:

- ``isolation``: which sandbox works here (``bwrap``, else ``unshare``; ``none`` only when the
  instructor asks with ``--unsafe-no-sandbox``); no silent fallback.
- ``launch``: the ``bwrap`` or ``unshare`` + ``chroot`` command line, what the sandbox sees
  read-only, its private tmpfs and its environment.
- ``uids``: as root, the sandbox's own unprivileged uid, from a pool locked across grader runs.
- ``cgroups`` and ``watchdog``: the submission as a whole is held to a memory total and a CPU
  quota, by a cgroup (v2, or v1 controllers) where the host lets the grader make one, otherwise by
  a watchdog that sums the memory of all the sandbox's processes and kills the largest.
- inside the sandbox, ``runner`` lowers its rlimits and priority and installs a seccomp filter
  that refuses new user namespaces (``confine``) before any student code runs.

The grader kills the whole sandbox at the wall-clock limit and, as root, waits until no process of
the sandbox's uid is left before that uid is used again (a uid that will not empty is retired). The
hidden checks, the submissions and the grades folder are never inside the sandbox
(:func:`check_not_exposed`): the request (notebook, parameters, hidden inputs) goes in on stdin and
the results come back on stdout. Serves the README's "Exercises and grading (instructors)" section
and docs/grading.md section 1 and "How it is built". Introduced for the graded exercises of the
lessons.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader import host
from grader.cgroups import Cgroup
from grader.checks import Limits
from grader.isolation import ISOLATIONS, UNSAFE, SandboxUnavailable
from grader.launch import (
    SANDBOX_DATA,
    SANDBOX_SCRATCH,
    bwrap_command,
    data_dir,
    read_only_paths,
    sandbox_env,
    unshare_command,
)
from grader.uids import UidBusy, reap_uid
from grader.watchdog import Watchdog

MAX_STDERR = 64 * 1024
START_ALLOWANCE_S = 10  # beyond wall_s: starting the sandbox and Python, before the runner's clock
CLEANUP_TIMEOUT_S = 30.0  # longest wait for a sandbox's processes to be gone; then its uid retires


@dataclass
class SandboxResult:
    """What came out of one sandbox: raw stdout (untrusted) and how the process ended."""

    stdout: bytes
    nonce: str
    isolation: str
    timed_out: bool
    returncode: int | None
    seconds: float
    log: str = ""
    truncated: bool = False
    leftovers: list[int] = field(default_factory=list)  # pids of the sandbox killed afterwards
    memory_kills: int = 0  # processes killed because the submission's memory total was exceeded
    cpu_exceeded: bool = False  # the submission used up its CPU-seconds budget and was stopped
    uid: int | None = None  # the sandbox's uid (root only)
    clean: bool = True  # every process of the sandbox was gone within CLEANUP_TIMEOUT_S
    limits: str = ""  # what held the whole submission: "cgroup v2", "cgroup v1" or "watchdog"


def check_not_exposed(paths: list[Path], secret: list[Path]) -> None:
    """Refuse to start if a secret folder (hidden checks, grades, submissions) would be visible."""
    for s in secret:
        s = Path(s).resolve()
        for p in paths:
            if s == p or p in s.parents:
                raise SandboxUnavailable(
                    f"{s} lies inside {p}, which the sandbox sees read-only; move it elsewhere"
                )


def run_in_sandbox(
    request: dict[str, Any],
    limits: Limits,
    isolation: str,
    uid: int | None = None,
    extra_read_only: list[Path] | None = None,
    secret_paths: list[Path] | None = None,
    data: Path | None | str = "default",
) -> SandboxResult:
    """Run the runner on ``request`` in a fresh sandbox; return its raw stdout and how it ended.

    ``request`` must not hold a nonce: a fresh one is made here. Blocks until the runner ends or
    ``limits.wall_s`` (plus a start-up allowance) has passed, then kills the whole sandbox and, as
    root, waits (at most ``CLEANUP_TIMEOUT_S``) until no process of ``uid`` is left
    (``SandboxResult.clean``). ``uid``: the sandbox's own unprivileged uid (root only; from a
    :class:`~grader.uids.UidPool`); :class:`UidBusy` if it runs processes already.
    ``data``: the data folder to show read-only (see :func:`~grader.launch.readable_data`);
    None for none.
    """
    data_path = data_dir() if data == "default" else data
    if not (data_path is None or isinstance(data_path, Path)):
        raise TypeError(f"data must be a Path or None, got {type(data_path).__name__}")
    as_uid = isolation in ISOLATIONS and host.is_root()
    if as_uid and uid is None:
        raise ValueError("a root sandbox needs a uid from a UidPool")
    nonce = secrets.token_hex(16)
    paths = read_only_paths(extra_read_only)
    check_not_exposed(paths + ([data_path] if data_path else []), secret_paths or [])
    nproc = limits.nproc
    if not as_uid:
        nproc += host.user_tasks(os.getuid())  # the limit counts all of this user's processes
    full_request = {
        **request,
        "nonce": nonce,
        "wall_s": limits.wall_s,
        "cell_s": limits.cell_s,
        "call_s": limits.call_s,
        "max_restarts": limits.max_restarts,
        "max_result_bytes": limits.max_result_mb * 2**20,
        "rlimits": {"as": limits.memory_mb * 2**20, "cpu": int(limits.wall_s) + 5, "nproc": nproc,
                    "fsize": limits.fsize_mb * 2**20, "core": 0},
    }
    inner = [sys.executable, "-I", "-m", "grader.inside.runner"]
    scratch_host: str | None = None
    if isolation == "bwrap":
        cmd = bwrap_command(inner, uid or 0, limits.tmpfs_mb, paths, data_path)
        env = sandbox_env(SANDBOX_SCRATCH, Path(SANDBOX_DATA) if data_path else None)
        cwd = "/"
    elif isolation == "unshare":
        cmd = unshare_command(inner, uid or 0, limits.tmpfs_mb, paths, data_path)
        env = sandbox_env(SANDBOX_SCRATCH, Path(SANDBOX_DATA) if data_path else None)
        cwd = "/"
    elif isolation == UNSAFE:
        scratch_host = tempfile.mkdtemp(prefix="nblib-grading-")
        cmd, env, cwd = inner, sandbox_env(scratch_host, data_path), scratch_host
    else:
        raise ValueError(f"unknown isolation {isolation!r}")
    if as_uid:
        leftovers = host.processes_of(uid)
        if leftovers:
            raise UidBusy(f"uid {uid} already runs processes {leftovers}")
    group = Cgroup.make(f"nblib-grading-{os.getpid()}-{nonce[:8]}", limits) if isolation in ISOLATIONS else None
    if group is not None:
        cmd = group.enter_command() + cmd

    payload = json.dumps(full_request, allow_nan=True).encode("utf-8")
    stdout_cap = limits.max_result_mb * 2**20 * max(1, len(request.get("calls", []))) + 2**24
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=cwd, start_new_session=True)
    watchdog = Watchdog(proc, limits, memory=group is None or not group.has_memory)
    watchdog.start()
    out_chunks: list[bytes] = []
    err_tail = bytearray()
    state = {"size": 0, "truncated": False}

    def feed() -> None:
        try:
            proc.stdin.write(payload)
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    def read_out() -> None:
        while chunk := proc.stdout.read1(1 << 16):
            if state["size"] + len(chunk) > stdout_cap:
                state["truncated"] = True  # keep draining so the runner never blocks on us
                continue
            state["size"] += len(chunk)
            out_chunks.append(chunk)

    def read_err() -> None:
        while chunk := proc.stderr.read1(1 << 16):
            err_tail.extend(chunk)
            del err_tail[:-MAX_STDERR]

    threads = [threading.Thread(target=f, daemon=True) for f in (feed, read_out, read_err)]
    for t in threads:
        t.start()
    timed_out = False
    try:
        proc.wait(timeout=limits.wall_s + START_ALLOWANCE_S)  # the runner stops itself at wall_s
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        watchdog.stop.set()
        _kill_group(proc)  # whatever is left of the sandbox's session (bwrap, its init)
    killed: list[int] = []
    clean = True
    if group is not None:
        group.kill_all()
    if as_uid:
        clean, killed = reap_uid(uid, CLEANUP_TIMEOUT_S)
    if group is not None:
        deadline = time.monotonic() + CLEANUP_TIMEOUT_S
        while group.pids() and time.monotonic() < deadline:
            group.kill_all()
            time.sleep(0.1)
        clean = clean and not group.pids()
    for t in threads:  # stdout closes once the last sandbox process holding it is gone
        t.join(timeout=2)
    watchdog.join(timeout=2)
    memory_kills = watchdog.kills + (group.oom_kills() if group is not None else 0)
    if group is not None:
        group.remove()
    if scratch_host is not None:
        shutil.rmtree(scratch_host, ignore_errors=True)
    limit_note = (f"cgroup v{group.version} ({', '.join(group.dirs)})" if group is not None
                  else "watchdog (no cgroup)")
    log = (f"isolation: {isolation}\ncommand: {shlex.join(cmd[:3])} ...\nuid: {uid}\n"
           f"whole-submission limits: {limit_note}\nreturncode: {proc.returncode}\n"
           f"timed out: {timed_out}\ncpu budget exceeded: {watchdog.cpu_exceeded}\n"
           f"memory kills: {memory_kills}\nleft-over processes killed: {len(killed)}\n"
           f"clean afterwards: {clean}\n"
           f"stderr (last {MAX_STDERR} bytes):\n" + err_tail.decode("utf-8", "replace"))
    return SandboxResult(b"".join(out_chunks), nonce, isolation,
                         timed_out or watchdog.cpu_exceeded, proc.returncode,
                         time.monotonic() - started, log, state["truncated"], killed,
                         memory_kills, watchdog.cpu_exceeded, uid, clean,
                         f"cgroup v{group.version}" if group is not None else "watchdog")


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
