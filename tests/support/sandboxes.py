"""What runs inside a sandbox, seen from the host's /proc (tests run on the runtime's machine)."""

from __future__ import annotations

import os
from pathlib import Path

KERNELS = ("session_kernel.py", "session_kernel.js")


def _cmdline(pid: int | str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def descendants(root: int) -> set[int]:
    """``root`` and every process below it (a sandbox: its bwrap's pid)."""
    parents = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        parents[int(name)] = int(stat.rsplit(")", 1)[1].split()[1])
    inside, grew = {root}, True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in inside} - inside
        inside |= found
        grew = bool(found)
    return inside


def kernels_in(sandbox_pid: int) -> list[str]:
    """The session kernels running in a sandbox (``session_kernel.py``, ``session_kernel.js``), sorted."""
    found = []
    for pid in descendants(sandbox_pid):
        cmdline = _cmdline(pid)
        named = [name for name in KERNELS if name.encode() in cmdline]
        if not named and _comm(pid) == "session_kernel":  # the Python kernel forked early by the agent
            named = ["session_kernel.py"]
        found += named
    return sorted(found)


def _comm(pid: int | str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def processes_running(marker: str) -> list[int]:
    """Processes on the machine whose command line holds ``marker``."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and marker.encode() in _cmdline(p)]


def processes_of(uid: int) -> list[int]:
    """Processes on the machine running as ``uid`` (a sandbox's identity, identities.py)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        uids = next((line.split()[1:] for line in status.splitlines() if line.startswith("Uid:")), [])
        if str(uid) in uids:
            found.append(int(name))
    return found
