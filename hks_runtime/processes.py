"""Whether a process is still there: what the sweeps of a killed daemon's leftovers (cgroups, network
namespaces, overlay views, each named after the daemon that made it) ask before removing anything."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists (another user's process included: signalling it is refused, not absent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
