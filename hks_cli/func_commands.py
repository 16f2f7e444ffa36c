"""The ``hks-func`` subcommands that act on one deployed function (or list them)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import sys
import time
from pathlib import Path

from .common import api_from, require_project
from .deploy import read_function_dir, wait_ready
from .errors import NOT_FOUND, UNREACHABLE, USAGE, CliError
from .output import emit_json, info, table

DURATION = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _target(args) -> tuple:
    api = api_from(args)
    project = require_project(api)
    name = getattr(args, "name", None) or read_function_dir(Path(args.path)).name
    return api, project, name, f"/projects/{project}/functions/{name}"


# Invoke -----------------------------------------------------------------------------------------


def _request_body(data: str | None) -> str:
    if data is None:
        return ""
    if data == "-":
        return sys.stdin.read()
    if data.startswith("@"):
        try:
            return Path(data[1:]).read_text()
        except OSError as exc:
            raise CliError(f"cannot read {data[1:]}: {exc.strerror}", USAGE) from exc
    return data


def _headers(raw: list[str], body: str) -> dict[str, str]:
    headers = {}
    for item in raw:
        key, sep, value = item.partition(":")
        if not sep or not key.strip():
            raise CliError(f"header {item!r} is not 'Name: value'", USAGE)
        headers[key.strip()] = value.strip()
    if body and not any(k.lower() == "content-type" for k in headers):
        stripped = body.lstrip()
        headers["Content-Type"] = "application/json" if stripped[:1] in ("{", "[") else "text/plain"
    return headers


def cmd_invoke(args) -> int:
    api, _, name, base = _target(args)
    body = _request_body(args.data)
    method = (args.method or ("POST" if args.data is not None else "GET")).upper()
    payload = {"method": method, "path": args.route, "headers": _headers(args.header, body), "body": body}
    answer = api.post(f"{base}/invoke", json=payload, timeout=330)
    if args.output == "json":
        emit_json(answer)
        return 0
    if answer["body_encoding"] == "base64":
        sys.stdout.buffer.write(base64.b64decode(answer["body"]))
    else:
        sys.stdout.write(answer["body"] + ("" if answer["body"].endswith("\n") else "\n"))
    info(
        f"HTTP {answer['status']} from {name} in {answer['duration_ms']:.0f} ms"
        + (" (body truncated)" if answer["truncated"] else "")
    )
    return 0 if answer["status"] < 500 else 1


# Logs -------------------------------------------------------------------------------------------


def parse_since(value: str | None) -> str | None:
    if not value:
        return None
    match = DURATION.match(value.strip())
    if match:
        moment = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=int(match.group(1)) * UNITS[match.group(2)])
        return moment.isoformat()
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).isoformat()
    except ValueError as exc:
        raise CliError(f"--since {value!r}: use 10m, 2h, 1d or an ISO time", USAGE) from exc


def _print_line(line: dict, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(line), flush=True)
    else:
        stamp = line["timestamp"][:23].replace("T", " ")
        print(f"{stamp} {line['instance']} {line['stream']}: {line['text']}", flush=True)


def cmd_logs(args) -> int:
    api, _, _, base = _target(args)
    params = {"tail": args.tail}
    since = parse_since(args.since)
    if since:
        params["since"] = since
    as_json = args.output == "json"
    if not args.follow:
        lines = api.get(f"{base}/logs", params=params, timeout=60)
        if as_json:
            emit_json(lines)
            return 0
        for line in lines:
            _print_line(line, as_json=False)
        return 0
    # Follow the portal's stream; when the connection breaks after it was open, go on from the newest
    # line printed (the portal gives only what came after it).
    opened = []
    while True:
        try:
            for item in api.stream_lines(
                f"{base}/logs/stream", params=params, on_open=lambda: opened.append(1)
            ):
                if "error" in item:
                    print(f"hks-func: {item['error']}", file=sys.stderr, flush=True)
                    continue
                _print_line(item, as_json=as_json)
                params = {"since": item["timestamp"]}
        except CliError as exc:
            if exc.code != UNREACHABLE or not opened:
                raise
            print(f"hks-func: {exc}; reconnecting", file=sys.stderr, flush=True)
        time.sleep(1)


# Listing and reading ----------------------------------------------------------------------------


def cmd_list(args) -> int:
    api = api_from(args)
    project = require_project(api)
    functions = api.get(f"/projects/{project}/functions")
    if args.output == "json":
        emit_json(functions)
        return 0
    table(
        functions,
        ["name", "runtime", "status", "current_revision", "url"],
        empty=f"No functions in {project} yet: hks-func create -l node NAME && hks-func deploy",
    )
    return 0


def _state_text(function: dict) -> str:
    """The dashboard's words for the API's ``state`` (older portals have none: fall back to status)."""
    state = function.get("state") or function["status"]
    text = state.replace("-", " ")
    reason = function.get("state_reason") or ""
    return text + (f": {reason}" if reason and state != "failed" else "")


def cmd_describe(args) -> int:
    api, _, _, base = _target(args)
    function = api.get(base)
    if args.output == "json":
        emit_json(function)
        return 0
    scale, resources = function["scale"], function["resources"]
    rows = [
        ("Name", f"{function['project']}/{function['name']}"),
        ("Runtime", f"{function['runtime']} ({function['kind']})"),
        (
            "Status",
            function["status"] + (f": {function['status_message']}" if function["status_message"] else ""),
        ),
        ("State", _state_text(function)),
        ("URL", function["url"] or "-"),
        ("Revision", function["current_revision"] or "-"),
        ("Replicas", function["replicas"]),
        ("Scale", f"min {scale['min']}, max {scale['max']}, target {scale['target']}"),
        ("Resources", f"{resources['cpu_millicores']}m CPU, {resources['memory_mb']} MiB"),
        ("Timeout", f"{function['timeout_seconds']} s"),
        ("Env", ", ".join(sorted(function["env"])) or "-"),
        ("Secrets", ", ".join(function.get("secrets", [])) or "-"),
        ("Deployed", function["deployed_at"] or "-"),
    ]
    for label, value in rows:
        print(f"{label + ':':<11}{value}")
    return 0


def cmd_revisions(args) -> int:
    api, _, _, base = _target(args)
    revisions = api.get(f"{base}/revisions")
    if args.output == "json":
        emit_json(revisions)
        return 0
    for rev in revisions:
        rev["current"] = "*" if rev["current"] else ""
        rev["hash"] = rev["content_hash"][:12]
        rev["build"] = (rev.get("build") or {}).get("status", "")
        rev["created"] = str(rev["created_at"])[:19].replace("T", " ")
    table(
        revisions,
        ["current", "number", "name", "hash", "build", "created", "created_by"],
        empty="No revisions yet: hks-func deploy",
    )
    return 0


# Changing ---------------------------------------------------------------------------------------


def cmd_rollback(args) -> int:
    api, _, name, base = _target(args)
    api.post(f"{base}/revisions/{args.revision}/rollback")
    if args.no_wait:
        print(f"Rolling {name} back to revision {args.revision}.")
        return 0
    function = wait_ready(api, base, args.revision, timeout=args.timeout)
    if args.output == "json":
        emit_json(function)
    else:
        print(f"{name} serves revision {args.revision} again: {function['url']}")
    return 0


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise CliError("refusing to delete without confirmation: pass --yes", USAGE)
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def cmd_delete(args) -> int:
    api, project, name, base = _target(args)
    if not args.yes and not _confirm(f"Delete {project}/{name} and everything it runs?"):
        print("Nothing deleted.")
        return 1
    api.delete(base)
    deadline = time.monotonic() + 120
    while not args.no_wait and time.monotonic() < deadline:
        try:
            if api.get(base)["status"] == "deleted":
                break
        except CliError as exc:
            if exc.code == NOT_FOUND:
                break
            raise
        time.sleep(0.3)
    if args.output == "json":
        emit_json({"function": name, "project": project, "deleted": True})
    else:
        print(f"Deleted {project}/{name}.")
    return 0


def _parse_pairs(pairs: list[str]) -> dict[str, str]:
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"{pair!r} is not K=V", USAGE)
        parsed[key] = value
    return parsed


SECRET_MASK = "********"


def cmd_env(args) -> int:
    if not args.env_command:
        raise CliError("choose: hks-func env set [--secret] K=V... | unset K... | list", USAGE)
    api, _, name, base = _target(args)
    function = api.get(base)
    env, secrets = dict(function["env"]), list(function.get("secrets", []))
    change: dict = {}
    if args.env_command == "set" and args.secret:
        change["secrets"] = _parse_pairs(args.pairs)
    elif args.env_command == "set":
        env.update(_parse_pairs(args.pairs))
        change["env"] = env
    elif args.env_command == "unset":
        missing = [key for key in args.keys if key not in env and key not in secrets]
        if missing:
            info(f"not set, nothing to remove: {', '.join(missing)}")
        change["env"] = {key: value for key, value in env.items() if key not in args.keys}
        removed = {key: None for key in args.keys if key in secrets}
        if removed:
            change["secrets"] = removed
    if change:
        function = api.patch(base, json=change)
        env, secrets = function["env"], function.get("secrets", [])
    if args.output == "json":  # name -> value, a secret's value masked as in the text form
        emit_json({**env, **{key: SECRET_MASK for key in secrets}})
    else:
        for key in sorted(env):
            print(f"{key}={env[key]}")
        for key in sorted(secrets):
            print(f"{key}={SECRET_MASK} (secret)")
        if change:
            info(f"{name} is redeployed with the new environment.")
    return 0
