"""``hks``: sign in to the portal, choose a project, get its kubeconfig.

hks login [URL | --url URL] [--token T | --username U [--password-stdin]]   (also: hks --url URL login)
hks logout | hks whoami
hks project list | select NAME | current | kubeconfig [-o FILE] | invite USER [--role ROLE]
hks invitation list | accept PROJECT | decline PROJECT
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys
import time
import webbrowser
from pathlib import Path

from . import __version__
from . import config as cfg
from .client import Api
from .common import add_output_flag, api_from, fetch_kubeconfig, require_project, run
from .errors import NOT_FOUND, NOT_LOGGED_IN, UNREACHABLE, USAGE, CliError
from .output import emit_json, info, table

PROG = "hks"


# Login ------------------------------------------------------------------------------------------


def _client_name() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"[:100]


def _device_login(api: Api, *, open_browser: bool) -> str:
    started = api.post("/cli/login/start", auth=False, json={"client_name": _client_name()})
    url = (
        started.get("verification_url_complete")
        or f"{started['verification_url']}?code={started['user_code']}"
    )
    info(f"To sign in, open this page in a browser where you are signed in to the portal:\n\n    {url}\n")
    info(f"and approve the code  {started['user_code']}  (valid {started['expires_in'] // 60} min).")
    if open_browser:
        webbrowser.open(url)
    deadline = time.monotonic() + started["expires_in"]
    interval = max(0.2, float(started.get("interval", 2)))
    while time.monotonic() < deadline:
        try:
            response = api.request(
                "POST",
                "/cli/login/poll",
                auth=False,
                ok=(200, 428),
                json={"device_code": started["device_code"]},
            )
        except CliError as exc:
            if exc.code == UNREACHABLE:
                raise
            raise CliError(f"login failed: {exc.message}", NOT_LOGGED_IN) from exc
        if response.status_code == 200:
            return response.json()["token"]
        time.sleep(interval)
    raise CliError("the login code expired before it was approved; run `hks login` again", NOT_LOGGED_IN)


def _password_login(api: Api, username: str, password: str) -> str:
    response = api.request(
        "POST",
        "/auth/token",
        auth=False,
        ok=(200, 401),
        json={"username": username, "password": password, "client_name": _client_name()},
    )
    if response.status_code == 401:
        raise CliError("login failed: wrong user name or password", NOT_LOGGED_IN)
    return response.json()["token"]


def _read_password(args) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise CliError("--password-stdin: nothing was read from standard input", USAGE)
        return password
    return getpass.getpass(f"Password for {args.username}: ")


def _login_url(args) -> str | None:
    """``hks login URL``, ``hks login --url URL`` and ``hks --url URL login`` all choose the portal."""
    given = {url.rstrip("/") for url in (args.portal, args.login_url, args.url) if url}
    if len(given) > 1:
        raise CliError(f"two different portal URLs given: {' and '.join(sorted(given))}", USAGE)
    return given.pop() if given else None


def cmd_login(args) -> int:
    args.url = _login_url(args)
    api = api_from(args)
    if args.password_stdin and not args.username:
        raise CliError("--password-stdin needs --username", USAGE)
    if args.token or (os.environ.get("HKS_TOKEN") and not args.username):
        token = args.token or os.environ["HKS_TOKEN"]
    elif args.username:
        token = _password_login(api, args.username, _read_password(args))
    else:
        open_browser = sys.stdout.isatty() and not args.no_browser and not os.environ.get("HKS_NO_BROWSER")
        token = _device_login(api, open_browser=open_browser)
    api.config.token = token
    me = api.get("/whoami")
    stored = cfg.update(url=api.config.url, token=token, username=me["username"])
    if not stored.project:
        projects = api.get("/projects")
        if len(projects) == 1:
            cfg.update(project=projects[0]["slug"])
            info(f"Selected project {projects[0]['slug']} (your only project).")
    print(f"Logged in to {api.config.url} as {me['username']}.")
    return 0


def cmd_logout(args) -> int:
    stored = cfg.load_stored()
    if not stored.token:
        print("Not logged in.")
        return 0
    cfg.update(token="", username="")
    print(f"Logged out of {stored.url}.")
    return 0


def cmd_whoami(args) -> int:
    api = api_from(args)
    me = api.get("/whoami")
    if args.output == "json":
        emit_json({**me, "url": api.config.url, "project": api.config.project or None})
        return 0
    project = api.config.project or "none selected"
    print(f"{me['username']} at {api.config.url} (project: {project})")
    return 0


# Projects ---------------------------------------------------------------------------------------


def cmd_project_list(args) -> int:
    api = api_from(args)
    projects = api.get("/projects")
    if args.output == "json":
        emit_json(projects)
        return 0
    for project in projects:
        project["current"] = "*" if project["slug"] == api.config.project else ""
    table(
        projects, ["current", "slug", "name", "backend", "role"], empty="You are not a member of any project."
    )
    return 0


def cmd_project_select(args) -> int:
    api = api_from(args)
    try:
        project = api.get(f"/projects/{args.name}")
    except CliError as exc:
        if exc.code == NOT_FOUND:
            raise CliError(
                f"no project named {args.name!r} that you are a member of (see `hks project list`)", NOT_FOUND
            ) from exc
        raise
    cfg.update(project=project["slug"])
    print(f"Selected project {project['slug']} ({project['backend']}, role {project['role']}).")
    return 0


def cmd_project_current(args) -> int:
    api = api_from(args)
    slug = require_project(api)
    if args.output == "json":
        emit_json(api.get(f"/projects/{slug}"))
    else:
        print(slug)
    return 0


def cmd_project_kubeconfig(args) -> int:
    api = api_from(args)
    slug = require_project(api)
    if args.file == "-":
        sys.stdout.write(api.get(f"/projects/{slug}/kubeconfig")["kubeconfig"])
        return 0
    path, namespace = fetch_kubeconfig(api, slug, Path(args.file) if args.file else None)
    print(
        f"Wrote the kubeconfig of {slug} to {path} (mode 0600). Use it with:\n"
        f"    export KUBECONFIG={path}\n    kubectl --namespace {namespace} get ksvc"
    )
    return 0


def cmd_project_invite(args) -> int:
    """Owners invite a user name; the user joins when they accept (``hks invitation accept``)."""
    api = api_from(args)
    slug = require_project(api)
    answer = api.put(f"/projects/{slug}/members/{args.username}", json={"role": args.role})
    if args.output == "json":
        emit_json(answer)
    elif answer.get("status") == "invited":
        print(
            f"Invited {args.username} to {slug} as {args.role}. If that account exists, it joins when it "
            f"runs `hks invitation accept {slug}`."
        )
    else:  # a member's role changed, or an operator added the account at once
        print(f"{args.username} is {answer['role']} in {slug}.")
    return 0


def cmd_invitation_list(args) -> int:
    invitations = api_from(args).get("/invitations")
    if args.output == "json":
        emit_json(invitations)
    else:
        table(invitations, ["project", "role", "invited_by", "created_at"], empty="No pending invitations.")
    return 0


def cmd_invitation_answer(args) -> int:
    api = api_from(args)
    verb = args.invitation_command
    answer = api.post(f"/invitations/{args.project}/{verb}")
    if verb == "accept":
        print(
            f"Joined {answer['slug']} as {answer['role']}. "
            f"Select it with `hks project select {answer['slug']}`."
        )
    else:
        print(f"Declined the invitation to {args.project}.")
    return 0


# Parser -----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Sign in to HKS Functions and choose a project.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--url", help=f"portal URL (default: saved, $HKS_URL, or {cfg.DEFAULT_URL})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    login = sub.add_parser(
        "login",
        help="sign in (browser approval by default)",
        description="Sign in. By default prints a code and a URL to approve it in the portal.",
    )
    login.add_argument("portal", nargs="?", metavar="URL", help="the portal to sign in to (same as --url)")
    login.add_argument("--url", dest="login_url", metavar="URL", help="the portal to sign in to")
    login.add_argument("--token", help="use this API token (also: $HKS_TOKEN)")
    login.add_argument("--username", "-u", help="sign in with a user name and password instead")
    login.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    login.add_argument("--no-browser", action="store_true", help="do not try to open a browser")
    login.set_defaults(handler=cmd_login)

    sub.add_parser("logout", help="forget the saved token").set_defaults(handler=cmd_logout)
    whoami = sub.add_parser("whoami", help="show who you are signed in as")
    add_output_flag(whoami)
    whoami.set_defaults(handler=cmd_whoami)

    project = sub.add_parser("project", help="list, select and inspect projects")
    psub = project.add_subparsers(dest="project_command", required=True, metavar="COMMAND")
    plist = psub.add_parser("list", help="projects you are a member of")
    add_output_flag(plist)
    plist.set_defaults(handler=cmd_project_list)
    select = psub.add_parser("select", help="make NAME the project hks-func works in")
    select.add_argument("name")
    select.set_defaults(handler=cmd_project_select)
    current = psub.add_parser("current", help="print the selected project")
    add_output_flag(current)
    current.set_defaults(handler=cmd_project_current)
    kube = psub.add_parser("kubeconfig", help="save the kubeconfig of a Knative project (mode 0600)")
    kube.add_argument("-o", "--file", help="where to write it ('-' for stdout; default: the config dir)")
    kube.set_defaults(handler=cmd_project_kubeconfig)
    invite = psub.add_parser("invite", help="invite a user to the selected project (owners)")
    invite.add_argument("username")
    invite.add_argument("--role", choices=["viewer", "developer", "owner"], default="developer")
    add_output_flag(invite)
    invite.set_defaults(handler=cmd_project_invite)

    invitation = sub.add_parser("invitation", help="projects inviting you: list, accept, decline")
    isub = invitation.add_subparsers(dest="invitation_command", required=True, metavar="COMMAND")
    ilist = isub.add_parser("list", help="pending invitations")
    add_output_flag(ilist)
    ilist.set_defaults(handler=cmd_invitation_list)
    for verb in ("accept", "decline"):
        answer = isub.add_parser(verb, help=f"{verb} the invitation to PROJECT")
        answer.add_argument("project")
        answer.set_defaults(handler=cmd_invitation_answer)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(PROG, args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
