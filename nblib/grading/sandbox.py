"""Where stage 1 runs: one throwaway sandbox per submission, with limits. Trusted code.

Two isolation levels, best first (``NBLIB_GRADING_ISOLATION`` or ``--isolation`` forces one):

``bwrap``    bubblewrap: new PID, network, IPC, UTS and mount namespaces; a root filesystem built
             from read-only binds of only what the kernel needs (/usr, /etc, the Python install, the
             venv, the ``nblib`` package, the data folder); a private size-limited tmpfs as /tmp;
             no network, no /sys. As root, the sandbox then drops to its own unprivileged uid (one
             per running sandbox, taken from a pool locked across grader runs) with ``setpriv``:
             no capabilities, no new privileges.
``unshare``  the same layout made by hand (util-linux ``unshare``, ``mount``, ``chroot``,
             ``setpriv``), for root on machines without bubblewrap.

There is no silent fallback: ``auto`` picks one of these or stops with the reason. ``none`` (a
plain subprocess with the grader's permissions) runs only when the instructor asks for it
explicitly (``--unsafe-no-sandbox``), with a loud warning.

In every level the runner lowers its rlimits (memory, CPU time, processes, file size, no core
files), lowers its priority and installs a seccomp filter that refuses new user namespaces before
any student code runs. The submission as a whole is held to a memory total and a CPU quota: by a
cgroup (v2, or v1 controllers) where the host lets the grader make one, otherwise by a watchdog
that sums the memory of all the sandbox's processes and kills the largest above the limit. The
grader kills the whole sandbox at the wall-clock limit and, as root, waits until no process of the
sandbox's uid is left before that uid is used again (a uid that will not empty is retired). The
hidden checks, the submissions and the grades folder are never inside the sandbox: the request
(notebook, parameters, hidden inputs) goes in on stdin and the results come back on stdout.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import shlex
import shutil
import signal
import stat
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

ISOLATIONS = ("bwrap", "unshare")  # the sandboxes; "none" is not one of them
UNSAFE = "none"
SANDBOX_SCRATCH = "/tmp/grading"  # inside the namespaced sandboxes (a private tmpfs)
SANDBOX_DATA = "/nblib-data"  # where the namespaced sandboxes see the data folder (read-only)
UID_BASE = int(os.environ.get("NBLIB_GRADING_UID_BASE", "61000"))
UID_COUNT = int(os.environ.get("NBLIB_GRADING_UID_COUNT", "500"))  # the pool: UID_BASE .. +COUNT-1
LOCK_DIR = Path(os.environ.get("NBLIB_GRADING_LOCK_DIR", "/run/nblib-grading"))
PROBE_UID = 65534  # nobody: the probe's /bin/true runs as it
MAX_STDERR = 64 * 1024
START_ALLOWANCE_S = 10  # beyond wall_s: starting the sandbox and Python, before the runner's clock
CLEANUP_TIMEOUT_S = 30.0  # longest wait for a sandbox's processes to be gone; then its uid retires
WATCHDOG_PERIOD_S = 0.5
CGROUP_ROOT = Path("/sys/fs/cgroup")
WARNING = (
    "WARNING: graded WITHOUT a sandbox (--unsafe-no-sandbox): the submission ran with the "
    "grader's permissions and could have read or changed any file the grader can, including "
    "other students' grades. Do not trust these grades; install bubblewrap and grade again."
)


class SandboxUnavailable(RuntimeError):
    """The requested isolation cannot run on this machine (the message says why)."""


class UidBusy(RuntimeError):
    """The uid picked for a sandbox still runs processes: pick another one (never the student's fault)."""


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
_probe_cache: dict[str, str | None] = {}  # isolation -> None if it works, else why not


def _is_root() -> bool:
    return os.geteuid() == 0


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
    if _is_root():
        needed.append("setpriv")
    elif isolation == "unshare":
        return "the unshare sandbox needs root (run the grader as root, or install bubblewrap)"
    missing = [t for t in needed if shutil.which(_tool(t)) is None]
    if missing:
        package = {"bwrap": "bubblewrap", "setpriv": "util-linux (setpriv)"}
        return "not found: " + ", ".join(f"{t} (install {package.get(t, 'util-linux')})"
                                         for t in missing)
    make = _bwrap_command if isolation == "bwrap" else _unshare_command
    cmd = make(["/bin/true"], uid=PROBE_UID, tmpfs_mb=8, paths=read_only_paths())
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        return f"{Path(cmd[0]).name} could not start: {err}"
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return (f"{Path(cmd[0]).name} failed on this machine (exit {done.returncode}): "
                + (said[-1][:200] if said else "no message"))
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
            f"{i}: {r}" for i, r in reasons.items()))
    if requested not in ISOLATIONS:
        raise ValueError(f"unknown isolation {requested!r}; choose from auto, {', '.join(ISOLATIONS)}")
    reason = why_unavailable(requested)
    if reason is not None:
        raise SandboxUnavailable(f"isolation {requested!r} does not work on this machine: {reason}")
    return requested


