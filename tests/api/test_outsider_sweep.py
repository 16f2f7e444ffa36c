"""Every route of the portal, tried by an outsider: the owner of another project, signed in to the
dashboard, with an API token of their own and an agent credential of their own.

The routes are read from Django's URL resolver, so a view added later is swept too - or this test fails
and says which route it does not know how to address. Each route is filled with the victim project's real
objects (its function, revision, build, schedule, member, invitation and agent session) and sent every
method. The outsider gets 401, 403, 404 or 405 on whatever names the victim's project or objects, no answer
carries the victim's data, and nothing of the victim's changes (nor its audit log). The control: the
victim's own owner gets a 2xx for every GET the sweep sends, so the fills do name real objects.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from functions.models import (
    AgentSession,
    AuditEvent,
    Build,
    BuildStatus,
    Function,
    FunctionStatus,
    Invitation,
    Membership,
    Revision,
    Role,
    Schedule,
)
from tests.support.agents import outsider_credential  # noqa: F401
from tests.support.archive_samples import node_archive
from tests.support.factories import FunctionFactory

MARK = "VICTIM-DATA-5f3c9a"  # in the victim's objects' fields, never in a request
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
REFUSED = {401, 403, 404, 405}

# Routes that name no project: the caller's own things. The outsider may get a 2xx there, but never the
# victim's data.
OWN = {
    "api/v1/openapi.json",
    "api/v1/docs",
    "api/v1/",
    "api/v1/whoami",
    "api/v1/projects",
    "api/v1/invitations",
    "api/v1/audit",
    "api/v1/cli/login/start",
    "api/v1/cli/login/poll",
    "api/v1/auth/token",
    "internal/v1/openapi.json",
    "internal/v1/",
    "internal/v1/token",
    "internal/v1/sessions",
    "internal/v1/session-libraries",
    "",
    "cli/approve",
    "accounts/login/",
    "healthz",
}
# Bodies that pass each route's schema, so that the outsider's call reaches the view's project check (a
# 422 for a missing field would come before it, and prove nothing).
BODIES = {
    "api/v1/projects/<slug>/functions": {"name": "intruder-fn", "runtime": "node"},
    "api/v1/projects/<slug>/functions/<name>/schedules": {"name": "intruder", "cron": "* * * * *"},
    "api/v1/projects/<slug>/functions/<name>/schedules/<sched>": {"cron": "* * * * *"},
    "api/v1/projects/<slug>/members/<username>": {"role": "owner"},
    "api/v1/projects/<slug>/invitations": {"username": "oscar-outsider", "role": "owner"},
    "api/v1/projects/<slug>/schedules/preview": {"cron": "* * * * *"},
    "api/v1/projects/<slug>/usage": {"max_functions": 1},
    "api/v1/projects/<slug>/functions/<name>": {"min_scale": 3, "env": {"NOTE": "changed"}},
    "internal/v1/sessions/<sandbox_id>/timeout": {"timeout_seconds": 5},
}
# Routes that name the victim's objects in the body, not the path (the agent API): what the outsider sends.
BODY_ADDRESSED = {
    "internal/v1/operations/invoke-function": {"name": "victim-fn"},
    "internal/v1/operations/delete-function": {"name": "victim-fn"},
}
# Routes that create in the caller's own project whatever they are sent (nothing of the victim's to name),
# and the ones another test sweeps with its own parts.
ELSEWHERE = {
    "internal/v1/operations/deploy-function": "deploys into the caller's project (tests/agents)",
    "internal/v1/operations/execute": "runs in the caller's project (tests/agents, tests/sdk)",
    "e2b": "E2B's control plane: tests/sdk/test_sessions_live.py (an outsider on the wire)",
    "e2b/<path:rest>": "the same",
    "cluster/archives/<str:token>/": "a signed, expiring token names the archive (tests/api/test_archives*)",
    "accounts/logout/": "would sign the outsider out of the sweep",
}


# What the owner gets instead of a 2xx in the control, and why: each past the project check.
CONTROL_OTHERWISE = {
    ("api/v1/projects/<slug>/kubeconfig", 404),  # a local-runtime project has no kubeconfig
    ("api/v1/projects/<slug>/functions/<name>/logs", 502),  # the runtime is down here (HKS_RUNTIME_URL)
    ("p/<slug:project>/f/<slug:name>/logs.txt", 502),
    ("p/<slug:project>/f/<slug:name>/logs/search/", 502),
}


def _routes() -> list[str]:
    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield prefix + str(pattern.pattern)

    return sorted({r for r in walk(get_resolver().url_patterns) if not r.startswith("admin/")})


@pytest.fixture
def victim(project, owner, settings, media_root):
    """The victim project ``acme`` with one of everything, each carrying MARK."""
    from django.core.files.base import ContentFile

    settings.HKS_RUNTIME_URL = "http://127.0.0.1:9"  # nothing listens: no call may reach a runtime
    fn = FunctionFactory(
        project=project, name="victim-fn", status=FunctionStatus.READY, env={"NOTE": MARK}, min_scale=0
    )
    revision = Revision(function=fn, number=1, content_hash="d" * 64, config={"runtime": "node", "x": MARK})
    revision.archive.save("acme-victim-fn-1.tar.gz", ContentFile(node_archive()), save=False)
    revision.save()
    build = Build.objects.create(revision=revision, status=BuildStatus.SUCCEEDED, log=f"built {MARK}\n")
    Function.objects.filter(pk=fn.pk).update(current_revision=revision, desired_revision=revision)
    schedule = Schedule.objects.create(function=fn, name="victim-sched", cron="*/5 * * * *", body=MARK)
    invited = Invitation.objects.create(project=project, username="ivy-invited", role=Role.VIEWER)
    session = AgentSession.objects.create(
        project=project,
        sandbox_id="victimsandbox0001",
        metadata={"note": MARK},
        expires_at=timezone.now() + dt.timedelta(hours=1),
    )
    return {
        "slug": "acme",
        "project": "acme",
        "name": "victim-fn",
        "number": "1",
        "build_id": str(build.pk),
        "sched": schedule.name,
        "username": owner.username,
        "sandbox_id": session.sandbox_id,
        "invitation": invited.username,
    }


def _fill(route: str, victim: dict) -> str:
    def value(match: re.Match) -> str:
        name = match.group(2)
        if route.startswith("api/v1/projects/<slug>/invitations/"):
            return victim["invitation"] if name == "username" else victim[name]
        return victim[name]

    return "/" + re.sub(r"<(?:(\w+):)?(\w+)>", value, route)


def _snapshot(project) -> dict:
    fn = Function.objects.get(project=project, name="victim-fn")
    return {
        "function": (fn.status, fn.env, fn.current_revision_id, fn.min_scale, fn.max_scale, fn.visibility),
        "revisions": list(Revision.objects.filter(function=fn).values_list("number", "content_hash")),
        "builds": list(Build.objects.filter(revision__function=fn).values_list("pk", "status")),
        "schedules": list(
            Schedule.objects.filter(function=fn).values_list("name", "cron", "enabled", "body")
        ),
        "members": sorted(Membership.objects.filter(project=project).values_list("user__username", "role")),
        "invitations": list(Invitation.objects.filter(project=project).values_list("username", "role")),
        "sessions": list(
            AgentSession.objects.filter(project=project).values_list("sandbox_id", "expires_at")
        ),
        "audit": AuditEvent.objects.filter(project=project).count(),
        "quotas": type(project).objects.filter(pk=project.pk).values().get(),
    }


def _clients(outsider, outsider_credential, api_client_for):  # noqa: F811
    dashboard = Client()
    dashboard.force_login(outsider)
    api = api_client_for(outsider)
    token = Client().post(
        "/internal/v1/token", {"credential": outsider_credential[1]}, content_type="application/json"
    )
    assert token.status_code == 200, token.content
    internal = Client(HTTP_AUTHORIZATION=f"Bearer {token.json()['token']}")
    return dashboard, api, internal


def _client_for(route: str, clients):
    dashboard, api, internal = clients
    if route.startswith("api/"):
        return api
    if route.startswith("internal/"):
        return internal
    return dashboard


def _send(client, method: str, path: str, body: dict | None = None):
    data = json.dumps(body or {})
    if path.startswith(("/api/", "/internal/")):
        return client.generic(method, path, data, content_type="application/json")
    if method == "GET":
        return client.get(path)
    return client.generic(
        method, path, "confirm=1&name=victim-fn", content_type="application/x-www-form-urlencoded"
    )


CSRF = re.compile(r'(csrfmiddlewaretoken" value="|"X-CSRFToken": ")[A-Za-z0-9]+')


def _body(response) -> str:
    """The answer's text, its CSRF tokens (masked afresh on every page) blanked."""
    if getattr(response, "streaming", False):
        text = b"".join(response.streaming_content).decode(errors="replace")
    else:
        text = response.content.decode(errors="replace")
    return CSRF.sub(r"\1-", text)


