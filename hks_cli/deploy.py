"""``hks-func deploy``: upload the directory, follow the build log, wait for the new revision to serve.

Progress and the build log go to stderr as they happen; the URL (or, with ``--output json``, a summary
with build and start times measured here) goes to stdout.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .client import Api
from .errors import CONFLICT, DEPLOY_FAILED, NOT_FOUND, USAGE, CliError
from .output import info
from .packing import pack

FAILING_LINE_HINTS = ("error", "err!", "failed", "traceback", "exception", "not found", "cannot")


@dataclass
class FunctionDir:
    path: Path
    name: str
    runtime: str


def read_function_dir(path: Path) -> FunctionDir:
    func_yaml = path / "func.yaml"
    if not func_yaml.is_file():
        raise CliError(
            f"no func.yaml in {path.resolve()}: run this in a function directory or pass --path", USAGE
        )
    try:
        data = yaml.safe_load(func_yaml.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CliError(f"{func_yaml} is not valid YAML: {exc}", USAGE) from exc
    name, runtime = str(data.get("name") or ""), str(data.get("runtime") or "")
    if not name or not runtime:
        raise CliError(f"{func_yaml} needs a name and a runtime", USAGE)
    return FunctionDir(path=path, name=name, runtime=runtime)


def failing_lines(log: str, limit: int = 20) -> list[str]:
    """The lines of a failed build worth showing: those that look like errors, else the last ones."""
    lines = [line for line in log.splitlines() if line.strip()]
    marked = [line for line in lines if any(h in line.lower() for h in FAILING_LINE_HINTS)]
    return (marked or lines)[-limit:]


def follow_build(api: Api, base: str, build_id: int, *, quiet: bool, timeout: float) -> dict:
    """Print the build log as it grows; return the last log slice (with ``status``) once finished."""
    offset, deadline, text = 0, time.monotonic() + timeout, ""
    while True:
        chunk = api.get(f"{base}/builds/{build_id}/log", params={"offset": offset})
        if chunk["offset"] < offset:  # a retried build starts its log again
            info("(the build restarted)")
        text = text[: chunk["offset"]] + chunk["text"]
        if chunk["text"] and not quiet:
            sys.stderr.write("".join(f"  | {line}\n" for line in chunk["text"].splitlines()))
            sys.stderr.flush()
        offset = chunk["next_offset"]
        if chunk["finished"]:
            return {**chunk, "log": text}
        if time.monotonic() > deadline:
            raise CliError(
                f"the build did not finish within {timeout:g} s (it goes on in the portal)", DEPLOY_FAILED
            )
        time.sleep(0.3)


def wait_ready(api: Api, base: str, revision: int, *, timeout: float) -> dict:
    """Poll the function until ``revision`` serves traffic; a failed deploy raises with the reason."""
    deadline = time.monotonic() + timeout
    while True:
        function = api.get(base)
        if function["status"] == "ready" and function.get("current_revision") == revision:
            return function
        if function["status"] == "failed":
            raise CliError(
                f"deploy failed: {function.get('status_message') or 'no reason given'}", DEPLOY_FAILED
            )
        if function["status"] in ("deleting", "deleted"):
            raise CliError(f"function {function['name']} is being deleted", DEPLOY_FAILED)
        if time.monotonic() > deadline:
            raise CliError(
                f"revision {revision} was not ready within {timeout:g} s (status: {function['status']})",
                DEPLOY_FAILED,
            )
        time.sleep(0.2)


def check_name_free(api: Api, base: str, project: str, directory: FunctionDir) -> None:
    """A function of another runtime already holding the name is a conflict, said before uploading."""
    try:
        existing = api.get(base)
    except CliError as exc:
        if exc.code == NOT_FOUND:
            return
        raise
    if existing["runtime"] != directory.runtime:
        raise CliError(
            f"the name {directory.name!r} is taken in {project} by a {existing['runtime']} function; "
            "rename this one in func.yaml, or delete the other with `hks-func delete`",
            CONFLICT,
        )


def deploy(
    api: Api, project: str, directory: FunctionDir, *, quiet: bool, timeout: float, wait: bool
) -> dict:
    archive, content_hash = pack(directory.path)
    base = f"/projects/{project}/functions/{directory.name}"
    check_name_free(api, base, project, directory)
    info(f"Uploading {directory.name} ({directory.runtime}, {len(archive)} bytes) to {project}...")
    started = time.monotonic()
    result = api.post(
        f"{base}/revisions",
        params={"create": "true", "runtime": directory.runtime},
        content=archive,
        headers={"Content-Type": "application/gzip"},
        timeout=120,
    )
    revision = result["revision"]
    summary = {
        "function": directory.name,
        "project": project,
        "revision": revision["number"],
        "content_hash": content_hash,
        "created": result.get("created_function", False),
        "reused_build": bool(revision.get("artifact")),
        "build_seconds": 0.0,
        "start_seconds": 0.0,
    }
    build = revision.get("build")
    if build and not summary["reused_build"]:
        info(f"Building revision {revision['number']}...")
        finished = follow_build(api, base, build["id"], quiet=quiet, timeout=timeout)
        if finished["status"] != "succeeded":
            shown = "\n".join(f"  {line}" for line in failing_lines(finished["log"]))
            raise CliError(f"the build of revision {revision['number']} failed:\n{shown}", DEPLOY_FAILED)
    else:
        info("Unchanged source: reusing the previous build.")
    built = time.monotonic()
    summary["build_seconds"] = round(built - started, 3)
    if not wait:
        return summary
    info("Starting...")
    function = wait_ready(api, base, revision["number"], timeout=timeout)
    summary["start_seconds"] = round(time.monotonic() - built, 3)
    summary["url"] = function.get("url", "")
    return summary
