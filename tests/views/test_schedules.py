"""The schedules fragment of the dashboard: list with next run and history, create/edit with errors,
live preview, pause/resume/delete, roles and tenancy."""

import pytest
from django.test import Client

from functions.models import Schedule, ScheduleRun
from functions.services import schedules as services_schedules
from tests.support.schedules import T0, hello, make_schedule  # noqa: F401  (fixtures of the schedule tests)

pytestmark = pytest.mark.django_db

BASE = "/p/acme/f/hello/schedules/"
PREVIEW = "/p/acme/schedules/preview/"
HTMX = {"HTTP_HX_REQUEST": "true"}


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def dev(developer, hello):
    return logged_in(developer)


@pytest.fixture
def nightly(make_schedule):
    return make_schedule(name="nightly", cron="30 2 * * *", timezone="Europe/Berlin", now=T0)


FORM = {
    "name": "tick",
    "cron": "*/5 * * * *",
    "timezone": "Europe/Berlin",
    "method": "POST",
    "path": "/",
    "headers": "X-Job: tick",
    "body": "",
    "concurrency_policy": "Forbid",
    "starting_deadline_seconds": "",
    "enabled": "on",
}


def test_full_page_and_fragment_show_next_run_in_the_schedules_zone(dev, nightly):
    page = dev.get(BASE)
    assert page.status_code == 200 and b"<html" in page.content
    fragment = dev.get(BASE, **HTMX)
    html = fragment.content.decode()
    assert "<html" not in html and f'id="function-{nightly.function.pk}-schedules"' in html
    assert "nightly" in html and "30 2 * * *" in html
    assert "2026-03-03 02:30 CET" in html  # next_run_at (T0 + 1 day) shown in Berlin time


def test_a_history_restore_gets_the_whole_page_with_its_tabs(dev, nightly):
    """htmx reloading the Schedules tab it kept no snapshot of swaps the whole body: the page, tab bar
    included, not the bare fragment."""
    page = dev.get(BASE, HTTP_HX_REQUEST="true", HTTP_HX_HISTORY_RESTORE_REQUEST="true").content.decode()
    assert "<html" in page and 'id="function-tabs"' in page and 'id="tab-schedules"' in page
    assert f'id="function-{nightly.function.pk}-schedules"' in page


def test_history_lists_recent_runs_with_status_duration_and_error(dev, nightly):
    ScheduleRun.objects.create(
        schedule=nightly, scheduled_for=T0, outcome="succeeded", status_code=200, duration_ms=42
    )
    ScheduleRun.objects.create(
        schedule=nightly,
        scheduled_for=T0.replace(hour=10),
        outcome="failed",
        status_code=500,
        error="HTTP 500: kaput",
    )
    html = dev.get(BASE, **HTMX).content.decode()
    assert "succeeded" in html and "42 ms" in html and "HTTP 500: kaput" in html
    assert html.index("HTTP 500: kaput") < html.index("42 ms")  # newest first


def test_list_queries_do_not_grow_with_schedules(dev, make_schedule, django_assert_max_num_queries):
    for n in range(6):
        schedule = make_schedule(name=f"s{n}", cron="* * * * *")
        for minute in range(3):
            ScheduleRun.objects.create(
                schedule=schedule, scheduled_for=T0.replace(minute=minute), outcome="succeeded"
            )
    with django_assert_max_num_queries(12):
        assert dev.get(BASE, **HTMX).status_code == 200


def test_create_from_the_form(dev):
    response = dev.post(BASE + "new/", FORM, **HTMX)
    assert response.status_code == 200
    schedule = Schedule.objects.get()
    assert (schedule.name, schedule.cron, schedule.timezone, schedule.concurrency_policy) == (
        "tick",
        "*/5 * * * *",
        "Europe/Berlin",
        "Forbid",
    )
    assert schedule.headers == {"X-Job": "tick"} and schedule.starting_deadline_seconds is None
    assert "tick" in response.content.decode()


def test_create_without_htmx_redirects_back_to_the_list(dev):
    response = dev.post(BASE + "new/", FORM)
    assert response.status_code == 302 and response["Location"] == BASE


