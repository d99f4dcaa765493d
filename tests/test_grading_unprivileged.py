"""Grading as a regular user, as on an instructor's laptop or a shared server: bubblewrap in a user
namespace of its own, no per-sandbox uids, the watchdog for the whole-sandbox limits.

As root, the test makes an unprivileged user (``useradd``) and grades a small hostile class as
that user, then as root, and compares. Not as root, it grades as the user it runs as. Where the
kernel forbids user namespaces to regular users the hostile class is skipped with the kernel's
setting as the reason, and the grader must refuse with a clear message instead (tested here on a
stand-in of such a kernel, and for real where the kernel is one).
"""

from __future__ import annotations

import csv
import os
import pwd
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
from test_grading import (
    FORK_BOMB,
    NB_NAME,
    _mask_forever,
    _truncate_leaking,
    demo,
    solution,
    stripped,
    with_cell,
    with_exercise,
)

from grader import host, isolation, launch
from grader.score import grade

TEST_USER = "nblib-grader-test"
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- running as a regular user
def _blocked_ancestor(path: Path) -> Path | None:
    """The first folder above (or at) ``path`` that other users may not enter, if any."""
    for folder in [*reversed(path.parents), path]:
        if folder.is_dir() and not folder.stat().st_mode & stat.S_IXOTH:
            return folder
    return None


class RegularUser:
    """Runs commands as an unprivileged user: a fresh one made with ``useradd`` when we are root
    (removed afterwards), else the user the tests run as."""

    def __init__(self) -> None:
        self.created = False
        if os.geteuid() != 0:
            self.name, self.uid, self.gid = pwd.getpwuid(os.getuid()).pw_name, os.getuid(), os.getgid()
            return
        try:
            pwd.getpwnam(TEST_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--user-group",
                            "--shell", "/usr/sbin/nologin", TEST_USER], check=True)
            self.created = True
        entry = pwd.getpwnam(TEST_USER)
        self.name, self.uid, self.gid = TEST_USER, entry.pw_uid, entry.pw_gid

    def own(self, path: Path) -> None:
        if os.geteuid() == 0:
            for p in [path, *path.rglob("*")]:
                os.lchown(p, self.uid, self.gid)

    def command(self, argv: list[str], home: Path) -> list[str]:
        """``argv`` as this user, with a clean environment. As root, in a mount namespace of its
        own where the Python install is reachable: the course's Python may live in root's home
        (pyenv in /root), which a regular user cannot enter, while an instructor's own Python is
        always theirs. Nothing else is shown that the user could not see anyway."""
        env = ["env", "-i", f"HOME={home}", "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8",
               "OMP_NUM_THREADS=1"]
        if os.geteuid() != 0:
            return [*env, *argv]
        lines = ["set -e"]
        moves = []  # (folder the user cannot enter, what must be reachable below it, a stage)
        for needed in sorted({Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), REPO}):
            blocked = _blocked_ancestor(needed)
            if blocked is not None:
                stage = home.parent / f".stage-{len(moves)}"
                stage.mkdir(exist_ok=True)
                moves.append((blocked, needed, stage))
        q = shlex.quote
        # Set the needed folders aside, cover what blocks them with an open tmpfs, put them back.
        lines += [f"mount --bind {q(str(needed))} {q(str(stage))}" for _, needed, stage in moves]
        lines += [f"mount -t tmpfs -o mode=0755 nblib-grader-view {q(str(blocked))}"
                  for blocked in sorted({b for b, _, _ in moves})]
        for _, needed, stage in moves:
            lines += [f"mkdir -p {q(str(needed))}", f"mount --bind {q(str(stage))} {q(str(needed))}"]
        user = [host.tool("setpriv"), f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups"]
        lines.append("exec " + shlex.join([*user, *env, *argv]))
        return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", "\n".join(lines)]

    def run(self, argv: list[str], home: Path, timeout: float = 1800) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(argv, home), capture_output=True, text=True,
                              timeout=timeout, cwd=home)

    def processes(self) -> list[int]:
        return host.processes_of(self.uid) if os.geteuid() == 0 else []

    def close(self) -> None:
        if self.created:
            subprocess.run(["userdel", TEST_USER], check=False, capture_output=True)


