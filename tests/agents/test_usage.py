"""Agent quotas and accounting per project: usage rows per hour, the per-minute and daily-CPU refusals,
and who may read and change them (API, dashboard page, admin). The live runtime's figures are in
test_usage_live.py."""

import datetime as dt

import jwt
import pytest
from django.contrib.auth import get_user_model
from django.db import DatabaseError
from django.test import Client
from django.utils import timezone

from functions import selectors
from functions.agents import sessions
from functions.errors import ServiceError
from functions.models import AgentUsage, AuditEvent
from functions.services import usage

NOON = dt.datetime(2026, 3, 14, 12, 30, tzinfo=dt.UTC)


def _token(client, secret):
    return client.post("/internal/v1/token", {"credential": secret}, content_type="application/json").json()[
        "token"
    ]


def test_usage_adds_up_in_one_row_per_hour(project):
    usage.usage_record(project=project, executions=1, cpu_seconds=0.25, now=NOON)
    usage.usage_record(project=project, sessions=1, cpu_seconds=1.5, now=NOON + dt.timedelta(minutes=20))
    # no figure: one more "not measured", not a 0 among the measured
    usage.usage_record(project=project, executions=1, unmeasured=1, now=NOON + dt.timedelta(hours=1))
    rows = list(AgentUsage.objects.filter(project=project).order_by("hour"))
    assert [(r.hour.hour, r.executions, r.sessions, r.cpu_seconds, r.cpu_unmeasured) for r in rows] == [
        (12, 1, 1, 1.75, 0),
        (13, 1, 0, 0.0, 1),
    ]
    figures = selectors.project_agent_usage(project=project, now=NOON + dt.timedelta(hours=2))
    assert figures["today"] == {"executions": 2, "sessions": 1, "cpu_seconds": 1.75, "cpu_unmeasured": 1}
    assert figures["cpu_seconds_today"] == 1.75
    next_day = selectors.project_agent_usage(project=project, now=NOON + dt.timedelta(days=1))
    assert next_day["today"]["executions"] == 0 and next_day["month"]["executions"] == 2


def test_executions_past_the_minute_quota_are_refused_with_retry_after(project, other_project):
    project.max_executions_per_minute = 2
    usage.execution_admit(project=project, now=NOON)
    usage.execution_admit(project=project, now=NOON + dt.timedelta(seconds=10))
    with pytest.raises(ServiceError) as refused:
        usage.execution_admit(project=project, now=NOON + dt.timedelta(seconds=40))
    assert refused.value.code == 429 and refused.value.retry_after == 20  # the minute's end
    assert "2 per minute" in refused.value.message
    assert selectors.executions_this_minute(project=project, now=NOON) == 2  # the refusal is not counted
    usage.execution_admit(project=other_project, now=NOON)  # another project's minute is its own
    usage.execution_admit(project=project, now=NOON + dt.timedelta(minutes=1))


def test_a_spent_daily_cpu_quota_refuses_until_midnight(project):
    project.max_cpu_seconds_per_day = 10
    usage.usage_record(project=project, cpu_seconds=9.5, now=NOON)
    usage.execution_admit(project=project, now=NOON)
    usage.usage_record(project=project, cpu_seconds=0.5, now=NOON)
    with pytest.raises(ServiceError) as refused:
        usage.execution_admit(project=project, now=NOON)
    assert refused.value.code == 429
    assert refused.value.retry_after == 11 * 3600 + 30 * 60
    assert "10 CPU seconds" in refused.value.message and "midnight UTC" in refused.value.message
    project.max_cpu_seconds_per_day = 0  # no limit
    usage.execution_admit(project=project, now=NOON)


