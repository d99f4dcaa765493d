"""How the runner confines itself before any student code runs (INSIDE the sandbox): lower
rlimits, no longer dumpable, and a seccomp filter that refuses new user namespaces. The kernel and
everything it starts inherit all three.

Serves the README's "Exercises and grading (instructors)" section (*no nested user namespaces*)
and docs/grading.md section 1 (*Each process is also limited (address space, CPU time, file size,
no core files) ... and cannot create user namespaces*). Introduced for the graded exercises of the
lessons.
"""

from __future__ import annotations

import ctypes

# seccomp: refuse new user namespaces (unshare/clone with CLONE_NEWUSER; clone3, whose flags a
# filter cannot read, says "not implemented" and the C library falls back to clone). Classic BPF.
_CLONE_NEWUSER = 0x10000000
_SECCOMP_ARCHES = {  # machine: (AUDIT_ARCH, unshare, clone, clone3)
    "x86_64": (0xC000003E, 272, 56, 435),
    "aarch64": (0xC00000B7, 97, 220, 435),
}


def _seccomp_program(machine: str) -> bytes | None:
    import struct

    if machine not in _SECCOMP_ARCHES:
        return None
    arch, unshare, clone, clone3 = _SECCOMP_ARCHES[machine]
    ld_w_abs, jeq_k, jset_k, ret_k = 0x20, 0x15, 0x45, 0x06
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    prog = [
        (ld_w_abs, 0, 0, 4),  # 0: arch
        (jeq_k, 1, 0, arch),  # 1: native ABI? else (x86 int 0x80 etc.) refuse
        (ret_k, 0, 0, eperm),  # 2
        (ld_w_abs, 0, 0, 0),  # 3: syscall number
        (jset_k, 0, 1, 0x40000000),  # 4: x32 ABI numbers: refuse
        (ret_k, 0, 0, eperm),  # 5
        (jeq_k, 3, 0, unshare),  # 6: -> 10
        (jeq_k, 2, 0, clone),  # 7: -> 10
        (jeq_k, 5, 0, clone3),  # 8: -> 14
        (ret_k, 0, 0, allow),  # 9
        (ld_w_abs, 0, 0, 16),  # 10: flags (args[0], low 32 bits)
        (jset_k, 1, 0, _CLONE_NEWUSER),  # 11: -> 13
        (ret_k, 0, 0, allow),  # 12
        (ret_k, 0, 0, eperm),  # 13
        (ret_k, 0, 0, enosys),  # 14
    ]
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


def install_seccomp() -> bool:
    """No new user namespaces for anything started from here on (the kernel, its children)."""
    import platform

    program = _seccomp_program(platform.machine())
    if program is None:
        return False

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    libc = ctypes.CDLL(None, use_errno=True)
    fprog = SockFprog(len(program) // 8, program)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        return False
    return libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0  # PR_SET_SECCOMP, FILTER


def make_undumpable() -> None:
    """PR_SET_DUMPABLE=0: the kernel (same uid) can no longer ptrace us or open /proc/<us>/*."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: nothing to do
        pass


def apply_rlimits(limits: dict[str, int]) -> None:
    """Lower this process's limits before any student code runs; the kernel inherits them.

    Hard limits too, so the student cannot raise them back. ``as``/``fsize`` in bytes, ``cpu`` in
    seconds (SIGXCPU at the soft limit, SIGKILL 5 s later), ``nproc`` counts processes + threads.
    """
    import resource

    names = {"as": resource.RLIMIT_AS, "cpu": resource.RLIMIT_CPU,
             "nproc": resource.RLIMIT_NPROC, "fsize": resource.RLIMIT_FSIZE, "core": resource.RLIMIT_CORE}
    for key, value in limits.items():
        which = names[key]
        _, hard = resource.getrlimit(which)
        soft_new = int(value)
        hard_new = soft_new + 5 if key == "cpu" else soft_new
        if hard != resource.RLIM_INFINITY:
            soft_new, hard_new = min(soft_new, hard), min(hard_new, hard)
        resource.setrlimit(which, (soft_new, hard_new))
