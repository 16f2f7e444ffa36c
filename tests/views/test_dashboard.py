"""Dashboard pages and htmx fragments, each with the outsider who gets nothing."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from functions.models import AuditEvent, Build, Function, FunctionStatus, Revision, Schedule
from tests.support.factories import FunctionFactory, ProjectFactory

pytestmark = pytest.mark.usefixtures("no_prometheus")

HX = {"HTTP_HX_REQUEST": "true"}


def _url(view, function, **extra):
    return reverse(view, kwargs={"project": function.project.slug, "name": function.name, **extra})


def _revision(function, number, artifact="/artifacts/x"):
    return Revision.objects.create(
        function=function,
        number=number,
        content_hash=f"{number:064d}",
        archive=f"a/{number}.tar.gz",
        artifact=artifact,
    )


# The list --------------------------------------------------------------------------------------------


def test_anonymous_visitor_is_sent_to_sign_in(client, hello):
    response = client.get(reverse("function_list", kwargs={"project": "acme"}))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_list_shows_status_url_and_revision(client_for, owner, hello):
    hello.current_revision = _revision(hello, 3)
    hello.replicas = 2
    hello.save()

    response = client_for(owner).get(reverse("function_list", kwargs={"project": "acme"}))

    html = response.content.decode()
    assert response.status_code == 200
    assert f'id="function-{hello.pk}-status"' in html
    assert (
        "http://hello.acme.localhost:8080" in html and 'data-copy="http://hello.acme.localhost:8080"' in html
    )
    assert "hello-00003" in html
    assert "Ready" in html


def test_ready_function_without_replicas_shows_scaled_to_zero(client_for, owner, hello):
    response = client_for(owner).get(reverse("function_list", kwargs={"project": "acme"}))

    assert "Scaled to zero" in response.content.decode()


def test_failed_function_shows_its_reason(client_for, owner, project):
    FunctionFactory(project=project, name="broken", status="failed", status_message="build failed: npm ERR!")

    response = client_for(owner).get(reverse("function_list", kwargs={"project": "acme"}))

    assert "build failed: npm ERR!" in response.content.decode()


def test_list_shows_next_scheduled_run(client_for, owner, hello):
    import datetime as dt

    soon = dt.datetime(2031, 1, 2, 3, 4, tzinfo=dt.UTC)
    Schedule.objects.create(function=hello, name="later", cron="* * * * *", next_run_at=soon.replace(hour=9))
    Schedule.objects.create(function=hello, name="soon", cron="* * * * *", next_run_at=soon)
    Schedule.objects.create(
        function=hello, name="off", cron="* * * * *", next_run_at=soon.replace(hour=1), enabled=False
    )

    response = client_for(owner).get(reverse("function_list", kwargs={"project": "acme"}))

    assert "2031-01-02 03:04 UTC" in response.content.decode()


def test_search_and_status_filter(client_for, owner, project):
    FunctionFactory(project=project, name="alpha", status="ready", replicas=1)
    FunctionFactory(project=project, name="beta", status="ready", replicas=0)
    FunctionFactory(project=project, name="gamma", status="failed")
    url = reverse("function_list", kwargs={"project": "acme"})
    client = client_for(owner)

    idle = client.get(url, {"status": "scaled-to-zero"}).content.decode()
    failed = client.get(url, {"status": "failed"}).content.decode()
    searched = client.get(url, {"q": "alp"}).content.decode()

    assert ">beta<" in idle and ">alpha<" not in idle and ">gamma<" not in idle
    assert ">gamma<" in failed and ">beta<" not in failed
    assert ">alpha<" in searched and ">beta<" not in searched


def test_sort_by_name_descending(client_for, owner, project):
    for name in ("aaa", "zzz", "mmm"):
        FunctionFactory(project=project, name=name)

    html = client_for(owner).get(reverse("function_list", kwargs={"project": "acme"}), {"sort": "-name"})
    html = html.content.decode()

    assert html.index(">zzz<") < html.index(">mmm<") < html.index(">aaa<")


def test_column_headers_sort_and_turn_the_order_around_keeping_the_filters(client_for, owner, project):
    FunctionFactory(project=project, name="aaa")
    url = reverse("function_list", kwargs={"project": "acme"})
    client = client_for(owner)

    plain = client.get(url, {"q": "a"}).content.decode()
    assert '<th scope="col" aria-sort="ascending"><a href="?q=a&amp;sort=-name">Name</a></th>' in plain
    assert '<a href="?q=a&amp;sort=-memory">Memory</a></th>' in plain  # highest first at the first click
    assert '<th scope="col"><a href="?q=a&amp;sort=-deployed">Last deploy</a></th>' in plain  # newest first
    by_name_desc = client.get(url, {"q": "a", "sort": "-name"}).content.decode()
    assert '<th scope="col" aria-sort="descending"><a href="?q=a&amp;sort=name">Name</a></th>' in by_name_desc
    by_memory = client.get(url, {"q": "a", "sort": "-memory"}).content.decode()
    assert 'aria-sort="descending"><a href="?q=a&amp;sort=memory">Memory</a></th>' in by_memory


@pytest.mark.parametrize(
    ("label", "first", "second"),
    [
        ("Status", "status", "-status"),
        ("Runtime", "runtime", "-runtime"),
        ("Req/min", "-rpm", "rpm"),
        ("p95", "-p95", "p95"),
        ("Errors", "-errors", "errors"),
        ("CPU", "-cpu", "cpu"),
        ("Memory", "-memory", "memory"),
        ("Last deploy", "-deployed", "deployed"),
    ],
)
def test_every_column_header_turns_the_order_around_on_a_second_click(
    client_for, owner, project, label, first, second
):
    FunctionFactory(project=project, name="aaa")
    url = reverse("function_list", kwargs={"project": "acme"})
    client = client_for(owner)

    after_first = client.get(url, {"sort": first}).content.decode()
    after_second = client.get(url, {"sort": second}).content.decode()

    assert f'<a href="?sort={second}">{label}</a></th>' in after_first
    assert f'<a href="?sort={first}">{label}</a></th>' in after_second


def test_deleted_functions_are_not_listed(client_for, owner, project):
    FunctionFactory(project=project, name="gone", status="deleted")

    html = client_for(owner).get(reverse("function_list", kwargs={"project": "acme"})).content.decode()

    assert ">gone<" not in html


def test_empty_project_shows_how_to_start(client_for, owner):
    html = client_for(owner).get(reverse("function_list", kwargs={"project": "acme"})).content.decode()

    assert 'id="getting-started"' in html
    for command in (
        "hks login",
        "hks project select acme",
        "hks-func create -l node my-function",
        "hks-func deploy",
    ):
        assert command in html


def test_htmx_poll_gets_only_the_rows_fragment(client_for, owner, hello):
    response = client_for(owner).get(reverse("function_list", kwargs={"project": "acme"}), **HX)

    html = response.content.decode()
    assert html.lstrip().startswith('<div id="function-rows"')
    assert "<html" not in html
    assert f'id="function-{hello.pk}"' in html


def test_outsider_gets_404_for_the_list_and_its_fragment(client_for, outsider, hello):
    url = reverse("function_list", kwargs={"project": "acme"})

    assert client_for(outsider).get(url).status_code == 404
    assert client_for(outsider).get(url, **HX).status_code == 404


def test_list_metrics_unavailable_is_said_not_a_500(client_for, owner, hello):
    response = client_for(owner).get(reverse("function_list", kwargs={"project": "acme"}))

    assert response.status_code == 200
    assert 'id="metrics-unavailable"' in response.content.decode()
    assert "functions still run and scale" in response.content.decode()  # what it costs, said plainly


def test_project_switcher_lists_only_my_projects(client_for, owner, outsider, hello):
    html = client_for(owner).get(reverse("function_list", kwargs={"project": "acme"})).content.decode()

    assert 'href="/p/acme/"' in html
    assert "globex" not in html


def _functions(project, count):
    for i in range(count):
        FunctionFactory(
            project=project, name=f"fn-{i:04d}", status="ready", url=f"http://fn-{i}.acme.localhost"
        )
    for function in Function.objects.filter(project=project):
        function.current_revision = _revision(function, 1)
        function.save()
        Schedule.objects.create(function=function, name="tick", cron="* * * * *")


def _count_queries(client, url):
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


def test_list_queries_do_not_grow_with_the_number_of_functions(client_for, owner, project):
    small = ProjectFactory(slug="small")
    owner.memberships.create(project=small, role="owner")
    _functions(small, 10)
    _functions(project, 1000)
    client = client_for(owner)
    _count_queries(client, "/p/small/")  # warm the session and caches

    few = _count_queries(client, "/p/small/")
    many = _count_queries(client, "/p/acme/")

    assert few == many


# The detail page and its tabs ------------------------------------------------------------------------

TABS = [
    "function_detail",
    "function_metrics",
    "function_logs",
    "function_revisions",
    "function_builds",
    "function_invoke",
    "function_settings",
]


@pytest.mark.parametrize("view", TABS)
def test_every_tab_renders_for_a_viewer(client_for, viewer, hello, view):
    response = client_for(viewer).get(_url(view, hello))

    assert response.status_code == 200
    assert 'id="tab-content"' in response.content.decode()


@pytest.mark.parametrize("view", TABS + ["function_status", "function_logs_download", "function_delete"])
def test_outsider_gets_404_for_every_tab(client_for, outsider, hello, view):
    assert client_for(outsider).get(_url(view, hello)).status_code == 404
    assert client_for(outsider).get(_url(view, hello), **HX).status_code == 404


def test_tab_requested_by_htmx_is_only_the_fragment(client_for, viewer, hello):
    response = client_for(viewer).get(_url("function_revisions", hello), HTTP_HX_TARGET="tab-content", **HX)

    html = response.content.decode()
    assert 'id="revisions"' in html
    assert 'id="function-tabs"' not in html


def test_status_fragment_has_a_stable_id(client_for, viewer, hello):
    html = client_for(viewer).get(_url("function_status", hello), **HX).content.decode()

    assert html.startswith(f'<div id="function-{hello.pk}-status"')


def test_metrics_tab_says_unavailable_when_prometheus_is_down(client_for, viewer, hello):
    response = client_for(viewer).get(_url("function_metrics", hello), {"window": "6h"})

    assert response.status_code == 200
    assert 'id="metrics-unavailable"' in response.content.decode()


def test_metrics_panel_fragment(client_for, viewer, hello):
    response = client_for(viewer).get(_url("function_metrics", hello), HTTP_HX_TARGET="metrics-panel", **HX)

    assert response.content.decode().startswith('<div id="metrics-panel"')


def test_overview_shows_scale_settings_and_conditions(client_for, viewer, hello):
    hello.status_message = "revision hello-00002 is not ready: exit code 1"
    hello.min_scale, hello.max_scale = 1, 7
    hello.save()

    html = client_for(viewer).get(_url("function_detail", hello)).content.decode()

    assert "1 – 7 instances" in html
    assert "exit code 1" in html


# Revisions and roll back -----------------------------------------------------------------------------


def test_rollback_points_the_function_at_an_older_revision(
    client_for, developer, hello, django_capture_on_commit_callbacks
):
    old, new = _revision(hello, 1), _revision(hello, 2)
    hello.current_revision = new
    hello.save()

    with django_capture_on_commit_callbacks() as callbacks:
        response = client_for(developer).post(_url("revision_rollback", hello, number=1))

    assert response.status_code == 302
    hello.refresh_from_db()
    assert hello.status == FunctionStatus.DEPLOYING
    assert AuditEvent.objects.filter(function=hello, action="function.rollback", detail__revision=1).exists()
    assert len(callbacks) == 1  # the deploy task, enqueued on commit
    assert old.pk != new.pk


def test_rollback_to_a_never_built_revision_is_refused(client_for, developer, hello):
    _revision(hello, 1, artifact="")

    response = client_for(developer).post(_url("revision_rollback", hello, number=1), **HX)

    assert response.status_code == 409
    assert "never built" in response.content.decode()
    hello.refresh_from_db()
    assert hello.status == "ready"


def test_viewer_cannot_roll_back(client_for, viewer, hello):
    _revision(hello, 1)

    response = client_for(viewer).post(_url("revision_rollback", hello, number=1))

    assert response.status_code == 403
    assert not AuditEvent.objects.filter(action="function.rollback").exists()


def test_outsider_cannot_roll_back(client_for, outsider, hello):
    _revision(hello, 1)

    response = client_for(outsider).post(_url("revision_rollback", hello, number=1))

    assert response.status_code == 404
    hello.refresh_from_db()
    assert hello.status == "ready"


def test_rollback_button_only_for_developers(client_for, viewer, developer, hello):
    _revision(hello, 1)

    assert "Roll back to 1" not in client_for(viewer).get(_url("function_revisions", hello)).content.decode()
    assert "Roll back to 1" in client_for(developer).get(_url("function_revisions", hello)).content.decode()


# Builds ----------------------------------------------------------------------------------------------


def test_running_build_fragment_polls_itself_and_a_finished_one_stops(client_for, viewer, hello):
    build = Build.objects.create(revision=_revision(hello, 1), status="running", log="step 1\n")
    url = _url("build_detail", hello, build_id=build.pk)

    running = client_for(viewer).get(url, HTTP_HX_TARGET=f"build-{build.pk}", **HX).content.decode()
    Build.objects.filter(pk=build.pk).update(status="succeeded", log="step 1\nstep 2\n")
    finished = client_for(viewer).get(url, HTTP_HX_TARGET=f"build-{build.pk}", **HX).content.decode()

    assert 'hx-trigger="every 2s"' in running and "step 1" in running
    assert "hx-trigger" not in finished and "step 2" in finished


def test_build_of_another_function_is_404(client_for, owner, hello, project):
    other = FunctionFactory(project=project, name="other")
    build = Build.objects.create(revision=_revision(other, 1))

    assert client_for(owner).get(_url("build_detail", hello, build_id=build.pk)).status_code == 404


def test_outsider_gets_404_for_a_build(client_for, outsider, hello):
    build = Build.objects.create(revision=_revision(hello, 1), log="secret build output")

    response = client_for(outsider).get(_url("build_detail", hello, build_id=build.pk))

    assert response.status_code == 404
    assert b"secret build output" not in response.content


# Invoke ----------------------------------------------------------------------------------------------


def test_invoking_a_function_without_a_revision_says_why(client_for, developer, hello):
    response = client_for(developer).post(
        _url("function_invoke", hello),
        {"method": "GET", "path": "/", "headers": "", "body": ""},
        HTTP_HX_TARGET="invoke-result",
        **HX,
    )

    assert response.status_code == 409
    assert "no deployed revision" in response.content.decode()


def test_invoke_rejects_malformed_headers(client_for, developer, hello):
    response = client_for(developer).post(
        _url("function_invoke", hello),
        {"method": "POST", "path": "/", "headers": "no colon here", "body": ""},
    )

    assert response.status_code == 400
    assert "Name: value" in response.content.decode()


def test_viewer_cannot_invoke(client_for, viewer, hello):
    response = client_for(viewer).post(_url("function_invoke", hello), {"method": "GET", "path": "/"})

    assert response.status_code == 403


def test_outsider_cannot_invoke(client_for, outsider, hello):
    response = client_for(outsider).post(_url("function_invoke", hello), {"method": "GET", "path": "/"})

    assert response.status_code == 404


# Settings and delete ---------------------------------------------------------------------------------

SETTINGS = {
    "env": "GREETING=hi\nMODE = fast",
    "min_scale": 1,
    "max_scale": 4,
    "target_concurrency": 50,
    "container_concurrency": 0,
    "cpu_millicores": 250,
    "memory_mb": 128,
    "timeout_seconds": 30,
}


def test_settings_are_saved_through_the_service(client_for, developer, hello):
    response = client_for(developer).post(_url("function_settings", hello), SETTINGS)

    assert response.status_code == 302
    hello.refresh_from_db()
    assert hello.env == {"GREETING": "hi", "MODE": "fast"}
    assert (hello.min_scale, hello.max_scale, hello.memory_mb) == (1, 4, 128)
    assert AuditEvent.objects.filter(function=hello, action="function.settings").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"env": "1BAD=x"}, "not a valid environment variable name"),
        ({"min_scale": 5, "max_scale": 2}, "min scale cannot be above max scale"),
        ({"memory_mb": 100000}, "over the project"),
    ],
)
def test_bad_settings_are_refused_and_change_nothing(client_for, developer, hello, change, message):
    response = client_for(developer).post(_url("function_settings", hello), {**SETTINGS, **change})

    assert response.status_code == 400
    assert message in response.content.decode()
    assert Function.objects.get(pk=hello.pk).env == {}
    assert not AuditEvent.objects.filter(action="function.settings").exists()


def test_viewer_and_outsider_cannot_change_settings(client_for, viewer, outsider, hello):
    assert client_for(viewer).post(_url("function_settings", hello), SETTINGS).status_code == 403
    assert client_for(outsider).post(_url("function_settings", hello), SETTINGS).status_code == 404
    assert Function.objects.get(pk=hello.pk).env == {}


def test_delete_asks_for_confirmation_then_deletes(client_for, developer, hello):
    client = client_for(developer)

    page = client.get(_url("function_delete", hello)).content.decode()
    response = client.post(_url("function_delete", hello))

    assert "hx-confirm" in page and 'action="/p/acme/f/hello/delete/"' in page
    assert response.status_code == 302 and response["Location"] == "/p/acme/"
    assert Function.objects.get(pk=hello.pk).status == FunctionStatus.DELETING


def test_delete_from_htmx_redirects_the_client(client_for, developer, hello):
    response = client_for(developer).post(_url("function_delete", hello), **HX)

    assert response["HX-Redirect"] == "/p/acme/"


def test_viewer_and_outsider_cannot_delete(client_for, viewer, outsider, hello):
    assert client_for(viewer).post(_url("function_delete", hello)).status_code == 403
    assert client_for(outsider).post(_url("function_delete", hello)).status_code == 404
    assert Function.objects.get(pk=hello.pk).status == "ready"


def test_detail_tabs_include_the_schedules_fragment(client_for, viewer, hello):
    html = client_for(viewer).get(_url("function_detail", hello)).content.decode()
    schedules = client_for(viewer).get(_url("schedule_list", hello), HTTP_HX_TARGET="tab-content", **HX)

    assert 'id="tab-schedules"' in html and 'href="/p/acme/f/hello/schedules/"' in html
    assert schedules.status_code == 200
    assert f'id="function-{hello.pk}-schedules"' in schedules.content.decode()
