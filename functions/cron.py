"""Cron expressions and time zones for schedules: parsing, validation and due-time computation.

The dialect is the one Kubernetes CronJobs accept, so a schedule means the same on both backends:

- five fields — minute, hour, day of month, month, day of week — with ``*``, lists (``1,15``), ranges
  (``1-5``), steps (``*/10``, ``0-30/5``) and names (``JAN``-``DEC``, ``SUN``-``SAT``); Sunday is 0 or 7;
- the macros ``@yearly`` (= ``@annually``), ``@monthly``, ``@weekly``, ``@daily`` (= ``@midnight``) and
  ``@hourly``;
- when both day fields are restricted (neither starts with ``*``) a day matches either of them, as in
  Vixie/Debian cron.

Extensions some crons have (a seconds field, ``L``, ``W``, ``#``, ``?``, ``@reboot``, ``@every``) are
refused with the reason. Times are evaluated by ``cronsim`` (healthchecks' evaluator) in the schedule's
IANA time zone. Across daylight-saving changes it behaves like Debian's cron: a time that does not exist
on the spring-forward day (02:30 in Europe/Berlin) runs when the clock jumps (03:00); a time that exists
twice on the fall-back day runs once, at the first occurrence. Jobs that run every hour or more often
are simply evaluated on the real clock.

Every function here is pure and takes ``now``/``after`` explicitly, so tests control the clock.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Iterator
from functools import cache

from cronsim import CronSim, CronSimError

UTC = dt.UTC

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")
_MONTHS = "JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC"
_DAYS = "SUN|MON|TUE|WED|THU|FRI|SAT"
_ATOMS = (r"\d+", r"\d+", r"\d+", rf"\d+|{_MONTHS}", rf"\d+|{_DAYS}")
# One comma-separated term: "*", "A" or "A-B", each optionally followed by "/step".
_TERM = r"(?:\*|(?:{a})(?:-(?:{a}))?)(?:/\d+)?"
_TERM_RES = [re.compile(_TERM.format(a=atom), re.IGNORECASE) for atom in _ATOMS]

# How far back the dispatcher looks first for the latest due time (see ``latest_due``).
_RECENT_WINDOW = dt.timedelta(days=1)
_MAX_COUNTED = 1000


class CronError(ValueError):
    """A cron expression or time zone that is refused; the message says why, for the user."""


def normalize_cron(expression: str) -> str:
    """The five-field form of ``expression`` (macros expanded); raises ``CronError`` with the reason."""
    text = " ".join((expression or "").split())
    if not text:
        raise CronError("the cron expression is empty")
    if text.startswith("@"):
        expanded = MACROS.get(text.lower())
        if expanded is None:
            raise CronError(f"unknown macro {text!r}; use one of {', '.join(MACROS)}")
        return expanded
    fields = text.split(" ")
    if len(fields) != 5:
        raise CronError(
            f"a cron expression has 5 fields (minute hour day-of-month month day-of-week); "
            f"{text!r} has {len(fields)}"
        )
    for name, value, term_re in zip(FIELD_NAMES, fields, _TERM_RES, strict=True):
        for term in value.split(","):
            if not term_re.fullmatch(term):
                raise CronError(f"bad {name} field {value!r}: {term!r} is not supported in this dialect")
    try:
        CronSim(text, dt.datetime(2000, 1, 1))
    except CronSimError as exc:
        raise CronError(f"{text!r}: {str(exc).lower()}") from exc
    return text.upper()


@cache
def known_zones() -> frozenset[str]:
    """Every IANA zone name this machine knows."""
    return frozenset(zoneinfo.available_timezones())


def get_zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA zone called ``name``; raises ``CronError`` for anything else (no file paths, no offsets)."""
    if name not in known_zones():
        raise CronError(f"unknown time zone {name!r}; use an IANA name such as Europe/Berlin or UTC")
    return zoneinfo.ZoneInfo(name)


def explain(expression: str) -> str:
    """A sentence describing the expression, e.g. "At 02:30 every day"."""
    return CronSim(normalize_cron(expression), dt.datetime(2000, 1, 1)).explain()


def iter_due(expression: str, zone_name: str, *, after: dt.datetime) -> Iterator[dt.datetime]:
    """Due times strictly after ``after`` (an aware datetime), in order, as aware UTC datetimes."""
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    zone = get_zone(zone_name)
    sim = CronSim(normalize_cron(expression), after.astimezone(zone))
    for local in sim:
        yield local.astimezone(UTC)


def next_runs(expression: str, zone_name: str, *, after: dt.datetime, count: int = 5) -> list[dt.datetime]:
    """The next ``count`` due times after ``after`` (fewer when the expression stops matching)."""
    due: list[dt.datetime] = []
    for when in iter_due(expression, zone_name, after=after):
        due.append(when)
        if len(due) == count:
            break
    return due


def next_run(expression: str, zone_name: str, *, after: dt.datetime) -> dt.datetime | None:
    runs = next_runs(expression, zone_name, after=after, count=1)
    return runs[0] if runs else None


def latest_due(
    expression: str, zone_name: str, *, since: dt.datetime, now: dt.datetime
) -> tuple[dt.datetime | None, int]:
    """The latest due time in ``[since, now]`` and how many due times before it in that span were passed
    over (counted up to 1000).

    The dispatcher uses it to fire only the most recent of the due times it missed (the portal was down),
    never replaying all of them. It first looks in the last day only, so a every-minute schedule that
    was stopped for a month costs a day of iteration, not a month.
    """
    start = since - dt.timedelta(seconds=1)
    window_start = now - _RECENT_WINDOW
    latest = _last_until(expression, zone_name, after=max(start, window_start), now=now)
    if latest is None and window_start > start:
        latest = _last_until(expression, zone_name, after=start, now=now)
    if latest is None:
        return None, 0
    return latest, _count_between(expression, zone_name, after=start, before=latest)


def _last_until(expression: str, zone_name: str, *, after: dt.datetime, now: dt.datetime):
    last = None
    for when in iter_due(expression, zone_name, after=after):
        if when > now:
            break
        last = when
    return last


def _count_between(expression: str, zone_name: str, *, after: dt.datetime, before: dt.datetime) -> int:
    count = 0
    for when in iter_due(expression, zone_name, after=after):
        if when >= before or count >= _MAX_COUNTED:
            break
        count += 1
    return count
