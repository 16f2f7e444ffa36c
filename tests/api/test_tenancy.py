"""Tenancy is a security boundary: an outsider gets 404 for every object of another project in EVERY API
operation, and nothing changes.

The walk is driven by the OpenAPI document, so a new endpoint is walked without anyone adding it here; an
endpoint outside any project must be listed in ``NOT_PROJECT_SCOPED`` with the reason, or the suite fails.
Every walked request is also sent by the project's owner, which must NOT get 404 - proof that the path
really names existing objects, so the outsider's 404 is the boundary and not a typo.
"""

import json
import re

import pytest
from django.test import Client

from functions.models import (
    ApiToken,
    AuditEvent,
    Build,
    BuildStatus,
    Function,
    Invitation,
    Membership,
    Project,
    Revision,
    Role,
    Schedule,
    ScheduleRun,
)
from functions.services.projects import project_set_kubeconfig
from tests.support.archive_samples import node_archive
from tests.support.factories import FunctionFactory, MembershipFactory, UserFactory

API = "/api/v1"

# Operations that name no project object, and why they need no outsider test.
NOT_PROJECT_SCOPED = {
    "GET /whoami": "the caller's own account",
    "GET /projects": "lists only the caller's projects (tested below)",
    "POST /cli/login/start": "unauthenticated start of a device login",
    "POST /cli/login/poll": "unauthenticated poll of a device login",
    "POST /auth/token": "unauthenticated password-for-token exchange",
    "GET /invitations": "the caller's own invitations, by user name (tests/api/test_invitations.py)",
    "POST /invitations/{project}/accept": "only the invited user name's (tests/api/test_invitations.py)",
    "POST /invitations/{project}/decline": "only the invited user name's (tests/api/test_invitations.py)",
}

# Values for path parameters, by parameter name: objects of project "acme" (see the world fixture).
PATH_VALUES = {
    "slug": lambda w: "acme",
    "name": lambda w: "hello",
    "number": lambda w: 1,
    "build_id": lambda w: w["build"].pk,
    "username": lambda w: "dev-dana",
    "sched": lambda w: "nightly",
}

# Query strings that make an operation name a project object (operations keyed "METHOD /path").
QUERIES = {
    "GET /audit": "project=acme",
    "POST /projects/{slug}/functions/{name}/revisions": "create=true&runtime=node",
}

# Valid bodies, so that a request is refused for who sends it and not for what it sends.
JSON_BODIES = {
    "POST /projects/{slug}/functions": {"name": "intruder", "runtime": "node"},
    "PATCH /projects/{slug}/functions/{name}": {"timeout_seconds": 5, "env": {"STOLEN": "1"}},
    "PUT /projects/{slug}/members/{username}": {"role": "owner"},
    "POST /projects/{slug}/functions/{name}/invoke": {"method": "GET", "path": "/"},
    "POST /projects/{slug}/functions/{name}/schedules": {"name": "intruder", "cron": "* * * * *"},
    "PATCH /projects/{slug}/functions/{name}/schedules/{sched}": {"cron": "@daily"},
    "POST /projects/{slug}/schedules/preview": {"cron": "@daily", "timezone": "UTC"},
    "PATCH /projects/{slug}/usage": {"max_sessions": 1000, "max_cpu_seconds_per_day": 0},
}
RAW_BODIES = {"POST /projects/{slug}/functions/{name}/revisions": ("application/gzip", node_archive)}


def _operations() -> list[tuple[str, str]]:
    from functions.api import api

    schema = api.get_openapi_schema()
    prefix = schema.get("servers", [{}])[0].get("url", "") if schema.get("servers") else ""
    operations = []
    for path, methods in schema["paths"].items():
        path = path.removeprefix(prefix).removeprefix(API)
        operations += [(method.upper(), path) for method in methods]
    return sorted(operations)


OPERATIONS = _operations()
WALKED = [f"{m} {p}" for m, p in OPERATIONS if f"{m} {p}" not in NOT_PROJECT_SCOPED]


def test_every_operation_is_walked_or_explained():
    keys = {f"{m} {p}" for m, p in OPERATIONS}
    unscoped = [key for key in WALKED if "{slug}" not in key and key not in QUERIES]
    assert unscoped == [], (
        f"these operations name no project: add them to QUERIES or NOT_PROJECT_SCOPED: {unscoped}"
    )
    stale = set(NOT_PROJECT_SCOPED) - keys
    assert not stale, f"NOT_PROJECT_SCOPED lists operations that no longer exist: {stale}"
    assert len(WALKED) >= 20


