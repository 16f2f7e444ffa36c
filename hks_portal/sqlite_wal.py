"""Keep the embedded SQLite database's write-ahead log open for the life of the process.

With ``CONN_MAX_AGE`` 0 (hks_portal/settings.py) every request opens and closes its own connection, and in
WAL mode the last connection to close checkpoints the log into the database - fsyncing both - and deletes
it; the next commit makes it again. Between requests that is every request. One idle connection per process
that has read the database once holds the log open (a shared lock on the file, no transaction), so a
request's close is only a close, and checkpoints happen when the log reaches SQLite's 1000 pages. It never
writes, and holds no lock that a writer or a checkpoint waits for.
"""

from __future__ import annotations

import os
import sqlite3
import threading

_held: dict[tuple[int, str], sqlite3.Connection] = {}
_lock = threading.Lock()


def hold_log_open(sender, connection, **kwargs) -> None:
    """``connection_created`` receiver: the first SQLite connection of a process opens the holder."""
    if connection.vendor != "sqlite" or connection.is_in_memory_db():
        return
    key = (os.getpid(), str(connection.settings_dict["NAME"]))  # a forked child opens its own
    if key in _held:
        return
    with _lock:
        if key not in _held:
            holder = sqlite3.connect(key[1], check_same_thread=False)
            holder.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # opens the log
            _held[key] = holder