@pytest.mark.parametrize("language", ["python", "node"])
def test_fast_path_over_the_minute_quota_is_429_before_the_runtime(agent_credential, project, language):
    project.max_executions_per_minute = 0
    project.save()
    client = Client()
    token = _token(client, agent_credential[1])
    response = client.post(
        "/internal/v1/operations/execute",
        {"code": "1", "language": language},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    assert "per minute" in response.json()["detail"]


def test_deploying_code_counts_and_a_spent_cpu_quota_refuses_it(agent_credential, project):
    client = Client()
    token = _token(client, agent_credential[1])
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    body = {"code": "print(1)", "files": {"a.txt": "x"}}
    deployed = client.post(
        "/internal/v1/operations/deploy-function", body, content_type="application/json", **auth
    )
    assert deployed.status_code == 202, deployed.content
    assert selectors.project_agent_usage(project=project)["today"]["executions"] == 1
    project.max_cpu_seconds_per_day = 1
    project.save()
    usage.usage_record(project=project, cpu_seconds=2.0)
    refused = client.post(
        "/internal/v1/operations/deploy-function", body, content_type="application/json", **auth
    )
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    assert "CPU seconds" in refused.json()["detail"]


# --- who sees and changes it ------------------------------------------------------------------------------


def test_members_read_the_usage_and_outsiders_get_404(project, viewer, outsider, api_client_for):
    usage.usage_record(project=project, executions=3, sessions=1, cpu_seconds=4.5)
    usage.cpu_finished(project=project, cpu_seconds=None)
    body = api_client_for(viewer).get("/api/v1/projects/acme/usage").json()
    assert body["project"] == "acme"
    assert body["today"] == {"executions": 3, "sessions": 1, "cpu_seconds": 4.5, "cpu_unmeasured": 1}
    assert body["max_sessions"] == project.max_sessions and body["sessions_running"] == 0
    assert body["max_executions_per_minute"] == project.max_executions_per_minute
    assert api_client_for(outsider).get("/api/v1/projects/acme/usage").status_code == 404
    assert (
        api_client_for(outsider)
        .patch("/api/v1/projects/acme/usage", {"max_sessions": 99}, content_type="application/json")
        .status_code
        == 404
    )


@pytest.mark.parametrize("persona", ["viewer", "developer"])
def test_only_owners_change_quotas_through_the_api(persona, project, request, api_client_for):
    response = api_client_for(request.getfixturevalue(persona)).patch(
        "/api/v1/projects/acme/usage", {"max_sessions": 99}, content_type="application/json"
    )
    assert response.status_code == 403
    project.refresh_from_db()
    assert project.max_sessions == 5


def test_an_owner_changes_quotas_and_it_is_audited(project, owner, api_client_for):
    response = api_client_for(owner).patch(
        "/api/v1/projects/acme/usage",
        {"max_sessions": 3, "max_cpu_seconds_per_day": 3600},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["max_sessions"] == 3 and response.json()["max_cpu_seconds_per_day"] == 3600
    project.refresh_from_db()
    assert (project.max_sessions, project.max_cpu_seconds_per_day) == (3, 3600)
    event = AuditEvent.objects.get(project=project, action="project.quotas")
    assert event.actor == owner and event.detail["changes"]["max_sessions"] == [5, 3]
    negative = api_client_for(owner).patch(
        "/api/v1/projects/acme/usage", {"max_sessions": -1}, content_type="application/json"
    )
    assert negative.status_code == 422


def test_an_owner_lowers_the_instance_quota_and_the_usage_shows_it(project, owner, api_client_for):
    response = api_client_for(owner).patch(
        "/api/v1/projects/acme/usage", {"max_instances": 4}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    assert (response.json()["max_instances"], response.json()["instances_running"]) == (4, 0)
    project.refresh_from_db()
    assert project.max_instances == 4
    event = AuditEvent.objects.get(project=project, action="project.quotas")
    assert event.detail["changes"]["max_instances"] == [20, 4]
    page = _signed_in(owner).get("/p/acme/usage/").content.decode()
    assert 'id="quota-instances"' in page and 'name="max_instances"' in page


@pytest.mark.parametrize(
    "change",
    [
        {"max_sessions": 6},
        {"max_executions_per_minute": 121},
        {"max_cpu_seconds_per_day": 0},
        {"max_instances": 21},
        {"max_instances": 0},
    ],
    ids=["sessions", "executions", "cpu-unlimited", "instances", "instances-unlimited"],
)
def test_an_owner_cannot_raise_the_projects_quotas(change, project, owner, api_client_for):
    """Operators set the quotas; a tenant that could raise its own would have none."""
    project.max_cpu_seconds_per_day = 600
    project.save()
    response = api_client_for(owner).patch(
        "/api/v1/projects/acme/usage", change, content_type="application/json"
    )
    assert response.status_code == 403
    assert "only an operator can raise" in response.json()["detail"]
    project.refresh_from_db()
    assert (project.max_sessions, project.max_executions_per_minute, project.max_cpu_seconds_per_day) == (
        5,
        120,
        600,
    )
    assert project.max_instances == 20
    assert not AuditEvent.objects.filter(project=project, action="project.quotas").exists()
    raise_sessions = {
        "max_sessions": 50,
        "max_executions_per_minute": 120,
        "max_cpu_seconds_per_day": 600,
        "max_instances": 20,
    }
    page = _signed_in(owner).post("/p/acme/usage/", raise_sessions)
    assert page.status_code == 200 and "only an operator can raise" in page.content.decode()
    project.refresh_from_db()
    assert project.max_sessions == 5


def test_an_operator_raises_a_projects_quotas(project):
    operator = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-for-tests-only")
    usage.project_quotas_update(project=project, user=operator, max_sessions=50, max_cpu_seconds_per_day=0)
    project.refresh_from_db()
    assert project.max_sessions == 50
    assert AuditEvent.objects.get(project=project, action="project.quotas").actor == operator


def _signed_in(user):
    client = Client()
    client.force_login(user)
    return client


def test_the_usage_page_shows_quotas_and_owners_get_the_form(project, owner, viewer, outsider):
    usage.usage_record(project=project, executions=2, cpu_seconds=12.5)
    page = _signed_in(viewer).get("/p/acme/usage/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="quota-cpu"' in html and "12.5" in html and ">none<" in html
    assert "cpu-unmeasured" not in html
    usage.cpu_finished(project=project, cpu_seconds=None)  # a session whose CPU had no figure
    html = _signed_in(viewer).get("/p/acme/usage/").content.decode()
    assert "12.5" in html and "+ 1 not measured" in html
    assert 'id="quotas-form"' not in html
    assert _signed_in(viewer).post("/p/acme/usage/", {"max_sessions": 50}).status_code == 403
    assert _signed_in(outsider).get("/p/acme/usage/").status_code == 404
    assert _signed_in(outsider).post("/p/acme/usage/", {"max_sessions": 50}).status_code == 404
    owner_page = _signed_in(owner).get("/p/acme/usage/").content.decode()
    assert 'id="quotas-form"' in owner_page
    saved = _signed_in(owner).post(
        "/p/acme/usage/",
        {
            "max_sessions": 4,
            "max_executions_per_minute": 30,
            "max_cpu_seconds_per_day": 600,
            "max_instances": 10,
        },
    )
    assert saved.status_code == 302
    project.refresh_from_db()
    assert project.max_instances == 10
    assert (project.max_sessions, project.max_executions_per_minute, project.max_cpu_seconds_per_day) == (
        4,
        30,
        600,
    )
    assert "600/day" in _signed_in(viewer).get("/p/acme/usage/").content.decode()


def test_operators_read_the_page_and_edit_quotas_in_the_admin(project, other_project):
    usage.usage_record(project=project, executions=4, sessions=2, cpu_seconds=7.5)
    operator = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-for-tests-only")
    client = _signed_in(operator)
    page = client.get("/p/acme/usage/")
    assert page.status_code == 200 and 'id="quotas-form"' not in page.content.decode()
    listing = client.get("/admin/functions/project/")
    assert listing.status_code == 200
    html = listing.content.decode()
    assert "CPU s today" in html and "7.5" in html
    assert 'name="form-0-max_cpu_seconds_per_day"' in html
    rows = {p.slug: p for p in selectors.projects_with_agent_usage(queryset=type(project).objects.all())}
    assert rows["acme"].usage_executions_today == 4 and rows["acme"].usage_cpu_today == 7.5
    assert rows["globex"].usage_executions_today is None
    # what had no CPU figure is said so, on /ops/ and in the admin, never counted as 0 seconds
    usage.usage_record(project=other_project, executions=3, unmeasured=3)
    ops = client.get("/ops/").content.decode()
    assert "not measured (3)" in ops and "+ " not in ops.split("globex", 1)[1].split("</tr>", 1)[0]
    usage.usage_record(project=project, executions=1, unmeasured=1)
    ops = client.get("/ops/").content.decode()
    assert "7.5 <span" in ops.split("acme", 1)[1] and "+ 1 not measured" in ops
    listing = client.get("/admin/functions/project/").content.decode()
    assert "7.5 + 1 not measured" in listing and "not measured (3)" in listing
    change = client.get(f"/admin/functions/project/{project.pk}/change/")
    assert b"max_executions_per_minute" in change.content
    assert timezone.now()  # (the day is UTC: see selectors.project_agent_usage)


def test_an_execution_the_runtime_refuses_is_given_back(agent_credential, project, settings):
    settings.HKS_RUNTIME_URL = "http://127.0.0.1:9"  # nothing listens: the runtime is down (503)
    client = Client()
    token = _token(client, agent_credential[1])
    response = client.post(
        "/internal/v1/operations/execute",
        {"code": "1"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 503
    assert selectors.executions_this_minute(project=project) == 0
    assert not AgentUsage.objects.exists()


def _execute(client, token, code: str = "1 + 1"):
    return client.post(
        "/internal/v1/operations/execute",
        {"code": code},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def test_an_answered_execution_is_audited_with_who_ran_it_and_counted(
    agent_credential, outsider_credential, project, local_backend_settings
):
    client = Client()
    token = _token(client, agent_credential[1])
    # the real runtime's one-shot kernel, busy for a measurable moment of CPU
    response = _execute(client, token, "sum(range(20_000_000)) and 2")
    assert response.status_code == 200 and response.json()["result"] == 2
    event = AuditEvent.objects.get(action="agent.execute")
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    assert event.project == project and event.detail == {"credential": "agent", "jti": jti}
    today = selectors.project_agent_usage(project=project)["today"]
    assert today["executions"] == 1
    assert today["cpu_seconds"] == pytest.approx(response.json()["cpu_seconds"], abs=0.01)  # kept to 0.01 s
    assert today["cpu_seconds"] > 0.05
    outsiders = outsider_credential[0].project
    assert not AuditEvent.objects.filter(project=outsiders).exists()
    assert selectors.project_agent_usage(project=outsiders)["today"]["executions"] == 0


def test_an_execution_whose_audit_row_is_not_written_is_not_counted_either(
    agent_credential, project, local_backend_settings, monkeypatch
):
    """The audit row and the usage are one transaction (one commit, one wait for SQLite's write lock), so
    the audit trail and the usage never disagree about a run."""

    def broken(**kwargs):
        raise DatabaseError("disk full")

    monkeypatch.setattr(sessions, "audit", broken)
    client = Client(raise_request_exception=False)
    response = _execute(client, _token(client, agent_credential[1]))
    assert response.status_code == 500
    assert not AgentUsage.objects.exists()
