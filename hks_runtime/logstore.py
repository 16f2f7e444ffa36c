"""Per-function log files: every instance's stdout/stderr as ndjson records, bounded and rotated.

A record is ``{"ts": ISO-8601 UTC, "instance": ..., "stream": ..., "text": ...}``, the stream one of
"stdout", "stderr", "system" or "request".
The gateway writes one ``request`` record per request it serves (``FunctionLog.request``): method, path
without its query, status, duration, revision and instance - never a header or a body - as Knative's
queue-proxy and Cloud Run log each request. Those are off the request path: ``request`` only counts the line
against the rate limit and queues it; the queue is written in one piece ``REQUEST_FLUSH_SECONDS`` later
(or at ``flush()``), so a busy function costs one write per interval, not one per request.
Bounds, so that a function printing in a loop cannot exhaust the daemon's memory or the disk:

- a line longer than ``max_line`` bytes is cut (and marked), a partial line is never buffered past it;
- each function has a token bucket of ``rate`` lines per second (burst ``burst``); lines over it are dropped
  and counted, and one ``system`` record per second says how many were dropped;
- a function's file is rotated at ``max_bytes`` and one previous file is kept (so at most 2 x max_bytes).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

MAX_LINE = 8 * 1024
REQUEST_FLUSH_SECONDS = 0.05  # request lines queued this long at most before they are written together


def parse_ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


class _Bucket:
    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class FunctionLog:
    """The log of one function: an append-only file with one rotated predecessor, plus live followers."""

    def __init__(self, path: Path, *, max_bytes: int, rate: float, burst: float):
        self.path = path
        self.max_bytes = max_bytes
        self.bucket = _Bucket(rate, burst)
        self.dropped = 0
        self.dropped_reported_at = 0.0
        self.followers: set[asyncio.Queue] = set()
        self._requests: list[tuple[str, str, str]] = []  # (ts, instance, text): queued, not written
        self._last: dt.datetime | None = None  # the newest timestamp given: each record gets a later one
        self._flush_handle: asyncio.TimerHandle | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the function's life

    def write(self, instance: str, stream: str, text: str, *, limited: bool = True) -> None:
        if limited and not self.bucket.take():
            self.dropped += 1
            self._report_dropped(instance)
            return
        self._append({"ts": self._stamp(), "instance": instance, "stream": stream, "text": text})

    def request(
        self, *, method: str, path: str, status: int, millis: float, revision: str, instance: str
    ) -> None:
        """The platform's line for one request; under the same rate limit as what the function prints.

        Queued and written with the others of the next ``REQUEST_FLUSH_SECONDS`` (at once without a running
        event loop)."""
        if not self.bucket.take():
            self.dropped += 1
            self._report_dropped(instance or "-")
            return
        self._requests.append(
            (self._stamp(), instance or "-", request_text(method, path, status, millis, revision, instance))
        )
        if self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._flush_handle = loop.call_later(REQUEST_FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Write the queued request lines (each with the time it was queued; one write for all of them)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        queued, self._requests = self._requests, []
        if not queued:
            return
        records = [
            {"ts": ts, "instance": inst, "stream": "request", "text": text} for ts, inst, text in queued
        ]
        self._append_all(records)

    def _report_dropped(self, instance: str) -> None:
        now = time.monotonic()
        if now - self.dropped_reported_at >= 1.0:
            self.dropped_reported_at = now
            text = f"log rate limit: {self.dropped} line(s) dropped"
            self._append({"ts": self._stamp(), "instance": instance, "stream": "system", "text": text})

    def _stamp(self) -> str:
        """Now, or a microsecond after the previous record when the clock has not moved on: no two records
        of a log share a timestamp, so paging by time (``before``) never skips one."""
        now = dt.datetime.now(dt.UTC)
        if self._last is not None and now <= self._last:
            now = self._last + dt.timedelta(microseconds=1)
        self._last = now
        return now.isoformat(timespec="microseconds").replace("+00:00", "Z")

    def _append(self, record: dict) -> None:
        if self._requests:  # keep the file in order: queued request lines before what comes after them
            self.flush()
        self._append_all([record])

    def _append_all(self, records: list[dict]) -> None:
        if self._file.closed:  # the function was deleted while a line of it was on its way
            return
        self._file.write("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
        self._file.flush()
        if self._file.tell() >= self.max_bytes:
            self._rotate()
        for queue in list(self.followers):
            for record in records:
                if queue.qsize() < 10_000:  # a slow follower loses lines rather than growing without bound
                    queue.put_nowait(record)

    def _rotate(self) -> None:
        self._file.close()
        os.replace(self.path, self.path.with_suffix(".log.1"))
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def snapshot(self, *, since: dt.datetime | None = None, tail: int | None = None) -> list[dict]:
        """What the files hold (request lines still queued are not in it: ``flush()`` first for those)."""
        records = []
        for path in (self.path.with_suffix(".log.1"), self.path):
            records.extend(_read_records(path, since))
        if tail is not None:
            records = records[-tail:] if tail > 0 else []
        return records

    def close(self) -> None:
        self.flush()
        self._file.close()
        for queue in list(self.followers):
            queue.put_nowait(None)  # tells a follower the log is gone


def request_text(method: str, path: str, status: int, millis: float, revision: str, instance: str) -> str:
    """``GET /orders 200 12.3 ms revision=hello-00002 instance=…``: no query string (it may hold tokens)."""
    bare = path.split("?", 1)[0] or "/"
    return f"{method} {bare} {status} {millis:.1f} ms revision={revision} instance={instance or '-'}"


def _read_records(path: Path, since: dt.datetime | None) -> list[dict]:
    try:
        handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
    except FileNotFoundError:
        return []
    records = []
    with handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash mid-write
            if since is None or parse_ts(record["ts"]) >= since:  # inclusive, as Kubernetes' sinceTime
                records.append(record)
    return records


class LogStore:
    """Every function's log under ``root/<namespace>/<function>.log``."""

    def __init__(
        self, root: Path, *, max_bytes: int = 4 * 1024 * 1024, rate: float = 500, burst: float = 2000
    ):
        self.root = root
        self.options = {"max_bytes": max_bytes, "rate": rate, "burst": burst}
        self._logs: dict[tuple[str, str], FunctionLog] = {}

    def get(self, namespace: str, name: str) -> FunctionLog:
        key = (namespace, name)
        if key not in self._logs:
            self._logs[key] = FunctionLog(self.root / namespace / f"{name}.log", **self.options)
        return self._logs[key]

    def remove(self, namespace: str, name: str) -> None:
        log = self._logs.pop((namespace, name), None)
        if log is not None:
            log.close()
        for suffix in (".log", ".log.1"):
            (self.root / namespace / f"{name}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        for log in self._logs.values():
            log.close()
        self._logs.clear()


class LinePump(asyncio.Protocol):
    """Reads one pipe of an instance without threads, cutting it into bounded lines."""

    def __init__(self, write: Callable[[str], None], on_eof: Callable[[], None], max_line: int = MAX_LINE):
        self.write, self.on_eof, self.max_line = write, on_eof, max_line
        self.buffer = b""
        self.cut = False  # the current line was already emitted cut; drop the rest of it

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            index = self.buffer.find(b"\n")
            if index < 0:
                break
            line, self.buffer = self.buffer[:index], self.buffer[index + 1 :]
            if not self.cut:
                self._emit(line)
            self.cut = False
        if len(self.buffer) > self.max_line:
            if not self.cut:
                self._emit(self.buffer[: self.max_line], truncated=True)
            self.buffer, self.cut = b"", True

    def _emit(self, line: bytes, truncated: bool = False) -> None:
        text = line[: self.max_line].decode("utf-8", errors="replace").rstrip("\r")
        self.write(text + (" [truncated]" if truncated or len(line) > self.max_line else ""))

    def eof_received(self):
        if self.buffer and not self.cut:
            self._emit(self.buffer)
        self.buffer = b""
        return False

    def connection_lost(self, exc) -> None:
        self.on_eof()
