"""Following a function's logs without end: the one loop behind the live-log websocket and the API's stream.

``backend.logs(follow=True)`` ends when there is nothing to follow (no instance yet, a runtime restart, a
pod gone); ``follow`` starts it again after a pause. A stream followed again starts at the newest timestamp
already given, and backends give lines at that moment again (Kubernetes' ``sinceTime`` has whole seconds):
older ones are skipped, and of the ones at that very moment, as many as were given. Within one stream
nothing is skipped - lines of a burst share a timestamp, and several instances' lines need not be in order.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from functions.backends import BackendError

logger = logging.getLogger(__name__)

INITIAL_TAIL = 200
RESUME_SECONDS = 1.0  # pause before following a stream again after it ended


def stamp(line) -> str:
    """A line's time as the websocket and the API's stream give it: UTC, microseconds, ``Z``."""
    return line.timestamp.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class StreamTrouble:
    """The stream failed and will be tried again; said once per distinct message."""

    message: str


async def snapshot(backend, ref, *, tail: int, since=None) -> list:
    """The newest ``tail`` lines (after ``since``, when given), oldest first, without following: what the
    overview, the log download and the API's ``/logs`` show."""
    return [line async for line in backend.logs(ref, since=since, tail=tail, follow=False)]


async def follow(backend, ref, *, since=None, tail: int | None = INITIAL_TAIL) -> AsyncIterator:
    """Yield the function's log lines (``LogLine``) as they come, and ``StreamTrouble`` when it breaks.

    With ``since`` the caller has every line up to that moment (a reconnect): only later ones are given.
    Otherwise the newest ``tail`` lines come first.
    """
    first_tail = tail = None if since else tail
    newest, given_at_newest = since, collections.Counter()
    caller_has_newest = since is not None
    last_error = ""
    while True:
        resume_at, replay = newest, collections.Counter(given_at_newest)
        try:
            async for line in backend.logs(ref, since=resume_at, tail=tail, follow=True):
                key = (line.instance, line.stream, line.text)
                if resume_at is not None and line.timestamp <= resume_at:
                    if line.timestamp < resume_at or caller_has_newest:
                        continue
                    if replay[key] > 0:
                        replay[key] -= 1
                        continue
                if newest is None or line.timestamp > newest:
                    newest, given_at_newest = line.timestamp, collections.Counter()
                    caller_has_newest = False
                if line.timestamp == newest:
                    given_at_newest[key] += 1
                yield line
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken stream must not end the follower
            message = exc.message if isinstance(exc, BackendError) else "log stream failed"
            if not isinstance(exc, BackendError):
                logger.exception("log stream of %s failed", ref)
            if message != last_error:
                yield StreamTrouble(f"{message}; retrying")
            last_error = message
        tail = None if newest is not None else first_tail
        await asyncio.sleep(RESUME_SECONDS)


SEARCH_LIMIT = 200
STREAMS = ("stdout", "stderr", "request", "system")


@dataclass(frozen=True)
class SearchResult:
    lines: list  # LogLine, oldest first: the newest ``limit`` that match
    more: bool  # older matching lines exist (ask again with ``before`` = the first line's time)


async def search(
    backend,
    ref,
    *,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    before: dt.datetime | None = None,
    streams: tuple[str, ...] = (),
    text: str = "",
    limit: int = SEARCH_LIMIT,
) -> SearchResult:
    """Lines between ``start`` and ``end`` (and older than ``before``: "load older"), of the given
    streams, containing ``text`` (case-insensitive). The backend reads from ``start``; the rest is
    filtered here, so every backend that honours ``since`` can be searched."""
    needle = text.lower()
    upto = min((t for t in (end, before) if t is not None), default=None)
    matched = []
    async for line in backend.logs(ref, since=start, follow=False):
        if upto is not None and line.timestamp >= upto:
            continue
        if streams and line.stream not in streams:
            continue
        if needle and needle not in line.text.lower():
            continue
        matched.append(line)
    return SearchResult(lines=matched[-limit:] if limit else matched, more=len(matched) > limit)