@pytest.fixture
def world(project, other_project, owner, developer, outsider, fake_k8s, media_root):
    """acme (knative, with a kubeconfig) holding a deployed function, its build, a schedule and members;
    globex, the outsider's own project, holding objects with the SAME names."""
    project.backend = "knative"
    project.save()
    project_set_kubeconfig(project=project, kubeconfig_text=fake_k8s.kubeconfig, actor=owner)
    objects = {}
    for proj in (project, other_project):
        function = FunctionFactory(project=proj, name="hello", runtime="node", status="ready")
        revision = Revision.objects.create(
            function=function,
            number=1,
            archive=f"{proj.slug}.tar.gz",
            content_hash="a" * 64,
            artifact="registry.example.test/x:1",
        )
        build = Build.objects.create(revision=revision, status=BuildStatus.SUCCEEDED, log="built\n")
        Function.objects.filter(pk=function.pk).update(current_revision=revision)
        Schedule.objects.create(function=function, name="nightly", cron="0 3 * * *")
        AuditEvent.objects.create(project=proj, action="function.create", function_name="hello")
        objects[proj.slug] = build
    MembershipFactory(project=other_project, user=UserFactory(username="dev-dana-globex"), role=Role.VIEWER)
    return {"build": objects["acme"], "outsider": outsider, "owner": owner}


def _client(user) -> Client:
    _, token = ApiToken.issue(user=user, name="tenancy")
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}", raise_request_exception=False)


def _url(path: str, world, key: str) -> str:
    def value(match):
        name = match.group(1)
        assert name in PATH_VALUES, f"add a value for path parameter {{{name}}} to PATH_VALUES"
        return str(PATH_VALUES[name](world))

    url = API + re.sub(r"\{(\w+)\}", value, path)
    return f"{url}?{QUERIES[key]}" if key in QUERIES else url


def _send(client: Client, key: str, world):
    method, path = key.split(" ", 1)
    url = _url(path, world, key)
    if key in RAW_BODIES:
        content_type, make = RAW_BODIES[key]
        return client.generic(method, url, make(), content_type=content_type)
    if key in JSON_BODIES:
        return client.generic(method, url, json.dumps(JSON_BODIES[key]), content_type="application/json")
    return client.generic(method, url)


def _snapshot(media_root):
    tables = [Project, Membership, Invitation, Function, Revision, Build, Schedule, ScheduleRun, AuditEvent]
    rows = {model.__name__: list(model.objects.order_by("pk").values()) for model in tables}
    rows["media"] = sorted(str(p) for p in media_root.rglob("*"))
    return rows


@pytest.mark.parametrize("key", WALKED)
def test_outsider_gets_404_and_changes_nothing(key, world, media_root, django_capture_on_commit_callbacks):
    client = _client(world["outsider"])
    before = _snapshot(media_root)
    with django_capture_on_commit_callbacks() as queued:
        response = _send(client, key, world)
    assert response.status_code == 404, (key, response.status_code, response.content[:300])
    assert "detail" in response.json()
    assert _snapshot(media_root) == before
    assert queued == []  # no task was enqueued either


@pytest.mark.parametrize("key", WALKED)
def test_owner_reaches_the_same_objects(key, world):
    """The control for the test above: the same request by acme's owner finds what the path names."""
    response = _send(_client(world["owner"]), key, world)
    assert response.status_code not in (404, 422, 500), (key, response.status_code, response.content[:300])


def test_project_list_does_not_show_other_projects(world):
    body = _client(world["outsider"]).get(API + "/projects").json()
    assert [p["slug"] for p in body] == ["globex"]


def test_outsider_cannot_add_itself_to_a_project(world, media_root):
    before = _snapshot(media_root)
    response = _client(world["outsider"]).put(
        API + "/projects/acme/members/oscar-outsider", {"role": "owner"}, content_type="application/json"
    )
    assert response.status_code == 404
    assert _snapshot(media_root) == before


def test_audit_without_a_project_shows_only_my_projects(world):
    body = _client(world["outsider"]).get(API + "/audit").json()
    assert {event["project"] for event in body} == {"globex"}


def test_a_build_of_another_project_is_404_even_by_its_id(world):
    """Build ids are global: the outsider's own function path with acme's build id must not find it."""
    build_id = world["build"].pk
    response = _client(world["outsider"]).get(API + f"/projects/globex/functions/hello/builds/{build_id}")
    assert response.status_code == 404


# Roles inside the project: viewers read, and every write needs more ----------------------------------

READS_BY_POST = {"POST /projects/{slug}/schedules/preview": "computes run times, changes nothing"}
WRITES = [key for key in WALKED if not key.startswith("GET ") and key not in READS_BY_POST]


@pytest.mark.parametrize("key", WRITES)
def test_viewer_is_refused_every_write_and_nothing_changes(
    key, world, media_root, django_capture_on_commit_callbacks
):
    viewer = MembershipFactory(project=Project.objects.get(slug="acme"), role=Role.VIEWER).user
    before = _snapshot(media_root)
    with django_capture_on_commit_callbacks() as queued:
        response = _send(_client(viewer), key, world)
    assert response.status_code == 403, (key, response.status_code, response.content[:300])
    assert _snapshot(media_root) == before
    assert queued == []


@pytest.mark.parametrize("key", WALKED)
def test_without_a_token_every_operation_is_401(key, world, media_root):
    before = _snapshot(media_root)
    response = _send(Client(raise_request_exception=False), key, world)
    assert response.status_code == 401, (key, response.status_code)
    assert _snapshot(media_root) == before
