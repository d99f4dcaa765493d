"""The command line that starts one sandbox: bubblewrap (``bwrap``), or the same layout made by
hand with util-linux ``unshare`` + ``mount`` + ``chroot``; what it sees and its environment.
Trusted code.

``bwrap``    new PID, network, IPC, UTS and mount namespaces; a root filesystem built from
             read-only binds of only what the kernel needs (/usr, /etc, the Python install, the
             venv, the ``nblib`` package, of the grader only ``grader/__init__.py`` and
             ``grader/inside/`` (never its hidden checks), the data folder); a private
             size-limited tmpfs as /tmp;
             no network, no /sys. As root, the sandbox then drops to its own unprivileged uid
             with ``setpriv``: no capabilities, no new privileges.
``unshare``  the same layout by hand, for root on machines without bubblewrap.

The environment is built from nothing (:func:`sandbox_env`): nothing of the grader's own leaks in.
Serves the README's "Exercises and grading (instructors)" section (no network, no ``/sys``, no view
of the checkout, the hidden checks, the grades or other students' work) and docs/grading.md
section 1. Introduced for the graded exercises of the lessons.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nblib
from grader import host

SANDBOX_SCRATCH = "/tmp/grading"  # inside the namespaced sandboxes (a private tmpfs)
SANDBOX_DATA = "/nblib-data"  # where the namespaced sandboxes see the data folder (read-only)


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
    if not (private and isolation in ("bwrap", "unshare") and host.is_root()):
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


def runner_paths() -> list[Path]:
    """What the sandbox needs of the grader itself: ``grader/__init__.py`` (imports nothing) and
    ``grader/inside/``. Never the whole package: ``grader/hidden/`` holds the hidden checks."""
    package = Path(__file__).resolve().parent
    return [package / "__init__.py", package / "inside"]


def read_only_paths(extra: list[Path] | None = None) -> list[Path]:
    """Host folders bound read-only at the same place in the sandbox (parents win)."""
    candidates = [Path("/usr"), Path("/etc"), Path(sys.prefix), Path(sys.base_prefix),
                  Path(sys.exec_prefix), Path(sys.base_exec_prefix),
                  Path(nblib.__file__).resolve().parent, *runner_paths()]
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


def _ancestors(paths: list[Path]) -> list[str]:
    seen: list[str] = []
    for p in paths:
        for parent in reversed(p.parents):
            s = str(parent)
            if s != "/" and s not in seen:
                seen.append(s)
    return seen


_bwrap_help: list[str] = []


def _bwrap_supports(flag: str) -> bool:
    if not _bwrap_help:
        try:
            done = subprocess.run([host.tool("bwrap"), "--help"], capture_output=True, timeout=10)
            _bwrap_help.append(done.stdout.decode("utf-8", "replace"))
        except (OSError, subprocess.SubprocessError):
            _bwrap_help.append("")
    return flag in _bwrap_help[0]


def _drop_privileges(uid: int) -> list[str]:
    return [host.tool("setpriv"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs", "--"]


def bwrap_command(inner: list[str], uid: int, tmpfs_mb: int, paths: list[Path],
                   data: Path | None = None) -> list[str]:
    """The bubblewrap command that runs ``inner`` in a fresh sandbox (as ``uid`` when root)."""
    cmd = [host.tool("bwrap"), "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net",
           "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not host.is_root():
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
    if host.is_root():
        cmd += _drop_privileges(uid)
    return cmd + inner


def unshare_command(inner: list[str], uid: int, tmpfs_mb: int, paths: list[Path],
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
        # A file (grader/__init__.py) is mounted on an empty file, a folder on an empty folder.
        make = (f'mkdir -p "$R"{q(str(dst))}' if Path(src).is_dir() else
                f'mkdir -p "$R"{q(str(dst.parent))} && touch "$R"{q(str(dst))}')
        lines += [make, f'mount --bind {q(str(src))} "$R"{q(str(dst))}',
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
        f'cd "$R/tmp" && {host.tool("chroot")} "$R" ' + " ".join(q(a) for a in _drop_privileges(uid) + inner),
    ]
    return [host.tool("unshare"), "--pid", "--fork", "--kill-child", "--net", "--ipc", "--uts", "--mount",
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