@pytest.fixture(scope="module")
def regular_user():
    user = RegularUser()
    work = Path(tempfile.mkdtemp(prefix="nblib-grader-unprivileged-"))
    work.chmod(0o755)
    (work / "home").mkdir()
    user.own(work)
    yield user, work
    shutil.rmtree(work, ignore_errors=True)
    user.close()


def userns_reason(user: RegularUser, work: Path) -> str | None:
    """None if ``user`` may make a user namespace here, else why not (the kernel's settings)."""
    done = user.run(["unshare", "--user", "true"], work / "home", timeout=30)
    if done.returncode == 0:
        return None
    return host.userns_restriction() or f"unshare --user failed: {done.stderr.strip()[-200:]}"


def rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {r["student"]: r for r in csv.DictReader(fh)}


def hostile_class(subs: Path, course: Path) -> None:
    """Two honest students and six attacks, each one that the root battery grades too."""
    demo.write_lesson(course)
    notebooks = {
        "alice": solution(),
        "张三": stripped(),
        "carol": with_exercise(with_exercise(solution(), "T1-truncate", _truncate_leaking()),
                               "T2-mask", _mask_forever()),
        "ivan": with_cell(solution(), FORK_BOMB),
        "ken": with_cell(stripped(), "import os, subprocess\n"
                         "done = subprocess.run(['unshare', '-Ur', 'true'], capture_output=True)\n"
                         "raise RuntimeError(f\"userns={done.returncode} sys={os.path.exists('/sys/kernel')}\")",
                         at=3),
        "oscar": with_exercise(solution(), "T1-truncate", "import functools\n"
                               "from nblib.data.text import truncate\ntruncate_head_tail = functools.partial("
                               "truncate, strategy='head+tail', head_fraction=0.5)"),
    }
    for student, nb in notebooks.items():
        (subs / student).mkdir(parents=True)
        nbformat.write(nb, subs / student / NB_NAME)
    (subs / "mallory").mkdir()
    os.symlink(course / NB_NAME, subs / "mallory" / NB_NAME)  # the solution, by a link
    (subs / "pat").mkdir()
    os.mkfifo(subs / "pat" / NB_NAME)


# ---------------------------------------------------------------- the tests
@pytest.mark.slow
def test_a_hostile_class_graded_as_a_regular_user_gets_the_grades_it_gets_as_root(regular_user):
    user, work = regular_user
    if shutil.which(host.tool("bwrap")) is None:
        pytest.skip("bubblewrap is not installed: a regular user has no sandbox (make sandbox)")
    reason = userns_reason(user, work)
    if reason is not None:
        pytest.skip(f"the kernel forbids user namespaces to regular users: {reason}")
    subs, hidden, out = work / "subs", work / "hidden", work / "out"
    hostile_class(subs, work / "course")
    shutil.copytree(demo.HIDDEN_DIR, hidden)
    user.own(work)
    started = time.monotonic()
    done = user.run([sys.executable, "-m", "grader", "grade", str(subs), "--out", str(out),
                     "--checks", str(hidden), "--jobs", "2"], work / "home")
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    as_user = rows(out / "grades.csv")
    expected = {"alice": ("ok", "7"), "张三": ("errors", "0"), "carol": ("errors", "3"),
                "ivan": (None, None), "ken": ("errors", "0"), "oscar": ("ok", "5"),
                "mallory": ("refused", "0"), "pat": ("refused", "0")}
    assert set(as_user) == set(expected)
    # The fork bomb's children hold the process limit until the sandbox ends: whether the hidden
    # call of its last exercise (torch, threads) still finds a free slot is a race, as under root.
    assert (as_user["ivan"]["T1-truncate"], as_user["ivan"]["T2-mask"]) == ("2", "2")
    for student, (status, total) in expected.items():
        if total is not None:
            assert as_user[student]["total"] == total, (student, as_user[student])
        if status is not None:
            assert as_user[student]["status"] == status, (student, as_user[student])
    ken = (out / "feedback" / "ken.md").read_text(encoding="utf-8")
    assert "`userns=1 sys=False`" in ken  # no nested user namespace, no /sys, as under root
    logs = "".join(p.read_text() for p in (out / "logs").glob("*.log"))
    assert "isolation: bwrap" in logs and "uid: None" in logs  # no per-sandbox uid without root
    summary = (out / "summary.txt").read_text()
    assert "bwrap isolation" in summary and "held by: watchdog" in summary
    assert seconds < 1800
    time.sleep(1)
    # the fork bomb's children die with their sandbox: the kernel kills a pid namespace's processes when its
    # first process ends, but not at once, so give them a few seconds (one was still there right after, once)
    deadline = time.monotonic() + 15
    while user.processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert user.processes() == []
    if os.geteuid() == 0:  # the same class as root: the same grades
        as_root = {g.student: g for g in grade(subs, work / "out-root", hidden, jobs=2,
                                               progress=None)}
        for student, row in as_user.items():
            g = as_root[student]
            points = [row[e.id] for e in g.exercises]
            if student == "ivan":  # the race above: its first two exercises only
                points, g.exercises = points[:2], g.exercises[:2]
            else:
                assert row["status"] == g.status, student
            assert points == [f"{e.points:g}" for e in g.exercises], student


