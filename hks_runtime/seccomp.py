"""A seccomp filter for every sandbox: system calls no function needs, refused with EPERM.

Dropped capabilities already stop most of the kernel's admin calls; this closes what stays open to an
unprivileged process and is a favourite kernel attack surface or a channel between tenants (all sandboxes
run as the same ``nobody``): the kernel keyrings, io_uring, bpf, perf events, userfaultfd, ptrace and
cross-process memory access, namespace changes, mounts, module loading. EPERM rather than a kill, so a
runtime that probes a call (libuv tries io_uring) falls back instead of dying. Calls of another
architecture's ABI (32-bit ``int 0x80``) kill the process: libseccomp's default for a foreign ABI.

The filter is compiled once with libseccomp's own Python binding (Debian package ``python3-seccomp``, used
through the system's ``python3``, since it is not on PyPI) and handed to bubblewrap as ``--seccomp FD``.
Without it the runtime says so (``/healthz``: ``"seccomp": false``) and runs without the filter.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess

_log = logging.getLogger(__name__)

SYSTEM_PYTHON = "/usr/bin/python3"

DENIED = (
    # kernel keyrings: shared by every process of a uid, i.e. by every sandbox
    "keyctl", "add_key", "request_key",
    # big kernel attack surfaces an unprivileged process can reach
    "io_uring_setup", "io_uring_enter", "io_uring_register", "bpf", "perf_event_open", "userfaultfd",
    # other processes' memory
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # namespaces and mounts (bubblewrap has set them up already)
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "name_to_handle_at", "open_by_handle_at",
    # the machine itself
    "reboot", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "swapon",
    "swapoff", "acct", "quotactl", "syslog", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "iopl", "ioperm", "vhangup", "personality", "lookup_dcookie",
)  # fmt: skip

_COMPILE = """
import errno, sys, seccomp
rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
for name in sys.argv[1:]:
    try:
        rules.add_rule(seccomp.ERRNO(errno.EPERM), name)
    except (RuntimeError, ValueError, OSError):
        pass  # not a system call on this architecture
rules.export_bpf(sys.stdout.buffer)
"""


@functools.cache
def program() -> bytes | None:
    """The compiled filter (classic BPF, as bubblewrap's --seccomp reads it), or None without libseccomp."""
    try:
        result = subprocess.run(
            [SYSTEM_PYTHON, "-I", "-c", _COMPILE, *DENIED], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        _log.warning("no seccomp filter for sandboxes: %s", exc)
        return None
    if result.returncode != 0 or not result.stdout:
        reason = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        _log.warning("no seccomp filter for sandboxes (apt-get install python3-seccomp): %s", reason[0])
        return None
    return result.stdout


def memfd() -> int | None:
    """A file descriptor holding the filter, for one bubblewrap (close-on-exec; pass it in pass_fds)."""
    code = program()
    if code is None:
        return None
    fd = os.memfd_create("hks-seccomp")
    os.write(fd, code)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
