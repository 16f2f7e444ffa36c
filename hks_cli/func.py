"""``hks-func``: create, deploy, call and manage functions in the selected project.

    hks-func create -l node|python [-t http|cloudevents] NAME
    hks-func deploy [--path DIR]
    hks-func invoke | logs | list | describe | delete | revisions | rollback | env | schedule

On a Knative project with ``func`` (or ``kn``) installed, ``build``, ``deploy``, ``invoke`` and any
subcommand hks-func does not know are passed to it (see ``passthrough``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__, passthrough, scaffold
from . import config as cfg
from .client import Api
from .common import add_output_flag, api_from, require_project, run
from .deploy import deploy, read_function_dir, wait_ready
from .errors import USAGE, CliError
from .func_commands import (
    cmd_delete,
    cmd_describe,
    cmd_env,
    cmd_invoke,
    cmd_list,
    cmd_logs,
    cmd_revisions,
    cmd_rollback,
)
from .output import emit_json, info
from .schedule_cmd import add_schedule_commands

PROG = "hks-func"
_global_url: dict[str, str | None] = {"url": None}


def client_factory() -> Api:
    """An API client for the configured portal (what ``schedule_cmd`` gets)."""
    config = cfg.load()
    if _global_url["url"]:
        config.url = _global_url["url"].rstrip("/")
    return Api(config)


def cmd_create(args) -> int:
    directory = Path(args.path) if args.path else Path(args.name)
    target = scaffold.create(name=args.name, language=args.language, kind=args.template, directory=directory)
    if args.output == "json":
        emit_json(
            {"name": args.name, "runtime": args.language, "template": args.template, "path": str(target)}
        )
        return 0
    print(f"Created {args.language} {args.template} function {args.name} in {target}")
    info(f"Next: cd {target} && {scaffold.TEST_COMMAND[args.language].split('  ')[0]} && hks-func deploy")
    return 0


def cmd_deploy(args) -> int:
    api = api_from(args)
    project = require_project(api)
    directory = read_function_dir(Path(args.path))
    summary = deploy(
        api, project, directory, quiet=args.output == "json", timeout=args.timeout, wait=not args.no_wait
    )
    if args.output == "json":
        emit_json(summary)
    elif args.no_wait:
        print(f"Revision {summary['revision']} of {directory.name} is deploying.")
    else:
        info(
            f"Revision {summary['revision']} is ready (build {summary['build_seconds']:.1f} s, "
            f"start {summary['start_seconds']:.1f} s)."
        )
        print(summary["url"])
    return 0


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="function name (default: the name in ./func.yaml)")
    parser.add_argument("-p", "--path", default=".", help="function directory holding func.yaml (default: .)")


def _add_commands(sub, own: set[str]) -> None:
    def add(name: str, handler, help_text: str, *, target: bool = True, output: bool = True):
        parser = sub.add_parser(name, help=help_text, description=help_text)
        if target:
            _add_target(parser)
        if output:
            add_output_flag(parser)
        parser.set_defaults(handler=handler)
        own.add(name)
        return parser

    create = add("create", cmd_create, "create a function directory from a template", target=False)
    create.add_argument("name", help="function name (a DNS label, e.g. my-function)")
    create.add_argument("-l", "--language", required=True, choices=scaffold.LANGUAGES)
    create.add_argument("-t", "--template", default="http", choices=scaffold.KINDS)
    create.add_argument("-p", "--path", help="directory to create (default: ./NAME)")

    dep = add(
        "deploy", cmd_deploy, "upload the function directory, build it and wait until it serves", target=False
    )
    dep.add_argument("-p", "--path", default=".", help="function directory holding func.yaml (default: .)")
    dep.add_argument("--timeout", type=float, default=900, help="seconds to wait for build and start")
    dep.add_argument("--no-wait", action="store_true", help="return once the upload is accepted")

    inv = add("invoke", cmd_invoke, "send a request to the function and print its answer")
    inv.add_argument("-d", "--data", help="request body ('@FILE' reads a file, '-' stdin)")
    inv.add_argument("-H", "--header", action="append", default=[], metavar="'K: V'", help="request header")
    inv.add_argument("-X", "--method", help="HTTP method (default: POST with --data, else GET)")
    inv.add_argument("--route", default="/", help="path and query on the function (default: /)")

    logs = add("logs", cmd_logs, "show the function's logs (a snapshot; -f to follow)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("--since", help="only lines after this: 10m, 2h, 1d or an ISO time")
    logs.add_argument("--tail", type=int, default=200, help="at most this many lines (default 200)")

    add("list", cmd_list, "list the project's functions", target=False)
    add("describe", cmd_describe, "show a function's status, URL and settings")

    delete = add("delete", cmd_delete, "delete the function and everything it runs")
    delete.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    delete.add_argument("--no-wait", action="store_true", help="return once deletion started")

    add("revisions", cmd_revisions, "list the function's revisions")
    roll = add("rollback", cmd_rollback, "send traffic to an older revision again", target=False)
    roll.add_argument("revision", type=int, help="revision number (see `hks-func revisions`)")
    _add_target(roll)
    roll.add_argument("--no-wait", action="store_true", help="return once the rollback started")
    roll.add_argument("--timeout", type=float, default=300)

    env = add(
        "env", cmd_env, "show or change the function's environment variables", target=False, output=False
    )
    env_sub = env.add_subparsers(dest="env_command", metavar="COMMAND")
    env_set = env_sub.add_parser("set", help="set variables: K=V ...")
    env_set.add_argument("pairs", nargs="+", metavar="K=V")
    env_set.add_argument(
        "--secret",
        action="store_true",
        help="store the values as secrets: write-only, encrypted at rest, masked in logs",
    )
    env_unset = env_sub.add_parser("unset", help="remove variables (plain or secret): K ...")
    env_unset.add_argument("keys", nargs="+", metavar="K")
    env_list = env_sub.add_parser("list", help="show the variables")
    for parser in (env_set, env_unset, env_list):
        parser.add_argument("--name", help="function name (default: the name in ./func.yaml)")
        parser.add_argument("-p", "--path", default=".", help="function directory holding func.yaml")
        add_output_flag(parser)


def _add_schedule(sub, own: set[str]) -> None:
    add_schedule_commands(sub, client_factory)
    own.add("schedule")


def build_parser() -> tuple[argparse.ArgumentParser, set[str]]:
    parser = argparse.ArgumentParser(prog=PROG, description="Create, deploy and manage HKS functions.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--url", help="portal URL (default: the one `hks login` saved, or $HKS_URL)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    own: set[str] = set()
    _add_commands(sub, own)
    _add_schedule(sub, own)
    return parser, own


def _try_passthrough(argv: list[str], own: set[str]) -> None:
    """Exec ``func`` when the selected project runs on Knative and the command belongs upstream."""
    if not argv or argv[0].startswith("-") or not passthrough.should_pass(argv[0], own):
        return
    tool = passthrough.upstream_tool()
    api = client_factory()
    if tool is None or not api.config.token or not api.config.project:
        return
    try:
        project = api.get(f"/projects/{api.config.project}")
    except CliError:
        if argv[0] in own:
            return  # our own command will report the problem properly
        raise
    if project.get("backend") == "knative":
        passthrough.exec_upstream(api, project, tool, argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, own = build_parser()
    try:
        _try_passthrough(argv, own)
    except CliError as exc:
        print(f"{PROG}: error: {exc.message}", file=sys.stderr)
        return exc.code
    args = parser.parse_args(argv)
    _global_url["url"] = args.url
    handler = getattr(args, "handler", None) or getattr(args, "func", None)
    if handler is None:
        parser.error(f"{args.command}: choose a subcommand (see {PROG} {args.command} --help)")
    return run(PROG, handler, args)


__all__ = ["main", "client_factory", "wait_ready", "USAGE"]


if __name__ == "__main__":
    sys.exit(main())