def _forbidding_kernel(monkeypatch, tmp_path) -> None:
    """A stand-in for a kernel without user namespaces for regular users: not root, and a
    bubblewrap that fails as the real one does there."""
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace, likely "
                    "because the kernel does not allow non-privileged user namespaces.' >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    real_tool = host.tool
    monkeypatch.setattr(host, "tool", lambda name: str(fake) if name == "bwrap" else real_tool(name))
    monkeypatch.setattr(host, "is_root", lambda: False)
    monkeypatch.setattr(host, "userns_restriction", lambda: "kernel.unprivileged_userns_clone = 0")
    monkeypatch.setattr(isolation, "_probe_cache", {})
    monkeypatch.setattr(launch, "_bwrap_help", [])
    monkeypatch.delenv("NBLIB_GRADING_ISOLATION", raising=False)


def test_without_user_namespaces_the_grader_refuses_and_says_why(tmp_path, monkeypatch, capsys):
    _forbidding_kernel(monkeypatch, tmp_path)
    subs = tmp_path / "subs"
    (subs / "alice").mkdir(parents=True)
    nbformat.write(solution(), subs / "alice" / NB_NAME)
    with pytest.raises(isolation.SandboxUnavailable) as err:
        grade(subs, tmp_path / "out", demo.HIDDEN_DIR, progress=None)
    message = str(err.value)
    assert "no sandbox works on this machine" in message
    assert "user namespaces, which this kernel forbids: kernel.unprivileged_userns_clone = 0" in message
    assert "unshare sandbox needs root" in message and "--unsafe-no-sandbox" in message
    assert not (tmp_path / "out").exists()
    from grader.__main__ import main as cli

    assert cli(["grade", str(subs), "--out", str(tmp_path / "out"), "--checks",
                str(demo.HIDDEN_DIR)]) == 1
    said = capsys.readouterr().err
    assert said.startswith("error: no sandbox works") and "kernel.unprivileged_userns_clone" in said
    with pytest.raises(isolation.SandboxUnavailable, match="does not work on this machine.*forbids"):
        grade(subs, tmp_path / "out", demo.HIDDEN_DIR, isolation="bwrap", progress=None)


@pytest.mark.slow
def test_where_the_kernel_forbids_user_namespaces_a_regular_user_is_refused(regular_user):
    user, work = regular_user
    reason = userns_reason(user, work)
    if reason is None:
        pytest.skip("this kernel allows user namespaces to regular users (the stand-in test "
                    "covers the refusal)")
    subs = work / "refused-subs"
    (subs / "alice").mkdir(parents=True)
    nbformat.write(solution(), subs / "alice" / NB_NAME)
    user.own(work)
    done = user.run([sys.executable, "-m", "grader", "grade", str(subs), "--out",
                     str(work / "refused-out"), "--checks", str(demo.HIDDEN_DIR)], work / "home")
    assert done.returncode == 1 and "no sandbox works on this machine" in done.stderr
    assert "--unsafe-no-sandbox" in done.stderr
    assert not (work / "refused-out").exists()
