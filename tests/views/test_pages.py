"""Dashboard pages of issue 15: branded errors, whole tab pages, forms that say the right thing in the
right place, builds and revisions that refresh, the overview and invoke pane, operators' read-only access,
the device-login approval page."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from functions.models import AuditEvent, Build, CliLoginRequest, FunctionStatus, Revision
from tests.support.factories import FunctionFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.usefixtures("no_prometheus")


def _url(name, function, **kwargs):
    return reverse(name, kwargs={"project": function.project.slug, "name": function.name, **kwargs})


def test_a_mistyped_url_gets_the_branded_404(client_for, owner):
    response = client_for(owner).get("/p/acme/f/hello/nope/")
    html = response.content.decode()
    assert response.status_code == 404
    assert 'id="error-404"' in html and "HKS Functions" in html and 'class="topbar"' in html


def test_the_500_page_is_branded_and_needs_no_context():
    from django.template.loader import render_to_string

    html = render_to_string("500.html")
    assert 'id="error-500"' in html and "HKS Functions" in html


def test_an_error_in_a_view_gets_the_branded_500(client_for, owner, monkeypatch):
    from functions.views import dashboard

    def broken(**kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(dashboard.selectors, "project_get_for_user", broken)
    client = client_for(owner)
    client.raise_request_exception = False  # as a browser gets it, not re-raised into the test
    response = client.get("/p/acme/")
    assert response.status_code == 500
    html = response.content.decode()
    assert 'id="error-500"' in html and 'class="topbar"' in html and "a bug" not in html


def test_each_tab_has_its_own_title_and_marks_itself_current(client_for, owner, hello):
    html = client_for(owner).get(_url("function_logs", hello)).content.decode()
    assert "<title>Logs · hello · acme · HKS Functions</title>" in html
    assert (
        'id="tab-logs" data-title="Logs · hello · acme · HKS Functions" class="current" aria-current="page"'
        in html
    )
    tabs = html[html.index('id="function-tabs"') : html.index('id="tab-content"')]
    assert tabs.count('aria-current="page"') == 1


def test_the_schedules_tab_url_reloads_as_the_whole_function_page(client_for, owner, hello):
    html = client_for(owner).get(_url("schedule_list", hello)).content.decode()
    assert 'id="function-tabs"' in html and f'id="function-{hello.pk}-status"' in html
    assert 'id="tab-schedules"' in html and 'aria-current="page"' in html
    assert f'id="function-{hello.pk}-schedules"' in html


def test_the_schedules_tab_fragment_stays_a_fragment(client_for, owner, hello):
    html = (
        client_for(owner)
        .get(_url("schedule_list", hello), HTTP_HX_REQUEST="true", HTTP_HX_TARGET="tab-content")
        .content.decode()
    )
    assert 'id="function-tabs"' not in html and f'id="function-{hello.pk}-schedules"' in html


def test_a_new_schedule_form_shows_no_error_before_anything_is_typed(client_for, owner, hello):
    html = client_for(owner).get(_url("schedule_list", hello)).content.decode()
    preview = client_for(owner).get(reverse("schedule_preview", kwargs={"project": "acme"}), {"cron": ""})
    assert "empty" not in html
    assert 'hx-trigger="input changed delay:300ms"' in html  # no "load": nothing to preview yet
    assert "empty" not in preview.content.decode() and preview.status_code == 200


def test_schedule_name_help_matches_the_validator(client_for, owner, hello):
    client = client_for(owner)
    page = client.get(_url("schedule_list", hello)).content.decode()
    refused = client.post(
        _url("schedule_create", hello),
        {"name": "nightly_job", "cron": "0 3 * * *", "timezone": "UTC", "method": "POST", "path": "/"},
    )
    assert "lowercase letters, digits and &#x27;-&#x27;" in page and "underscore" not in page
    assert refused.status_code == 400
    assert "is not a valid name" in refused.content.decode()
    assert not hello.schedules.exists()


def test_settings_errors_appear_once_beside_their_field(client_for, developer, hello):
    response = client_for(developer).post(
        _url("function_settings", hello),
        {
            "env": "",
            "min_scale": "0",
            "max_scale": "0",
            "target_concurrency": "100",
            "container_concurrency": "0",
            "cpu_millicores": "500",
            "memory_mb": "256",
            "timeout_seconds": "30",
        },
    )
    html = response.content.decode()
    assert response.status_code == 400
    message = "Ensure this value is greater than or equal to 1."
    assert html.count(message) == 1
    field = html[html.index('class="field field-max_scale has-error"') :]
    assert field.index(message) < field.index("</div>")


def _build(revision, status, started, seconds, **fields):
    return Build.objects.create(
        revision=revision,
        status=status,
        created_at=started,
        started_at=started,
        finished_at=started + dt.timedelta(seconds=seconds) if seconds is not None else None,
        **fields,
    )


def test_builds_are_numbered_per_function_with_duration_colour_and_readable_failure(
    client_for, owner, hello, project
):
    other = FunctionFactory(project=project, name="other")
    now = timezone.now()
    other_rev = Revision.objects.create(function=other, number=1, content_hash="x")
    _build(other_rev, "succeeded", now - dt.timedelta(minutes=9), 5)  # a global id ahead of hello's
    r1 = Revision.objects.create(function=hello, number=1, content_hash="a")
    r2 = Revision.objects.create(function=hello, number=2, content_hash="b")
    _build(r1, "succeeded", now - dt.timedelta(minutes=5), 42)
    failure = "npm ERR! code E404\nnpm ERR! 404 Not Found - left-pad\nnpm ERR! A complete log is elsewhere"
    _build(r2, "failed", now - dt.timedelta(minutes=1), 75, message=failure)

    html = client_for(owner).get(_url("function_builds", hello)).content.decode()

    assert "Build #2</strong>" in html and "Build #1</strong>" in html and "Build #3" not in html
    assert "1 min 15 s" in html and "42 s" in html
    assert "badge-bad" in html and "badge-ok" in html
    assert '<pre class="reason-text">npm ERR! code E404\nnpm ERR! 404 Not Found - left-pad\n' in html
    assert 'hx-trigger="every 4s"' in html  # a build started from the CLI shows up while you watch


def test_revisions_refresh_themselves_while_a_rollback_is_deploying(client_for, developer, hello):
    r1 = Revision.objects.create(function=hello, number=1, content_hash="a", artifact="/a")
    r2 = Revision.objects.create(function=hello, number=2, content_hash="b", artifact="/b")
    hello.current_revision, hello.desired_revision, hello.status = r2, r1, FunctionStatus.DEPLOYING
    hello.save()

    html = client_for(developer).get(_url("function_revisions", hello)).content.decode()
    fragment = client_for(developer).get(
        _url("function_revisions", hello), HTTP_HX_REQUEST="true", HTTP_HX_TARGET="revisions-panel"
    )

    assert 'id="revisions-panel" hx-get=' in html and 'hx-trigger="every 2s"' in html
    assert "Roll back to" not in html  # no second rollback offered while one is under way
    assert '<span class="tag busy">deploying</span>' in html
    assert fragment.content.decode().lstrip().startswith('<div id="revisions-panel"')


def test_the_overview_says_who_deployed_last(client_for, owner, hello, project):
    AuditEvent.objects.create(project=project, function=hello, actor=owner, action="function.deploy")
    html = client_for(owner).get(_url("function_detail", hello)).content.decode()
    assert 'id="overview-figures"' in html and 'id="overview-logs"' in html
    assert f'<strong id="last-deploy-by">{owner.username}</strong>' in html
    assert "requests, last hour" in html and "cold starts, last hour" in html


def test_the_invoke_pane_fills_a_binary_mode_cloudevent_for_a_cloudevents_function(
    client_for, developer, project
):
    events = FunctionFactory(project=project, name="events", kind="cloudevents", status="ready")
    html = client_for(developer).get(_url("function_invoke", events)).content.decode()
    assert "ce-specversion: 1.0" in html and "ce-type: dev.hks.sample" in html and "ce-id: " in html
    assert 'id="invoke-ce-help"' in html


def test_as_curl_quotes_for_the_shell():
    from functions.views.invoke import as_curl

    function = FunctionFactory.build(name="hello", url="http://hello.acme.localhost:8080")
    command = as_curl(function, {"method": "POST", "path": "/x", "headers": {"ce-id": "1"}, "body": "it's"})
    assert command == (
        "curl -i -X POST -H 'ce-id: 1' --data-raw 'it'\"'\"'s' http://hello.acme.localhost:8080/x"
    )


@pytest.fixture
def operator(db):
    return UserFactory(username="ops", is_staff=True)


PAGES = ("function_detail", "function_metrics", "function_logs", "function_revisions", "function_builds")
PAGES += ("function_invoke", "schedule_list", "function_settings")


@pytest.fixture
def tenant_state(hello, owner):
    """hello with two built revisions (2 serving) and a schedule, as an owner left them."""
    from functions.services import schedules as services_schedules

    r1 = Revision.objects.create(function=hello, number=1, content_hash="a", artifact="/a")
    r2 = Revision.objects.create(function=hello, number=2, content_hash="b", artifact="/b")
    hello.current_revision = hello.desired_revision = r2
    hello.save()
    schedule = services_schedules.schedule_create(
        function=hello, user=owner, name="nightly", cron="0 3 * * *"
    )
    return hello, r1, schedule


def _snapshot(function, schedule):
    f = type(function).objects.get(pk=function.pk)
    s = type(schedule).objects.get(pk=schedule.pk)
    p = f.project
    p.refresh_from_db()
    return (
        (
            f.status,
            f.env,
            f.min_scale,
            f.max_scale,
            f.memory_mb,
            f.current_revision_id,
            f.desired_revision_id,
        ),
        (s.cron, s.enabled, s.name),
        type(schedule).objects.filter(function=function).count(),
        (p.max_sessions, p.max_executions_per_minute, p.max_cpu_seconds_per_day, p.max_instances),
        AuditEvent.objects.count(),
    )


def _writes(function, schedule):
    """Every change a member may make from the dashboard, as (url, form data)."""
    sched = {"sched": schedule.name}
    settings_form = {"env": "X=1", "min_scale": "1", "max_scale": "3", "target_concurrency": "100"}
    settings_form |= {"container_concurrency": "0", "cpu_millicores": "250", "memory_mb": "64"}
    settings_form |= {"timeout_seconds": "30"}
    schedule_form = {"name": "other", "cron": "*/5 * * * *", "timezone": "UTC", "method": "POST", "path": "/"}
    return [
        (_url("function_settings", function), settings_form),
        (_url("revision_rollback", function, number=1), {}),
        (_url("function_invoke", function), {"method": "GET", "path": "/", "headers": "", "body": ""}),
        (_url("schedule_create", function), schedule_form),
        (_url("schedule_edit", function, **sched), {**schedule_form, "name": schedule.name}),
        (_url("schedule_pause", function, **sched), {}),
        (_url("schedule_delete", function, **sched), {}),
        (
            reverse("project_usage", kwargs={"project": "acme"}),
            {"max_sessions": "99"}
            | {"max_executions_per_minute": "99", "max_cpu_seconds_per_day": "99"}
            | {"max_instances": "99"},
        ),
        (_url("function_delete", function), {}),
    ]


def test_operators_open_a_tenants_pages_read_only_and_can_change_nothing(client_for, operator, tenant_state):
    hello, _, schedule = tenant_state
    client = client_for(operator)
    before = _snapshot(hello, schedule)

    listing = client.get(reverse("function_list", kwargs={"project": "acme"}))
    usage = client.get(reverse("project_usage", kwargs={"project": "acme"})).content.decode()
    pages = {view: client.get(_url(view, hello)) for view in PAGES}
    refused = {url: client.post(url, data).status_code for url, data in _writes(hello, schedule)}
    hx_refused = client.post(_url("revision_rollback", hello, number=1), HTTP_HX_REQUEST="true")

    assert listing.status_code == 200 and "hello" in listing.content.decode()
    assert {view: r.status_code for view, r in pages.items()} == dict.fromkeys(PAGES, 200)
    html = "".join(r.content.decode() for r in pages.values())
    assert html.count('id="read-only"') == len(PAGES)
    for control in (
        'id="settings-form"',
        'id="invoke-form"',
        'class="rollback"',
        "/delete/",
        "/schedules/new/",
    ):
        assert control not in html, f"{control} offered to a read-only operator"
    assert 'name="max_sessions"' not in usage
    assert set(refused.values()) <= {403, 404}, refused
    assert hx_refused.status_code in (403, 404)
    assert _snapshot(hello, schedule) == before  # nothing changed, nothing audited


def test_non_staff_outsiders_still_get_404_on_every_page(client_for, outsider, tenant_state):
    hello, _, schedule = tenant_state
    client = client_for(outsider)
    before = _snapshot(hello, schedule)

    gets = [
        reverse("function_list", kwargs={"project": "acme"}),
        reverse("project_usage", kwargs={"project": "acme"}),
    ]
    gets += [_url(view, hello) for view in PAGES]
    gets += [
        _url("function_logs_search", hello),
        _url("function_logs_download", hello),
        _url("function_status", hello),
    ]
    answers = {url: client.get(url).status_code for url in gets}
    answers |= {url: client.post(url, data).status_code for url, data in _writes(hello, schedule)}

    assert answers == dict.fromkeys(answers, 404)
    assert _snapshot(hello, schedule) == before


def test_the_api_gives_operators_no_read_access(api_client_for, operator, hello):
    assert api_client_for(operator).get("/api/v1/projects/acme/functions/hello").status_code == 404


def test_ops_links_to_tenants_pages_with_a_fixed_number_of_queries(client_for, operator, settings):
    from functions.views import ops as views_ops

    settings.HKS_RUNTIME_URL = "http://127.0.0.1:9"
    client = client_for(operator)

    def queries(functions: int) -> int:
        project = ProjectFactory()
        for _ in range(functions):
            FunctionFactory(project=project, status="failed", status_message="boom\nline two")
        with CaptureQueriesContext(connection) as captured:
            html = client.get(reverse("operators_overview")).content.decode()
        assert f'href="/p/{project.slug}/"' in html
        return len([q for q in captured.captured_queries if "functions_" in q["sql"] or "auth_" in q["sql"]])

    original = views_ops.queue_health
    views_ops.queue_health = lambda: views_ops.Health("Task queue", True, "not probed")
    try:
        assert queries(3) == queries(40)
    finally:
        views_ops.queue_health = original


def test_signed_out_the_sign_in_page_says_a_cli_sign_in_waits(db):
    page = Client().get("/accounts/login/", {"next": "/cli/approve?code=ABCD-EFGH"}).content.decode()
    assert 'id="cli-signin-notice"' in page and "hks login" in page


def _start():
    return (
        Client()
        .post("/api/v1/cli/login/start", {"client_name": "laptop"}, content_type="application/json")
        .json()
    )


def test_the_approval_page_shows_the_expiry_and_deny_refuses_the_cli(client_for, owner):
    started = _start()
    client = client_for(owner)
    page = client.get(f"/cli/approve?code={started['user_code']}").content.decode()
    denied = client.post("/cli/approve", {"code": started["user_code"], "decision": "deny"})
    poll = Client().post(
        "/api/v1/cli/login/poll", {"device_code": started["device_code"]}, content_type="application/json"
    )

    assert 'id="cli-expires"' in page and 'id="cli-deny-button"' in page
    assert "asks to act as" in page
    assert b"cli-approve-denied" in denied.content
    assert CliLoginRequest.objects.get().approved_by is None
    assert poll.status_code == 410
