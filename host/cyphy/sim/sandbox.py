"""Kernel-enforced containment for a sim node's MicroPython process (Linux Landlock).

The sim's ROM already hides the host from user code (no VfsPosix, no os.system), but code
inside one interpreter can always dig further. Landlock lets an unprivileged process give
up filesystem access for good: after `restrict()` the node can read its ROM and read/write
its flash image, and nothing else on the host, whatever it runs.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_PDEATHSIG = 1
_RULE_PATH_BENEATH = 1
_CREATE_RULESET_VERSION = 1

EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
# Bits 4..12: remove/make dir, file, char, sock, fifo, block, symlink (ABI 1).
_ABI1_ALL = (1 << 13) - 1
_REFER = 1 << 13  # ABI 2
_TRUNCATE = 1 << 14  # ABI 3
_IOCTL_DEV = 1 << 15  # ABI 5


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """Landlock ABI version the kernel offers, 0 when unavailable."""
    try:
        libc = _libc()
        v = libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(int(v), 0)


def die_with_parent() -> None:
    """Have the kernel kill this process when its supervisor dies (even by SIGKILL)."""
    try:
        import signal

        _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def restrict(read_only: list[Path], read_write: list[Path], executable: list[Path] = ()) -> str:
    """Allow only these paths from now on (executable: files that may also be executed, e.g.
    a statically linked MicroPython to exec); returns 'landlock' or why it could not."""
    abi = abi_version()
    if abi < 1:
        return "none (kernel has no Landlock)"
    handled = _ABI1_ALL
    if abi >= 2:
        handled |= _REFER
    if abi >= 3:
        handled |= _TRUNCATE
    if abi >= 5:
        handled |= _IOCTL_DEV
    libc = _libc()
    attr = _RulesetAttr(handled)
    rfd = libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), 0)
    if rfd < 0:
        return "none (landlock_create_ruleset: %s)" % os.strerror(ctypes.get_errno())
    try:
        for paths, access in ((read_only, READ_FILE | READ_DIR), (read_write, READ_FILE | WRITE_FILE),
                              (list(executable), READ_FILE | EXECUTE)):
            for p in paths:
                fd = os.open(p, os.O_PATH | os.O_CLOEXEC)
                try:
                    allowed = access if p.is_dir() else access & ~READ_DIR
                    rule = _PathBeneathAttr(allowed, fd)
                    if libc.syscall(_SYS_ADD_RULE, rfd, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
                        return "none (landlock_add_rule %s: %s)" % (p, os.strerror(ctypes.get_errno()))
                finally:
                    os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return "none (no_new_privs: %s)" % os.strerror(ctypes.get_errno())
        if libc.syscall(_SYS_RESTRICT_SELF, rfd, 0) != 0:
            return "none (landlock_restrict_self: %s)" % os.strerror(ctypes.get_errno())
    finally:
        os.close(rfd)
    return "landlock"