def unavailable_reasons() -> str:
    """Why each sandbox is unavailable here (for the --unsafe-no-sandbox banner)."""
    return "; ".join(f"{i}: {why_unavailable(i) or 'available'}" for i in ISOLATIONS)


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


_bwrap_help: list[str] = []


def _bwrap_supports(flag: str) -> bool:
    if not _bwrap_help:
        try:
            done = subprocess.run([_tool("bwrap"), "--help"], capture_output=True, timeout=10)
            _bwrap_help.append(done.stdout.decode("utf-8", "replace"))
        except (OSError, subprocess.SubprocessError):
            _bwrap_help.append("")
    return flag in _bwrap_help[0]


def _drop_privileges(uid: int) -> list[str]:
    return [_tool("setpriv"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs", "--"]


def _bwrap_command(inner: list[str], uid: int, tmpfs_mb: int, paths: list[Path],
                   data: Path | None = None) -> list[str]:
    cmd = [_tool("bwrap"), "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net",
           "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not _is_root():
        cmd += ["--unshare-user", "--uid", "65534", "--gid", "65534"]
        if _bwrap_supports("--disable-userns"):
            cmd.append("--disable-userns")  # the runner's seccomp filter refuses them as well
    # Every writable place is a size-limited tmpfs (tmpfs memory escapes RLIMIT_AS).
    # No /sys: nothing the lessons run needs it, and it describes the host.
    cmd += ["--proc", "/proc", "--dev", "/dev",
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
        'mkdir -p "$R/proc" "$R/dev"',
        'mount -t proc -o nosuid,nodev,noexec proc "$R/proc"',
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


def _uids_in_use() -> dict[int, list[int]]:
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
    return _uids_in_use().get(uid, [])


# ---------------------------------------------------------------- the sandbox uids
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
            busy = _uids_in_use()
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
                if processes_of(uid):  # started between our scan and the lock
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


# ---------------------------------------------------------------- whole-submission limits
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
        if not _is_root():
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


# ---------------------------------------------------------------- one run
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
    :class:`UidPool`); :class:`UidBusy` if it runs processes already.
    ``data``: the data folder to show read-only (see :func:`readable_data`); None for none.
    """
    data_path = data_dir() if data == "default" else data
    if not (data_path is None or isinstance(data_path, Path)):
        raise TypeError(f"data must be a Path or None, got {type(data_path).__name__}")
    as_uid = isolation in ISOLATIONS and _is_root()
    if as_uid and uid is None:
        raise ValueError("a root sandbox needs a uid from a UidPool")
    nonce = secrets.token_hex(16)
    paths = read_only_paths(extra_read_only)
    check_not_exposed(paths + ([data_path] if data_path else []), secret_paths or [])
    nproc = limits.nproc
    if not as_uid:
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
        cmd = _bwrap_command(inner, uid or 0, limits.tmpfs_mb, paths, data_path)
        env = sandbox_env(SANDBOX_SCRATCH, Path(SANDBOX_DATA) if data_path else None)
        cwd = "/"
    elif isolation == "unshare":
        cmd = _unshare_command(inner, uid or 0, limits.tmpfs_mb, paths, data_path)
        env = sandbox_env(SANDBOX_SCRATCH, Path(SANDBOX_DATA) if data_path else None)
        cwd = "/"
    elif isolation == UNSAFE:
        scratch_host = tempfile.mkdtemp(prefix="nblib-grading-")
        cmd, env, cwd = inner, sandbox_env(scratch_host, data_path), scratch_host
    else:
        raise ValueError(f"unknown isolation {isolation!r}")
    if as_uid:
        leftovers = processes_of(uid)
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
        clean, killed = _reap_uid(uid, CLEANUP_TIMEOUT_S)
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
                         memory_kills, watchdog.cpu_exceeded, uid, clean)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _reap_uid(uid: int, timeout: float) -> tuple[bool, list[int]]:
    """Kill every process of the sandbox's uid until /proc shows none (at most ``timeout`` s).

    Returns (gone, the pids that had to be killed). Zombies count until reaped: the sandbox's
    PID namespace reaps them once its init is gone.
    """
    deadline = time.monotonic() + timeout
    killed: set[int] = set()
    while True:
        pids = processes_of(uid)
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
