"""Log bounds of the runtime daemon: long lines cut, floods rate-limited, files rotated (no sandbox)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os

from hks_runtime import logstore
from hks_runtime.logstore import LinePump, LogStore


def test_a_flood_is_rate_limited_and_the_drop_is_reported(tmp_path):
    log = LogStore(tmp_path, rate=10, burst=50).get("acme", "noisy")
    for n in range(5000):
        log.write("i1", "stdout", f"line {n}")
    records = log.snapshot()
    kept = [r for r in records if r["stream"] == "stdout"]
    assert 50 <= len(kept) < 100
    assert any(r["stream"] == "system" and "dropped" in r["text"] for r in records)


def test_files_rotate_so_a_function_never_holds_more_than_two_files(tmp_path):
    log = LogStore(tmp_path, max_bytes=10_000, rate=1e9, burst=1e9).get("acme", "big")
    for n in range(2000):
        log.write("i1", "stdout", f"line {n:05d} " + "x" * 50)
    files = sorted(os.listdir(tmp_path / "acme"))
    assert files == ["big.log", "big.log.1"]
    assert sum((tmp_path / "acme" / name).stat().st_size for name in files) <= 2 * 10_000 + 200
    texts = [r["text"] for r in log.snapshot()]
    assert texts[-1].startswith("line 01999")


def test_snapshot_since_and_tail(tmp_path):
    log = LogStore(tmp_path).get("acme", "f")
    log.write("i1", "stdout", "old")
    cut = dt.datetime.now(dt.UTC)
    for text in ("a", "b", "c"):
        log.write("i1", "stderr", text)
    assert [r["text"] for r in log.snapshot(since=cut)] == ["a", "b", "c"]
    assert [r["text"] for r in log.snapshot(tail=2)] == ["b", "c"]
    assert log.snapshot(tail=0) == []


def test_long_lines_are_cut_and_partial_lines_never_buffered_past_the_cap():
    lines = []
    pump = LinePump(lines.append, lambda: None, max_line=100)
    pump.data_received(b"short\n" + b"y" * 250)
    pump.data_received(b"y" * 250 + b"\nnext\n")
    pump.eof_received()
    assert lines[0] == "short"
    assert lines[1] == "y" * 100 + " [truncated]"
    assert lines[2:] == ["next"]
    assert pump.buffer == b""


def test_follower_gets_new_records_and_a_removed_log_ends_it(tmp_path):
    store = LogStore(tmp_path)
    log = store.get("acme", "f")
    queue: asyncio.Queue = asyncio.Queue()
    log.followers.add(queue)
    log.write("i1", "stdout", "live")
    store.remove("acme", "f")
    assert queue.get_nowait()["text"] == "live"
    assert queue.get_nowait() is None
    assert not (tmp_path / "acme" / "f.log").exists()


def test_request_lines_are_written_together_after_a_moment_in_order_with_the_rest(tmp_path):
    """Off the request path: queued in the loop, written in one piece REQUEST_FLUSH_SECONDS later, always
    before a line that comes after them, each with a timestamp of its own, under the function's rate limit."""
    log = LogStore(tmp_path, rate=1, burst=100).get("acme", "busy")

    async def scenario() -> tuple[int, list[dict]]:
        for n in range(150):
            log.request(method="GET", path=f"/n{n}?k=v", status=200, millis=1.5, revision="r1", instance="i1")
            if n == 50:
                queued = len(log.snapshot())  # nothing written yet
        await asyncio.sleep(logstore.REQUEST_FLUSH_SECONDS * 3)
        log.write("i1", "stdout", "after", limited=False)
        return queued, log.snapshot()

    queued, records = asyncio.run(scenario())
    requests = [r for r in records if r["stream"] == "request"]
    assert queued == 0
    assert [r["text"].split()[1] for r in requests] == [f"/n{n}" for n in range(100)]
    assert requests[0]["text"] == "GET /n0 200 1.5 ms revision=r1 instance=i1"
    assert records[-1]["text"] == "after"
    assert any(r["stream"] == "system" and "dropped" in r["text"] for r in records)
    stamps = [r["ts"] for r in records]  # each its own time, in file order: paging by time skips none
    assert stamps == sorted(set(stamps))


def test_request_lines_still_queued_are_written_when_the_log_closes(tmp_path):
    store = LogStore(tmp_path)
    log = store.get("acme", "f")

    async def scenario() -> None:
        log.request(method="POST", path="/", status=201, millis=3, revision="r1", instance="")
        store.close()

    asyncio.run(scenario())
    assert [r["text"] for r in LogStore(tmp_path).get("acme", "f").snapshot()] == [
        "POST / 201 3.0 ms revision=r1 instance=-"
    ]


def test_a_line_for_a_log_already_closed_is_dropped_quietly(tmp_path):
    """A function deleted while its instance was still printing (or a request line on its way): the line
    goes nowhere instead of raising "I/O operation on closed file" in the daemon."""
    store = LogStore(tmp_path, rate=1, burst=1)
    log = store.get("acme", "gone")
    store.remove("acme", "gone")
    log.write("i1", "stdout", "late")
    log.write("i1", "stdout", "over the limit")  # reports the drop: a write as well
    log.request(method="GET", path="/", status=200, millis=1, revision="r1", instance="i1")
    assert not (tmp_path / "acme" / "gone.log").exists()
