"""Read-only views of host dirs whose mount shows no host path inside a sandbox.

``/proc/self/mountinfo`` shows, as the root of a bind mount, the source's path from the root of its
filesystem, in every mount namespace: a sandbox whose ``/app`` is a bind of
``DATA_DIR/artifacts/<hash>-<project>`` reads where the platform keeps its data. An overlayfs mount's root is
``/``, and its options show its lower dirs as the strings it was given, not as resolved; so the daemon
(root) mounts, for each bind of a sandbox, ``overlay`` with ``lowerdir=<symlink>:<empty dir>`` (read-only
binds) or ``upperdir=<symlink>`` over an empty lower dir (writable ones: writes land in the dir itself)
under ``/run/hks-views/<pid>-<random>/`` (a private mount, like ``netns.py``'s), the symlink pointing at
the real dir, and bubblewrap binds that mount instead. Inside, mountinfo shows
``/run/hks-views/<pid>-<random>/l0`` and nothing of the data dir, the checkout or a project's name.

A dir filled after the mount (a pre-warmed standby's slot) shows its new files: overlayfs looks names up
in its lower dirs when first asked, and nothing in the sandbox looks before the slot is filled. Where
overlayfs cannot be mounted (no root, an unsupported filesystem) ``create`` returns None and the caller binds
the real dirs (the paths are then shown, as before), as under ``HKS_SANDBOX_VIEWS=off``.
``sweep_stale()`` removes views a crashed daemon left.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import functools
import logging
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from .processes import pid_alive

VIEWS_DIR = Path("/run/hks-views")
_MS_RDONLY, _MS_NOSUID, _MS_NODEV = 1, 2, 4
_MNT_DETACH = 2
_log = logging.getLogger(__name__)


@functools.cache
def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _mount_overlay(options: str, target: str, *, read_only: bool) -> None:
    flags = (_MS_RDONLY if read_only else 0) | _MS_NOSUID | _MS_NODEV
    if _libc().mount(b"overlay", target.encode(), b"overlay", flags, options.encode()) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount overlay on {target}: {os.strerror(errno)}")


def _unmount(target: Path) -> None:
    _libc().umount2(str(target).encode(), _MNT_DETACH)


class View:
    """One sandbox's views: ``path_for(source)`` is what to bind instead of ``source``."""

    def __init__(self, root: Path):
        self.root: Path | None = root
        self.mounts: dict[str, str] = {}
        self.workdirs: list[Path] = []  # overlayfs's own work dirs, next to the writable ones

    def path_for(self, source: str) -> str:
        return self.mounts.get(source, source)

    def close(self) -> None:
        """Unmount (lazily: a sandbox's own copy of the mount is not affected) and remove. Safe twice."""
        if self.root is None:
            return
        _remove(self.root)
        for workdir in self.workdirs:
            shutil.rmtree(workdir, ignore_errors=True)
        self.root = None


def create(read_only: list[str], writable: list[str] | None = None) -> View | None:
    """Views of these dirs (others are left to a plain bind), or None where views cannot work.

    A writable one is an overlay whose upper dir is the dir itself (writes land there, as through a bind)
    over an empty lower one; overlayfs's work dir is made next to it and removed with the view."""
    if os.environ.get("HKS_SANDBOX_VIEWS") == "off" or os.geteuid() != 0 or not _ready():
        return None
    root = VIEWS_DIR / f"{os.getpid()}-{secrets.token_hex(6)}"
    view = View(root)
    empty = VIEWS_DIR / ".empty"
    try:
        root.mkdir(mode=0o711)
        sources = [(s, False) for s in dict.fromkeys(read_only)] + [
            (s, True) for s in dict.fromkeys(writable or [])
        ]
        for i, (source, rw) in enumerate(sources):
            if not os.path.isdir(source):
                continue
            link, mount = root / f"l{i}", root / f"m{i}"
            link.symlink_to(os.path.realpath(source))
            mount.mkdir()
            if rw:
                workdir = Path(os.path.realpath(source) + ".ovl-work")
                workdir.mkdir(mode=0o700)
                view.workdirs.append(workdir)
                (root / f"w{i}").symlink_to(workdir)
                options = f"lowerdir={empty},upperdir={link},workdir={root / f'w{i}'}"
            else:
                options = f"lowerdir={link}:{empty}"
            _mount_overlay(options, str(mount), read_only=not rw)
            view.mounts[source] = str(mount)
    except OSError as exc:
        _log.warning("sandbox binds show their host paths: %s", exc)
        view.close()
        return None
    return view


@functools.cache
def _ready() -> bool:
    """``VIEWS_DIR`` as a private mount of its own (once per process; daemons on one host share it)."""
    try:
        VIEWS_DIR.mkdir(mode=0o711, parents=True, exist_ok=True)
        (VIEWS_DIR / ".empty").mkdir(mode=0o755, exist_ok=True)
        with open(VIEWS_DIR.parent / ".hks-views.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            if not _is_mount(VIEWS_DIR):
                _run(["mount", "--bind", str(VIEWS_DIR), str(VIEWS_DIR)])
            _run(["mount", "--make-private", str(VIEWS_DIR)])
        return True
    except (OSError, subprocess.SubprocessError) as exc:
        _log.warning("no sandbox views (binds show their host paths): %s", exc)
        return False


def _is_mount(path: Path) -> bool:
    with open("/proc/self/mountinfo") as handle:
        return any(line.split()[4] == str(path) for line in handle)


def _run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def _remove(root: Path) -> None:
    for mount in root.glob("m*"):
        _unmount(mount)
    shutil.rmtree(root, ignore_errors=True)


def sweep_stale() -> int:
    """Remove views whose creating process is gone. Returns how many."""
    removed = 0
    if not VIEWS_DIR.is_dir():
        return 0
    for entry in VIEWS_DIR.iterdir():
        creator = entry.name.split("-", 1)[0]
        if not creator.isdigit() or pid_alive(int(creator)):
            continue
        _remove(entry)
        removed += 1
    return removed


__all__ = ["View", "create", "sweep_stale"]