@pytest.mark.django_db
def test_an_outsider_reaches_nothing_of_another_project_on_any_route(
    victim,
    project,
    outsider,
    outsider_credential,  # noqa: F811
    api_client_for,
):
    clients = _clients(outsider, outsider_credential, api_client_for)
    routes = _routes()
    known = re.compile(r"<(?:\w+:)?(slug|project|name|number|build_id|sched|username|sandbox_id)>")
    unknown = [
        r
        for r in routes
        if r not in OWN
        and r not in BODY_ADDRESSED
        and r not in ELSEWHERE
        and not known.search(r)
        and r not in ("ops/",)
    ]
    assert not unknown, f"routes this sweep does not know how to address (add them): {unknown}"
    before = _snapshot(project)
    crossed, leaked, oracles = [], [], []
    for route in routes:
        if route in ELSEWHERE:
            continue
        client = _client_for(route, clients)
        path = _fill(route, victim) if route not in BODY_ADDRESSED else "/" + route
        body_sent = BODY_ADDRESSED.get(route) or BODIES.get(route)
        for method in METHODS:
            response = _send(client, method, path, body_sent)
            body = _body(response)
            if MARK in body:
                leaked.append(f"{method} {path}: {response.status_code}")
            if route in OWN:
                continue
            to_login = response.status_code == 302 and "/login/" in response.get("Location", "")
            if response.status_code not in REFUSED and not (route == "ops/" and to_login):
                crossed.append(f"{method} {path}: {response.status_code} {body[:120]!r}")
            elif "/acme" in path:
                # No oracle: the answer is the one for a project that does not exist.
                control = _send(client, method, path.replace("/acme", "/no-such-project"), body_sent)
                expected = (control.status_code, _body(control).replace("no-such-project", "acme"))
                if expected != (response.status_code, body):
                    oracles.append(
                        f"{method} {path}: {response.status_code} {body[:80]!r} / {expected[1][:80]!r}"
                    )
    assert not crossed, "the outsider got past the project check:\n" + "\n".join(crossed)
    assert not leaked, "the victim's data in answers to the outsider:\n" + "\n".join(leaked)
    assert not oracles, "answers that tell the victim's project exists:\n" + "\n".join(oracles)
    assert _snapshot(project) == before


