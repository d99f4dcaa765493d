"""Finding and reading the submission files safely: ``<dir>/<student>/<lesson>.ipynb``, nothing
followed or opened while looking (``lstat`` only), each file then read with ``O_NOFOLLOW`` on
every folder on the way and on the file; links, pipes, devices, hard links and the course's own
notebooks become refused rows. Trusted code.

Serves the README's "Exercises and grading (instructors)" section (*Submission files are read only
if they are plain files: links, pipes, devices and hard links get a refused row with its reason in
grades.csv, and skipped.txt lists what was not graded*) and docs/grading.md section 3 (collecting
the submissions). Introduced for the graded exercises of the lessons.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

MAX_NOTEBOOK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Submission:
    student: str  # the folder's name as given (or the loose file's stem)
    lesson: str  # "" when a refused folder's lesson is unknown
    path: Path
    refused: str = ""  # why it will not be read; a row in grades.csv says so


class Refused(Exception):
    """A submission file the trusted side will not read (the message is the reason)."""


def find_submissions(root: Path, lessons: list[str], lesson: str | None = None
                     ) -> tuple[list[Submission], list[str]]:
    """Submissions laid out as ``root/<student>/<lesson>.ipynb`` (or ``root/<student>.ipynb`` with
    ``lesson`` given). A file counts for the lesson whose name starts it (``03_bert-Copy1.ipynb``);
    with several files for one student and lesson, the exact name wins, then the newest.

    Nothing is followed or opened here (``lstat`` only): a symbolic link, a FIFO, a device or any
    other non-regular file named like a lesson becomes a refused submission (a row in grades.csv
    with its reason) unless the student also has a regular file for that lesson. Everything else
    left out is listed in the second return value (dot-folders included).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no submissions folder {root}")
    candidates: dict[tuple[str, str], list[tuple[Path, str]]] = {}  # -> [(path, refusal)]
    refused_folders: list[Submission] = []
    skipped: list[str] = []

    def lesson_of(path: Path, loose: bool) -> str | None:
        matches = [ls for ls in lessons if path.stem.startswith(ls)]
        if lesson is not None:
            return lesson if (lesson in matches or loose) else None
        return max(matches, key=len) if matches else None

    def kind(info: os.stat_result) -> str:
        if stat.S_ISLNK(info.st_mode):
            return "a symbolic link: links are not followed; submit the file itself"
        if stat.S_ISFIFO(info.st_mode):
            return "a named pipe, not a regular file"
        if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
            return "a device, not a regular file"
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        return ""

    def consider(student: str, path: Path, info: os.stat_result, loose: bool = False) -> None:
        matched = lesson_of(path, loose)
        if matched is None:
            skipped.append(f"{path}: no hidden checks for this notebook name")
            return
        candidates.setdefault((student, matched), []).append((path, kind(info)))

    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        path = Path(entry.path)
        if entry.name.startswith("."):
            skipped.append(f"{path}: its name starts with '.', so it is not read as a student's "
                           "folder (rename it to grade it)")
            continue
        info = os.lstat(path)
        if stat.S_ISDIR(info.st_mode):
            for folder, dirs, files in os.walk(path, followlinks=False):
                dirs[:] = sorted(d for d in dirs if d != ".ipynb_checkpoints")
                for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
                    inner = Path(folder) / name
                    inner_info = os.lstat(inner)
                    if name.endswith(".ipynb") or stat.S_ISLNK(inner_info.st_mode):
                        consider(entry.name, inner, inner_info)
        elif entry.name.endswith(".ipynb") and lesson is not None:
            consider(path.stem, path, info, loose=True)
        elif entry.name.endswith(".ipynb"):
            skipped.append(f"{path}: loose notebook; put it in a folder named after the "
                           "student, or pass --lesson")
        elif stat.S_ISLNK(info.st_mode):
            refused_folders.append(Submission(entry.name, "", path, kind(info)))
        else:
            skipped.append(f"{path}: not a folder or a notebook")

    subs: list[Submission] = list(refused_folders)
    for (student, matched), found in sorted(candidates.items()):
        readable = [p for p, why in found if not why]
        if readable:
            best = max(readable, key=lambda p: (p.stem == matched, os.lstat(p).st_mtime, str(p)))
            subs.append(Submission(student, matched, best))
            skipped += [f"{p}: another file of {student} for {matched} is graded"
                        for p, _ in found if p != best]
        else:
            path, why = found[0]
            subs.append(Submission(student, matched, path, why))
            skipped += [f"{p}: {w}" for p, w in found[1:]]
    subs.sort(key=lambda s: (s.student, s.lesson))
    return subs, skipped


def read_submission(root: Path, path: Path, max_bytes: int = MAX_NOTEBOOK_BYTES,
                    forbidden: set[tuple[int, int]] | None = None) -> bytes:
    """The bytes of one submission, read without following any link below ``root``.

    Every folder on the way is opened with ``O_NOFOLLOW``, the file too (and ``O_NONBLOCK``: a
    FIFO cannot stall us); it must be a regular file with a single name, not one of the files in
    ``forbidden`` (the course's own notebooks, by device and inode), and at most ``max_bytes``
    long, counted while reading. :class:`Refused` says why not.
    """
    rel = Path(path).relative_to(root)
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in rel.parts[:-1]:
            try:
                inner = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            except OSError:
                raise Refused(f"its folder {part} is not a plain folder (a link?)") from None
            os.close(fd)
            fd = inner
        try:
            file_fd = os.open(rel.parts[-1], flags | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=fd)
        except OSError as err:
            raise Refused("a symbolic link: links are not followed; submit the file itself"
                          if err.errno == errno.ELOOP else f"cannot be opened ({err.strerror})") from None
    finally:
        os.close(fd)
    try:
        info = os.fstat(file_fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refused("not a regular file")
        if info.st_nlink > 1:
            raise Refused("a hard link to another file; submit a copy of your own")
        if forbidden and (info.st_dev, info.st_ino) in forbidden:
            raise Refused("the course's own lesson notebook, not a submission")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(file_fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise Refused(f"larger than {max_bytes // 2**20} MB")
        return b"".join(chunks)
    finally:
        os.close(file_fd)


def check_folders(submissions_dir: Path, course_notebooks: Path | None) -> set[tuple[int, int]]:
    """The submissions folder may not be, hold or lie in the course's notebooks/ (the solution
    source). Returns the (device, inode) of each course notebook, refused if found below."""
    if course_notebooks is None or not Path(course_notebooks).is_dir():
        return set()
    course = Path(course_notebooks).resolve()
    if submissions_dir == course or course in submissions_dir.parents or submissions_dir in course.parents:
        raise ValueError(f"the submissions folder {submissions_dir} is, holds or lies in the "
                         f"course's notebooks folder {course}; put the submissions elsewhere")
    found = set()
    for nb in course.glob("*.ipynb"):
        with contextlib.suppress(OSError):
            info = nb.stat()
            found.add((info.st_dev, info.st_ino))
    return found
