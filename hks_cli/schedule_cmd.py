"""``hks-func schedule set|list|remove|pause|resume|preview``: cron schedules of a function.

Self-contained: ``add_schedule_commands(subparsers, client_factory)`` adds the ``schedule`` command to an
argparse subparsers object. ``client_factory`` returns (called with no arguments, or with the parsed
arguments if it takes one) a client with ``get/post/patch/delete(path, json=...)`` returning parsed JSON
for paths under ``/api/v1`` and raising on an error answer; a ``config.project`` on it is the default
project. Handlers are stored as ``args.handler`` and return the exit code.

Cron dialect: five fields (minute hour day-of-month month day-of-week) or @hourly, @daily, @midnight,
@weekly, @monthly, @yearly, @annually — evaluated in the schedule's IANA time zone (``--tz``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from pathlib import Path

DIALECT = (
    "CRON is five fields (minute hour day-of-month month day-of-week) or @hourly, @daily, @midnight, "
    "@weekly, @monthly, @yearly, @annually; it is evaluated in --tz (an IANA zone, default UTC)."
)
USAGE_ERROR = 2


class _UsageError(Exception):
    pass


def add_schedule_commands(subparsers, client_factory) -> None:
    schedule = subparsers.add_parser(
        "schedule", help="call the function on a cron schedule", description=DIALECT
    )
    sub = schedule.add_subparsers(dest="schedule_command", metavar="COMMAND", required=True)

    set_ = _command(
        sub, "set", "create a schedule, or change the options given of an existing one", _set, client_factory
    )
    set_.add_argument("schedule", help="schedule name (a DNS label, unique per function)")
    set_.add_argument("--cron", help="when to run (required for a new schedule)")
    set_.add_argument("--tz", "--timezone", dest="timezone", help="IANA time zone (new schedules: UTC)")
    set_.add_argument("-X", "--method", help="HTTP method (new schedules: POST)")
    set_.add_argument("--route", help="path and query on the function (new schedules: /)")
    set_.add_argument(
        "-H",
        "--header",
        action="append",
        metavar="'K: V'",
        help="request header (repeat; replaces all headers)",
    )
    set_.add_argument("-d", "--data", help="request body ('@FILE' reads a file)")
    set_.add_argument(
        "--concurrency",
        choices=["Allow", "Forbid", "Replace"],
        help="when a run is still going at the next due time (new schedules: Allow)",
    )
    deadline = set_.add_mutually_exclusive_group()
    deadline.add_argument(
        "--deadline", type=int, metavar="SECONDS", help="fire a missed run only if at most this late"
    )
    deadline.add_argument("--no-deadline", action="store_true", help="remove the starting deadline")
    state = set_.add_mutually_exclusive_group()
    state.add_argument("--paused", action="store_true", help="save it paused")
    state.add_argument("--enabled", action="store_true", help="save it enabled")

    listing = _command(
        sub, "list", "list the function's schedules, or one schedule's run history", _list, client_factory
    )
    listing.add_argument("--runs", metavar="SCHEDULE", help="show this schedule's run history")
    listing.add_argument("--limit", type=int, default=20, help="history entries (default 20)")

    for name, verb in (("remove", "delete"), ("pause", "pause"), ("resume", "resume")):
        parser = _command(sub, name, f"{verb} a schedule", _action, client_factory)
        parser.add_argument("schedule", help="schedule name")
        parser.set_defaults(verb=verb)

    preview = _command(
        sub,
        "preview",
        "show the next five run times of an expression",
        _preview,
        client_factory,
        function=False,
    )
    preview.add_argument("cron", help="the cron expression (quote it)")
    preview.add_argument("--tz", "--timezone", dest="timezone", default="UTC", help="IANA time zone")


def _command(sub, name, help_text, handler, client_factory, *, function: bool = True):
    parser = sub.add_parser(name, help=help_text, description=f"{help_text}. {DIALECT}")
    if function:
        parser.add_argument(
            "-f",
            "--function",
            "--name",
            dest="function",
            help="function name (default: the name in ./func.yaml)",
        )
        parser.add_argument(
            "-p",
            "--path",
            dest="function_path",
            default=".",
            help="function directory holding func.yaml (default: .)",
        )
    # SUPPRESS keeps a --project given before the subcommand (or none) from being overwritten here.
    parser.add_argument("--project", default=argparse.SUPPRESS, help="project (default: the selected one)")
    parser.add_argument("-o", "--output", choices=["text", "json"], default="text")
    parser.set_defaults(handler=lambda args: _run(handler, args, client_factory))
    return parser


def _run(handler, args, client_factory) -> int:
    try:
        client = _client(client_factory, args)
        return handler(args, client, _project(args, client)) or 0
    except _UsageError as exc:
        print(f"hks-func schedule: error: {exc}", file=sys.stderr)
        return USAGE_ERROR


def _client(client_factory, args):
    takes_args = len(inspect.signature(client_factory).parameters) > 0
    return client_factory(args) if takes_args else client_factory()


def _project(args, client) -> str:
    project = (
        getattr(args, "project", None)
        or getattr(getattr(client, "config", None), "project", "")
        or os.environ.get("HKS_PROJECT", "")
    )
    if not project:
        raise _UsageError("no project: pass --project or select one with `hks project select NAME`")
    return project


def _function(args) -> str:
    if args.function:
        return args.function
    path = Path(args.function_path) / "func.yaml"
    try:
        import yaml

        name = (yaml.safe_load(path.read_text()) or {}).get("name")
    except (OSError, ValueError, AttributeError) as exc:
        raise _UsageError(
            f"no function name: pass --function or run in a directory with func.yaml ({exc})"
        ) from exc
    if not name:
        raise _UsageError(f"{path} has no name: pass --function")
    return str(name)


def _base(args, project: str) -> str:
    return f"/projects/{project}/functions/{_function(args)}/schedules"


# set ----------------------------------------------------------------------------------------------


def _set(args, client, project: str) -> int:
    base = _base(args, project)
    changes = _changes(args)
    existing = {s["name"] for s in client.get(base)}
    if args.schedule in existing:
        if not changes:
            raise _UsageError("nothing to change: give --cron, --tz or another option")
        schedule = client.patch(f"{base}/{args.schedule}", json=changes)
        verb = "Updated"
    else:
        if "cron" not in changes:
            raise _UsageError("a new schedule needs --cron")
        schedule = client.post(base, json={"name": args.schedule, **changes})
        verb = "Created"
    if args.output == "json":
        print(json.dumps(schedule, indent=2))
    else:
        state = "" if schedule["enabled"] else " (paused)"
        print(
            f"{verb} schedule {schedule['name']}{state}: {schedule['cron']} in {schedule['timezone']} — "
            f"{schedule['explanation']}"
        )
        print(
            f"  {schedule['method']} {schedule['path']}, concurrency {schedule['concurrency_policy']}, "
            f"next run {_when(schedule['next_run_at'])}"
        )
    return 0


def _changes(args) -> dict:
    changes = {
        "cron": args.cron,
        "timezone": args.timezone,
        "method": args.method and args.method.upper(),
        "path": args.route,
        "concurrency_policy": args.concurrency,
    }
    changes = {key: value for key, value in changes.items() if value is not None}
    if args.header is not None:
        changes["headers"] = _headers(args.header)
    if args.data is not None:
        changes["body"] = Path(args.data[1:]).read_text() if args.data.startswith("@") else args.data
    if args.deadline is not None:
        changes["starting_deadline_seconds"] = args.deadline
    elif args.no_deadline:
        changes["starting_deadline_seconds"] = None
    if args.paused or args.enabled:
        changes["enabled"] = bool(args.enabled)
    return changes


def _headers(values: list[str]) -> dict[str, str]:
    headers = {}
    for value in values:
        key, sep, rest = value.partition(":")
        if not sep or not key.strip():
            raise _UsageError(f"header {value!r} is not 'Name: value'")
        headers[key.strip()] = rest.strip()
    return headers


# list, remove, pause, resume, preview ------------------------------------------------------------


def _list(args, client, project: str) -> int:
    base = _base(args, project)
    if args.runs:
        runs = client.get(f"{base}/{args.runs}/runs?limit={args.limit}")
        if args.output == "json":
            print(json.dumps(runs, indent=2))
        else:
            _table(
                [_run_row(run) for run in runs],
                ["scheduled", "outcome", "status", "duration", "error"],
                empty=f"{args.runs} has not run yet",
            )
        return 0
    schedules = client.get(base)
    if args.output == "json":
        print(json.dumps(schedules, indent=2))
        return 0
    _table(
        [_schedule_row(s) for s in schedules],
        ["name", "cron", "timezone", "state", "next run", "last run"],
        empty="no schedules",
    )
    return 0


def _schedule_row(schedule: dict) -> dict:
    last = schedule.get("last_run")
    last_text = ""
    if last:
        code = f" {last['status_code']}" if last.get("status_code") else ""
        last_text = f"{_when(last['scheduled_for'])} {last['outcome']}{code}"
    return {
        "name": schedule["name"],
        "cron": schedule["cron"],
        "timezone": schedule["timezone"],
        "state": "enabled" if schedule["enabled"] else "paused",
        "next run": _when(schedule["next_run_at"]),
        "last run": last_text,
    }


def _run_row(run: dict) -> dict:
    duration = f"{run['duration_ms']} ms" if run.get("duration_ms") is not None else ""
    return {
        "scheduled": _when(run["scheduled_for"]),
        "outcome": run["outcome"],
        "status": run.get("status_code") or "",
        "duration": duration,
        "error": (run.get("error") or "")[:80],
    }


def _action(args, client, project: str) -> int:
    path = f"{_base(args, project)}/{args.schedule}"
    if args.verb == "delete":
        client.delete(path)
        result = {"name": args.schedule, "deleted": True}
        message = f"Removed schedule {args.schedule}."
    else:
        result = client.post(f"{path}/{args.verb}")
        message = (
            f"Schedule {args.schedule} is {'paused' if args.verb == 'pause' else 'enabled'}; "
            f"next run {_when(result['next_run_at'])}."
        )
    print(json.dumps(result, indent=2) if args.output == "json" else message)
    return 0


def _preview(args, client, project: str) -> int:
    preview = client.post(
        f"/projects/{project}/schedules/preview", json={"cron": args.cron, "timezone": args.timezone}
    )
    if args.output == "json":
        print(json.dumps(preview, indent=2))
        return 0 if preview["valid"] else 1
    if not preview["valid"]:
        print(f"hks-func schedule: invalid: {preview['error']}", file=sys.stderr)
        return 1
    print(f"{preview['cron']} in {preview['timezone']}: {preview['explanation']}")
    for when in preview["next_runs"]:
        print(f"  {when}")
    return 0


def _when(value) -> str:
    return str(value).replace("T", " ")[:19] + " UTC" if value else "-"


def _table(rows: list[dict], columns: list[str], *, empty: str) -> None:
    if not rows:
        print(empty)
        return
    cells = [
        [str(row.get(col) if row.get(col) not in (None, "") else "-") for col in columns] for row in rows
    ]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    print("  ".join(col.upper().ljust(w) for col, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(value.ljust(w) for value, w in zip(row, widths, strict=True)).rstrip())
