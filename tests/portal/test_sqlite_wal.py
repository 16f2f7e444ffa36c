"""The embedded SQLite database runs in write-ahead-log mode with synchronous=NORMAL (hks_portal/settings.py,
docs/operations.md "Backups"): a commit does not fsync a rollback journal, and readers do not wait for a
writer. PostgreSQL runs have nothing to check here."""

import os
import sqlite3

import pytest
from django.db import connection, connections


@pytest.fixture
def fresh_connection(transactional_db):
    """A new connection with the portal's settings, as each request opens one (CONN_MAX_AGE 0)."""
    if connection.vendor != "sqlite":
        pytest.skip("the embedded SQLite database only")
    fresh = type(connections["default"])(dict(connection.settings_dict))
    yield fresh
    fresh.close()


def test_every_connection_writes_ahead_and_syncs_at_checkpoints_only(fresh_connection):
    with fresh_connection.cursor() as cursor:
        assert cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cursor.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_a_reader_does_not_wait_for_a_writer_even_while_it_commits(fresh_connection):
    with fresh_connection.cursor() as cursor:
        # the lock a commit takes: with a rollback journal it shuts every reader out until the commit's fsyncs
        cursor.execute("BEGIN EXCLUSIVE")
        cursor.execute("UPDATE functions_project SET name = name")
        try:
            # timeout 0: waiting for the writer would fail at once with "database is locked"
            reader = sqlite3.connect(fresh_connection.settings_dict["NAME"], timeout=0)
            assert reader.execute("SELECT count(*) FROM functions_project").fetchone() == (0,)
            reader.close()
        finally:
            cursor.execute("ROLLBACK")


def test_a_requests_close_leaves_the_log_to_the_next_commit(fresh_connection, tmp_path):
    """In WAL mode the last connection to close checkpoints the log (fsyncs) and deletes it; the process's
    holder (hks_portal/sqlite_wal.py) keeps it open between requests, which each open and close their own."""
    from hks_portal import sqlite_wal

    path = tmp_path / "db.sqlite3"
    request = type(connections["default"])({**connection.settings_dict, "NAME": str(path)})
    try:
        with request.cursor() as cursor:
            cursor.execute("CREATE TABLE t (n integer)")
            cursor.execute("INSERT INTO t VALUES (1)")
        request.close()
        assert path.with_name("db.sqlite3-wal").exists()  # not checkpointed and deleted at the close
        reader = sqlite3.connect(path)
        assert reader.execute("SELECT n FROM t").fetchall() == [(1,)]
        reader.close()
    finally:
        request.close()
        holder = sqlite_wal._held.pop((os.getpid(), str(path)), None)
        if holder is not None:
            holder.close()