@pytest.mark.django_db
def test_an_outsider_naming_the_victims_ids_under_their_own_project_gets_nothing(
    victim,
    project,
    other_project,
    outsider,
    outsider_credential,  # noqa: F811
    api_client_for,
):
    """Build ids and sandbox ids are global: the outsider puts the victim's in the paths of their own
    project and function, which they may read. Every such call is refused and carries none of the victim's
    data."""
    FunctionFactory(project=other_project, name="their-fn", status=FunctionStatus.READY)
    clients = _clients(outsider, outsider_credential, api_client_for)
    own = {**victim, "slug": other_project.slug, "project": other_project.slug, "name": "their-fn"}
    own["username"] = outsider.username
    global_ids = re.compile(r"<(?:\w+:)?(build_id|sandbox_id)>")
    before = _snapshot(project)
    answered = []
    for route in _routes():
        if route in ELSEWHERE or not global_ids.search(route):
            continue
        path = _fill(route, own)
        for method in METHODS:
            response = _send(_client_for(route, clients), method, path, BODIES.get(route))
            if MARK in _body(response) or response.status_code not in REFUSED:
                answered.append(f"{method} {path}: {response.status_code} {_body(response)[:100]!r}")
    assert not answered, "the victim's objects through the outsider's own project:\n" + "\n".join(answered)
    assert _snapshot(project) == before


@pytest.mark.django_db
def test_the_sweeps_fills_name_real_objects_for_their_owner(victim, owner, api_client_for):
    """The control: the same GETs, by the victim's owner, answer 2xx - so the outsider's 404s above are
    the project check, not a mistyped fill."""
    dashboard = Client()
    dashboard.force_login(owner)
    api = api_client_for(owner)
    failed = []
    for route in _routes():
        if route in OWN or route in BODY_ADDRESSED or route in ELSEWHERE or route == "ops/":
            continue
        if route.startswith("internal/"):
            continue  # an agent credential's project is its own: the owner's side is tests/agents
        path = _fill(route, victim)
        response = (api if route.startswith("api/") else dashboard).get(path)
        if response.status_code == 405:
            continue  # a POST-only route (rollback, pause, ...): the outsider's POST above is the check
        if (route, response.status_code) in CONTROL_OTHERWISE:
            continue
        if not 200 <= response.status_code < 300:
            failed.append(f"GET {path}: {response.status_code}")
    assert not failed, "\n".join(failed)