def test_an_invalid_expression_is_shown_with_the_reason_and_nothing_is_saved(dev):
    response = dev.post(BASE + "new/", {**FORM, "cron": "0 0 * * MON#1"}, **HTMX)
    assert response.status_code == 400
    assert "not supported in this dialect" in response.content.decode()
    assert not Schedule.objects.exists()


def test_an_unknown_zone_is_refused(dev):
    response = dev.post(BASE + "new/", {**FORM, "timezone": "Europe/Atlantis"}, **HTMX)
    assert response.status_code == 400 and not Schedule.objects.exists()


def test_preview_shows_five_times_in_the_zone(dev):
    html = dev.get(PREVIEW, {"cron": "0 9 * * *", "timezone": "Asia/Tokyo"}, **HTMX).content.decode()
    assert "At 09:00 every day" in html
    assert html.count("<li>") == 5 and html.count("09:00 JST") == 5


def test_preview_shows_why_an_expression_is_refused(dev):
    html = dev.get(PREVIEW, {"cron": "0 0 * *", "timezone": "UTC"}, **HTMX).content.decode()
    assert 'id="schedule-preview-error"' in html and "has 4" in html


def test_edit_prefills_and_saves(dev, nightly):
    html = dev.get(BASE + "nightly/edit/", **HTMX).content.decode()
    assert 'value="30 2 * * *"' in html and "Edit schedule nightly" in html
    response = dev.post(BASE + "nightly/edit/", {**FORM, "name": "ignored", "cron": "0 4 * * *"}, **HTMX)
    assert response.status_code == 200
    nightly.refresh_from_db()
    assert nightly.cron == "0 4 * * *" and nightly.name == "nightly"


def test_pause_resume_delete(dev, nightly):
    dev.post(BASE + "nightly/pause/", **HTMX)
    assert Schedule.objects.get().enabled is False
    assert "paused" in dev.get(BASE, **HTMX).content.decode()
    dev.post(BASE + "nightly/resume/", **HTMX)
    assert Schedule.objects.get().enabled is True
    dev.post(BASE + "nightly/delete/", **HTMX)
    assert not Schedule.objects.exists()


def test_viewer_sees_schedules_but_no_form_and_cannot_change(viewer, nightly):
    client = logged_in(viewer)
    html = client.get(BASE, **HTMX).content.decode()
    assert "nightly" in html and 'id="schedule-form"' not in html
    assert client.post(BASE + "new/", FORM, **HTMX).status_code == 403
    assert client.post(BASE + "nightly/pause/", **HTMX).status_code == 403
    assert client.post(BASE + "nightly/delete/", **HTMX).status_code == 403
    assert Schedule.objects.get().enabled is True


def test_outsider_gets_404_on_every_schedule_view_and_nothing_changes(outsider, nightly):
    client = logged_in(outsider)
    for method, url, data in [
        ("get", BASE, None),
        ("post", BASE + "new/", FORM),
        ("get", BASE + "nightly/edit/", None),
        ("post", BASE + "nightly/edit/", {**FORM, "cron": "0 4 * * *"}),
        ("post", BASE + "nightly/pause/", None),
        ("post", BASE + "nightly/resume/", None),
        ("post", BASE + "nightly/delete/", None),
        ("get", PREVIEW, {"cron": "* * * * *", "timezone": "UTC"}),
    ]:
        assert getattr(client, method)(url, data, **HTMX).status_code == 404, (method, url)
    schedule = Schedule.objects.get()
    assert (schedule.cron, schedule.enabled, Schedule.objects.count()) == ("30 2 * * *", True, 1)


def test_anonymous_is_sent_to_login(nightly):
    response = Client().get(BASE)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_services_preview_matches_what_the_fragment_shows(dev):
    preview = services_schedules.schedule_preview(cron_expression="@daily", zone="UTC", now=T0)
    assert [t.isoformat() for t in preview["next_runs"]][:2] == [
        "2026-03-03T00:00:00+00:00",
        "2026-03-04T00:00:00+00:00",
    ]
