"""Where stage 1 runs: one throwaway sandbox per submission, with limits. Trusted code.

Three isolation levels, best first (``NBLIB_GRADING_ISOLATION`` or ``--isolation`` forces one):

``bwrap``    bubblewrap: new PID, network, IPC, UTS and mount namespaces; a root filesystem built
             from read-only binds of only what the kernel needs (/usr, /etc, the Python install, the
             venv, the ``nblib`` package, the data folder); a private size-limited tmpfs as /tmp;
             no network. As root, the sandbox then drops to its own unprivileged uid (one per
             parallel slot) with ``setpriv``: no capabilities, no new privileges.
``unshare``  the same layout made by hand (util-linux ``unshare``, ``mount``, ``chroot``,
             ``setpriv``), for root on machines without bubblewrap.
``none``     a plain subprocess in a temporary folder, with a LOUD warning: the submission runs
             with your permissions and a detached process can outlive it.

In every level the runner lowers its rlimits (memory, CPU time, processes, file size, no core
files) before any student code runs, and the grader kills the whole sandbox at the wall-clock
limit; in the namespaced levels everything dies with the sandbox's PID 1. The hidden checks, the
submissions and the grades folder are never inside the sandbox: the request (notebook, parameters,
hidden inputs) goes in on stdin and the results come back on stdout.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nblib
from nblib.grading.checks import Limits

ISOLATIONS = ("bwrap", "unshare", "none")
SANDBOX_SCRATCH = "/tmp/grading"  # inside the namespaced sandboxes (a private tmpfs)
SANDBOX_DATA = "/nblib-data"  # where the namespaced sandboxes see the data folder (read-only)
UID_BASE = int(os.environ.get("NBLIB_GRADING_UID_BASE", "61000"))
MAX_STDERR = 64 * 1024
START_ALLOWANCE_S = 10  # beyond wall_s: starting the sandbox and Python, before the runner's clock
WARNING = (
    "WARNING: graded WITHOUT a sandbox (no bubblewrap, not root): the submission ran with the "
    "grader's permissions and could have read or changed files. Install bubblewrap "
    "(apt-get install bubblewrap) and grade again."
)


class SandboxUnavailable(RuntimeError):
    """The requested isolation cannot run on this machine."""


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
    leftovers: list[int] = field(default_factory=list)  # pids of the sandbox uid killed afterwards


# ---------------------------------------------------------------- what the sandbox may see
def data_dir() -> Path | None:
    """The corpora folder the lessons read, if present (bound read-only)."""
    configured = os.environ.get("NBLIB_DATA_DIR")
    path = Path(configured) if configured else Path(nblib.__file__).resolve().parents[1] / "data" / "raw"
    return path.resolve() if path.is_dir() else None


@contextlib.contextmanager
def readable_data(isolation: str) -> Iterator[Path | None]:
    """The data folder as the sandbox's user can read it, for one grading run.

    Downloads are often private (0600); a sandbox running as its own uid could not read them, so
    it then gets a world-readable copy (a few MB), removed afterwards.
    """
    source = data_dir()
    private = source is not None and any(
        not p.stat().st_mode & (0o005 if p.is_dir() else 0o004) for p in [source, *source.rglob("*")])
    if not (private and isolation in ("bwrap", "unshare") and _is_root()):
        yield source
        return
    tmp = Path(tempfile.mkdtemp(prefix="nblib-grading-data-"))
    try:
        copy = tmp / "raw"
        shutil.copytree(source, copy, symlinks=False)
        for p in [tmp, copy, *copy.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        yield copy
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_only_paths(extra: list[Path] | None = None) -> list[Path]:
    """Host folders bound read-only at the same place in the sandbox (parents win)."""
    candidates = [Path("/usr"), Path("/etc"), Path(sys.prefix), Path(sys.base_prefix),
                  Path(sys.exec_prefix), Path(sys.base_exec_prefix),
                  Path(nblib.__file__).resolve().parent]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if Path(top).is_dir() and not Path(top).is_symlink():
            candidates.append(Path(top))
    candidates += [Path(p) for p in (extra or [])]
    resolved = sorted({p.resolve() for p in candidates if p.exists()}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in resolved:
        if not any(path == k or k in path.parents for k in kept):
            kept.append(path)
    return kept


def root_symlinks() -> dict[str, str]:
    """Merged-/usr links such as /bin -> usr/bin, recreated inside the sandbox."""
    links = {}
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if Path(top).is_symlink():
            links[top] = os.readlink(top)
    return links


def check_not_exposed(paths: list[Path], secret: list[Path]) -> None:
    """Refuse to start if a secret folder (hidden checks, grades, submissions) would be visible."""
    for s in secret:
        s = Path(s).resolve()
        for p in paths:
            if s == p or p in s.parents:
                raise SandboxUnavailable(
                    f"{s} lies inside {p}, which the sandbox sees read-only; move it elsewhere"
                )


# ---------------------------------------------------------------- choosing the isolation
_probe_cache: dict[str, bool] = {}


def _is_root() -> bool:
    return os.geteuid() == 0


def available(isolation: str) -> bool:
    """Whether ``isolation`` works here (tried once per process with a trivial command)."""
    if isolation == "none":
        return True
    if isolation not in _probe_cache:
        ok = False
        try:
            if isolation == "bwrap" and shutil.which(_tool("bwrap")) and (
                    shutil.which(_tool("setpriv")) or not _is_root()):
                cmd = _bwrap_command(["/bin/true"], uid=UID_BASE, tmpfs_mb=8, paths=read_only_paths())
                ok = subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
            elif (isolation == "unshare" and _is_root()
                  and all(shutil.which(_tool(t)) for t in ("unshare", "mount", "chroot", "setpriv"))):
                cmd = _unshare_command(["/bin/true"], uid=UID_BASE, tmpfs_mb=8, paths=read_only_paths())
                ok = subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        _probe_cache[isolation] = ok
    return _probe_cache[isolation]


def choose_isolation(requested: str | None = None) -> str:
    """The isolation to use: ``requested``, else $NBLIB_GRADING_ISOLATION, else the best one here."""
    requested = requested or os.environ.get("NBLIB_GRADING_ISOLATION") or "auto"
    if requested == "auto":
        return next(i for i in ISOLATIONS if available(i))
    if requested not in ISOLATIONS:
        raise ValueError(f"unknown isolation {requested!r}; choose from auto, {', '.join(ISOLATIONS)}")
    if not available(requested):
        hint = "install bubblewrap" if requested == "bwrap" else "run as root with util-linux"
        raise SandboxUnavailable(f"isolation {requested!r} does not work on this machine ({hint})")
    return requested


# ---------------------------------------------------------------- the commands
def _ancestors(paths: list[Path]) -> list[str]:
    seen: list[str] = []
    for p in paths:
        for parent in reversed(p.parents):
            s = str(parent)
            if s != "/" and s not in seen:
                seen.append(s)
    return seen


def _tool(name: str) -> str:
    """Absolute path of a system tool (sbin included: the sandbox's PATH has no sbin)."""
    found = shutil.which(name, path=os.pathsep.join(
        [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]))
    return found or name


def _drop_privileges(uid: int) -> list[str]:
    return [_tool("setpriv"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs", "--"]


def _bwrap_command(inner: list[str], uid: int, tmpfs_mb: int, paths: list[Path],
                   data: Path | None = None) -> list[str]:
    cmd = [_tool("bwrap"), "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net",
           "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not _is_root():
        cmd += ["--unshare-user", "--uid", "65534", "--gid", "65534"]
    # Every writable place is a size-limited tmpfs (tmpfs memory escapes RLIMIT_AS).
    cmd += ["--proc", "/proc", "--dev", "/dev", "--ro-bind-try", "/sys", "/sys",
            "--perms", "1777", "--size", str(tmpfs_mb * 2**20), "--tmpfs", "/tmp",
            "--perms", "1777", "--size", str(64 * 2**20), "--tmpfs", "/dev/shm"]
    for link, target in root_symlinks().items():
        cmd += ["--symlink", target, link]
    for parent in _ancestors(paths):
        if not any(str(p) == parent for p in paths):
            cmd += ["--perms", "0755", "--dir", parent]
    for p in paths:
        cmd += ["--ro-bind", str(p), str(p)]
    if data is not None:
        cmd += ["--ro-bind", str(data), SANDBOX_DATA]
    cmd += ["--chdir", "/tmp", "--"]
    if _is_root():
        cmd += _drop_privileges(uid)
    return cmd + inner


def _unshare_command(inner: list[str], uid: int, tmpfs_mb: int, paths: list[Path],
                     data: Path | None = None) -> list[str]:
    """The bwrap layout by hand: a tmpfs root of read-only binds, chroot, then drop to ``uid``."""
    q = shlex.quote
    # The new root is built on a tmpfs over /dev/shm, which only this mount namespace sees.
    lines = ["set -eu", "mount -t tmpfs -o mode=0755 nblib-grading /dev/shm", "R=/dev/shm/root",
             'mkdir -p "$R"', 'mount -t tmpfs -o mode=0755 nblib-root "$R"']
    for link, target in root_symlinks().items():
        lines.append(f'ln -s {q(target)} "$R"{q(link)}')
    # The scratch /tmp first: a checkout that lives under /tmp is bound on top of it, not hidden by it.
    lines += ['mkdir -p "$R/tmp"', f'mount -t tmpfs -o mode=1777,size={tmpfs_mb}m nblib-tmp "$R/tmp"']
    binds = [(p, p) for p in paths] + ([(data, Path(SANDBOX_DATA))] if data is not None else [])
    for src, dst in binds:
        lines += [f'mkdir -p "$R"{q(str(dst))}', f'mount --bind {q(str(src))} "$R"{q(str(dst))}',
                  f'mount -o remount,bind,ro "$R"{q(str(dst))}']
    lines += [
        'mkdir -p "$R/proc" "$R/dev" "$R/sys"',
        'mount -t proc -o nosuid,nodev,noexec proc "$R/proc"',
        'mount --bind /sys "$R/sys" && mount -o remount,bind,ro "$R/sys" || true',
        'mount -t tmpfs -o mode=0755 nblib-dev "$R/dev"',
        'for n in null zero full random urandom tty; do touch "$R/dev/$n"; '
        'mount --bind "/dev/$n" "$R/dev/$n"; done',
        'ln -s /proc/self/fd "$R/dev/fd"; ln -s /proc/self/fd/0 "$R/dev/stdin"',
        'ln -s /proc/self/fd/1 "$R/dev/stdout"; ln -s /proc/self/fd/2 "$R/dev/stderr"',
        'mkdir "$R/dev/shm" && mount -t tmpfs -o mode=1777,size=64m nblib-shm "$R/dev/shm"',
        # Not exec: this shell stays PID 1, so everything dies with it when the runner ends.
        f'cd "$R/tmp" && {_tool("chroot")} "$R" ' + " ".join(q(a) for a in _drop_privileges(uid) + inner),
    ]
    return [_tool("unshare"), "--pid", "--fork", "--kill-child", "--net", "--ipc", "--uts", "--mount",
            "--propagation", "private", "--", "/bin/sh", "-c", "\n".join(lines)]


def sandbox_env(scratch: str, data: Path | None) -> dict[str, str]:
    """The whole environment of the sandbox: nothing of the grader's own leaks in."""
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": f"{scratch}/home",
        "TMPDIR": f"{scratch}/tmp",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "NBLIB_PRESET": "smoke",
        "NBLIB_RUNS_DIR": f"{scratch}/runs",
        "NBLIB_GRADING_SCRATCH": scratch,
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": f"{scratch}/mpl",
        "IPYTHONDIR": f"{scratch}/ipython",
        "JUPYTER_CONFIG_DIR": f"{scratch}/jupyter/config",
        "JUPYTER_DATA_DIR": f"{scratch}/jupyter/data",
        "JUPYTER_RUNTIME_DIR": f"{scratch}/jupyter/runtime",
        "JUPYTER_PLATFORM_DIRS": "1",
        "TORCH_HOME": f"{scratch}/torch",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    if data is not None:
        env["NBLIB_DATA_DIR"] = str(data)
    return env


def _user_tasks(uid: int) -> int:
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


def processes_of(uid: int) -> list[int]:
    """PIDs whose real uid is ``uid`` (the sandbox uids are used by nothing else)."""
    pids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.startswith("Uid:"):
                    if int(line.split()[1]) == uid:
                        pids.append(int(status.parent.name))
                    break
        except (OSError, ValueError):
            continue
    return pids


# ---------------------------------------------------------------- one run
def run_in_sandbox(
    request: dict[str, Any],
    limits: Limits,
    isolation: str,
    slot: int = 0,
    extra_read_only: list[Path] | None = None,
    secret_paths: list[Path] | None = None,
    data: Path | None | str = "default",
) -> SandboxResult:
    """Run the runner on ``request`` in a fresh sandbox; return its raw stdout and how it ended.

    ``request`` must not hold a nonce: a fresh one is made here. Blocks until the runner ends or
    ``limits.wall_s`` (plus a start-up allowance) has passed, then kills the whole sandbox.
    ``data``: the data folder to show read-only (see :func:`readable_data`); None for none.
    """
    data_path = data_dir() if data == "default" else data
    if not (data_path is None or isinstance(data_path, Path)):
        raise TypeError(f"data must be a Path or None, got {type(data_path).__name__}")
    nonce = secrets.token_hex(16)
    uid = UID_BASE + slot
    paths = read_only_paths(extra_read_only)
    check_not_exposed(paths + ([data_path] if data_path else []), secret_paths or [])
    nproc = limits.nproc
    if isolation == "none" or (isolation == "bwrap" and not _is_root()):
        nproc += _user_tasks(os.getuid())  # the limit counts all of this user's processes
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
    inner = [sys.executable, "-I", "-m", "nblib.grading.runner"]
    scratch_host: str | None = None
    if isolation == "bwrap":
        cmd = _bwrap_command(inner, uid, limits.tmpfs_mb, paths, data_path)
        env = sandbox_env(SANDBOX_SCRATCH, Path(SANDBOX_DATA) if data_path else None)
        cwd = "/"
    elif isolation == "unshare":
        cmd = _unshare_command(inner, uid, limits.tmpfs_mb, paths, data_path)
        env = sandbox_env(SANDBOX_SCRATCH, Path(SANDBOX_DATA) if data_path else None)
        cwd = "/"
    elif isolation == "none":
        scratch_host = tempfile.mkdtemp(prefix="nblib-grading-")
        cmd, env, cwd = inner, sandbox_env(scratch_host, data_path), scratch_host
    else:
        raise ValueError(f"unknown isolation {isolation!r}")
    if isolation in ("bwrap", "unshare") and _is_root():
        leftovers = processes_of(uid)
        if leftovers:
            raise SandboxUnavailable(f"uid {uid} already runs processes {leftovers}; "
                                     "set NBLIB_GRADING_UID_BASE to a free uid range")

    payload = json.dumps(full_request, allow_nan=True).encode("utf-8")
    stdout_cap = limits.max_result_mb * 2**20 * max(1, len(request.get("calls", []))) + 2**24
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=cwd, start_new_session=True)
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
        _kill_group(proc)
    finally:
        if proc.poll() is None:
            _kill_group(proc)
    for t in threads:
        t.join(timeout=5)
    killed: list[int] = []
    if isolation in ("bwrap", "unshare") and _is_root():
        killed = _kill_uid(uid)
    if scratch_host is not None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of its session
        except OSError:
            pass
        shutil.rmtree(scratch_host, ignore_errors=True)
    log = (f"isolation: {isolation}\ncommand: {shlex.join(cmd[:3])} ...\n"
           f"returncode: {proc.returncode}\ntimed out: {timed_out}\n"
           f"stderr (last {MAX_STDERR} bytes):\n" + err_tail.decode("utf-8", "replace"))
    return SandboxResult(b"".join(out_chunks), nonce, isolation, timed_out, proc.returncode,
                         time.monotonic() - started, log, state["truncated"], killed)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _kill_uid(uid: int) -> list[int]:
    """Belt and braces after a namespaced run: nothing of the sandbox uid may survive it."""
    deadline = time.monotonic() + 2
    pids = processes_of(uid)
    while pids and time.monotonic() < deadline:  # the namespace is normally gone already
        time.sleep(0.1)
        pids = processes_of(uid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return pids
