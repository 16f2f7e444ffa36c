"""The schedules API: create/read/update/pause/resume/delete, history, preview, refusals, tenancy."""

import datetime as dt
import json
import zoneinfo

import pytest

from functions.models import AuditEvent, Schedule, ScheduleRun
from tests.support.schedules import T0, hello  # noqa: F401  (fixtures of the schedule tests)

pytestmark = pytest.mark.django_db

URL = "/api/v1/projects/acme/functions/hello/schedules"
PREVIEW = "/api/v1/projects/acme/schedules/preview"


def send(client, method, url, body=None):
    return getattr(client, method)(
        url, data=json.dumps(body) if body is not None else None, content_type="application/json"
    )


@pytest.fixture
def dev_api(api_client_for, developer, hello):
    return api_client_for(developer)


def test_developer_creates_a_schedule_and_reads_it_back(dev_api):
    response = send(
        dev_api,
        "post",
        URL,
        {
            "name": "nightly",
            "cron": "30 2 * * *",
            "timezone": "Europe/Berlin",
            "method": "GET",
            "path": "/report",
            "headers": {"X-Kind": "nightly"},
            "concurrency_policy": "Forbid",
            "starting_deadline_seconds": 600,
        },
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["explanation"] == "At 02:30 every day"
    assert body["next_run_at"] is not None and body["last_run"] is None
    detail = dev_api.get(f"{URL}/nightly").json()
    assert (detail["cron"], detail["timezone"], detail["method"], detail["path"]) == (
        "30 2 * * *",
        "Europe/Berlin",
        "GET",
        "/report",
    )
    assert detail["headers"] == {"X-Kind": "nightly"} and detail["starting_deadline_seconds"] == 600
    assert [s["name"] for s in dev_api.get(URL).json()] == ["nightly"]
    assert AuditEvent.objects.filter(action="schedule.create").count() == 1


def test_macros_are_stored_as_five_fields(dev_api):
    assert send(dev_api, "post", URL, {"name": "h", "cron": "@hourly"}).json()["cron"] == "0 * * * *"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"name": "x", "cron": "61 * * * *"}, "bad minute"),
        ({"name": "x", "cron": "0 0 * * * *"}, "5 fields"),
        ({"name": "x", "cron": "@every 5m"}, "unknown macro"),
        ({"name": "x", "cron": "0 0 * * *", "timezone": "Europe/Atlantis"}, "unknown time zone"),
        ({"name": "x", "cron": "0 0 * * *", "method": "BREW"}, "method must be one of"),
        ({"name": "x", "cron": "0 0 * * *", "path": "http://evil/"}, "path must be a path"),
        ({"name": "x", "cron": "0 0 * * *", "path": "/../other"}, "'..' segments"),
        ({"name": "x", "cron": "0 0 * * *", "headers": {"Host": "evil"}}, "set by the platform"),
        ({"name": "x", "cron": "0 0 * * *", "headers": {"X-A": "a\r\nB: c"}}, "invalid value"),
        ({"name": "x", "cron": "0 0 * * *", "concurrency_policy": "Sometimes"}, "concurrency_policy"),
        ({"name": "x", "cron": "0 0 * * *", "starting_deadline_seconds": 0}, "starting_deadline"),
        ({"name": "Not_A_Label", "cron": "0 0 * * *"}, "schedule name"),
    ],
)
def test_bad_input_is_refused_with_the_reason_and_nothing_is_saved(dev_api, body, reason):
    response = send(dev_api, "post", URL, body)
    assert response.status_code == 400, response.content
    assert reason in response.json()["detail"]
    assert not Schedule.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="schedule").exists()


def test_duplicate_name_is_a_conflict(dev_api):
    send(dev_api, "post", URL, {"name": "tick", "cron": "* * * * *"})
    response = send(dev_api, "post", URL, {"name": "tick", "cron": "0 * * * *"})
    assert response.status_code == 409
    assert Schedule.objects.get().cron == "* * * * *"


def test_patch_changes_only_given_fields_and_recomputes_next_run(dev_api):
    send(dev_api, "post", URL, {"name": "tick", "cron": "0 3 * * *", "starting_deadline_seconds": 60})
    before = Schedule.objects.get()
    response = send(
        dev_api, "patch", f"{URL}/tick", {"cron": "*/5 * * * *", "starting_deadline_seconds": None}
    )
    assert response.status_code == 200, response.content
    after = Schedule.objects.get()
    assert (after.cron, after.starting_deadline_seconds, after.method) == ("*/5 * * * *", None, "POST")
    assert after.next_run_at < before.next_run_at


def test_patch_with_null_fields_leaves_them_alone(dev_api):
    send(dev_api, "post", URL, {"name": "tick", "cron": "0 3 * * *", "body": "x"})
    response = send(dev_api, "patch", f"{URL}/tick", {"enabled": None, "body": None, "method": "GET"})
    assert response.status_code == 200, response.content
    schedule = Schedule.objects.get()
    assert (schedule.enabled, schedule.body, schedule.method) == (True, "x", "GET")


def test_patch_with_an_invalid_zone_changes_nothing(dev_api):
    send(dev_api, "post", URL, {"name": "tick", "cron": "0 3 * * *"})
    before = Schedule.objects.get()
    response = send(dev_api, "patch", f"{URL}/tick", {"cron": "0 4 * * *", "timezone": "Nowhere/Town"})
    assert response.status_code == 400 and "unknown time zone" in response.json()["detail"]
    after = Schedule.objects.get()
    assert (after.cron, after.timezone, after.next_run_at) == (
        before.cron,
        before.timezone,
        before.next_run_at,
    )


def test_pause_and_resume(dev_api):
    send(dev_api, "post", URL, {"name": "tick", "cron": "* * * * *"})
    paused = dev_api.post(f"{URL}/tick/pause").json()
    assert paused["enabled"] is False and paused["next_run_at"] is None
    resumed = dev_api.post(f"{URL}/tick/resume").json()
    assert resumed["enabled"] is True and resumed["next_run_at"] is not None


def test_delete_removes_the_schedule_and_its_history(dev_api):
    send(dev_api, "post", URL, {"name": "tick", "cron": "* * * * *"})
    ScheduleRun.objects.create(schedule=Schedule.objects.get(), scheduled_for=T0, outcome="succeeded")
    assert dev_api.delete(f"{URL}/tick").status_code == 204
    assert not Schedule.objects.exists() and not ScheduleRun.objects.exists()
    assert dev_api.get(f"{URL}/tick").status_code == 404


def test_run_history_newest_first_and_last_run_in_list(dev_api):
    send(dev_api, "post", URL, {"name": "tick", "cron": "* * * * *"})
    schedule = Schedule.objects.get()
    for minute, outcome in ((0, "succeeded"), (1, "failed"), (2, "skipped")):
        ScheduleRun.objects.create(
            schedule=schedule,
            scheduled_for=T0.replace(minute=minute),
            outcome=outcome,
            status_code=200 if outcome == "succeeded" else None,
        )
    runs = dev_api.get(f"{URL}/tick/runs").json()
    assert [r["outcome"] for r in runs] == ["skipped", "failed", "succeeded"]
    assert dev_api.get(f"{URL}/tick/runs?limit=1").json()[0]["outcome"] == "skipped"
    assert dev_api.get(URL).json()[0]["last_run"]["outcome"] == "skipped"


def test_preview_gives_the_next_five_times_in_the_zone(dev_api):
    response = send(dev_api, "post", PREVIEW, {"cron": "30 2 * * *", "timezone": "Europe/Berlin"})
    body = response.json()
    assert (
        response.status_code == 200 and body["valid"] is True and body["explanation"] == "At 02:30 every day"
    )
    times = [dt.datetime.fromisoformat(t) for t in body["next_runs"]]
    assert len(times) == 5 and times == sorted(times)
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    for when in times:  # shown in the zone: local 02:30 (03:00 on a spring-forward day)
        assert when.utcoffset() == when.astimezone(berlin).utcoffset()
        assert (when.hour, when.minute) in ((2, 30), (3, 0))


def test_preview_says_why_an_expression_is_invalid(dev_api):
    body = send(dev_api, "post", PREVIEW, {"cron": "0 0 * * MON#2", "timezone": "UTC"}).json()
    assert body["valid"] is False and "day of week" in body["error"] and body["next_runs"] == []
    body = send(dev_api, "post", PREVIEW, {"cron": "0 0 * * *", "timezone": "Moon/Base"}).json()
    assert body["valid"] is False and "unknown time zone" in body["error"]


def test_viewer_reads_but_cannot_change(api_client_for, viewer, developer, hello):
    send(api_client_for(developer), "post", URL, {"name": "tick", "cron": "* * * * *"})
    client = api_client_for(viewer)
    assert client.get(URL).status_code == 200
    assert client.get(f"{URL}/tick/runs").status_code == 200
    assert send(client, "post", URL, {"name": "other", "cron": "* * * * *"}).status_code == 403
    assert send(client, "patch", f"{URL}/tick", {"cron": "0 * * * *"}).status_code == 403
    assert client.post(f"{URL}/tick/pause").status_code == 403
    assert client.delete(f"{URL}/tick").status_code == 403
    assert Schedule.objects.get().cron == "* * * * *" and Schedule.objects.get().enabled


def test_outsider_gets_404_on_every_schedule_endpoint_and_nothing_changes(
    api_client_for, developer, outsider, hello
):
    send(api_client_for(developer), "post", URL, {"name": "tick", "cron": "* * * * *"})
    client = api_client_for(outsider)
    calls = [
        ("get", URL, None),
        ("post", URL, {"name": "x", "cron": "* * * * *"}),
        ("get", f"{URL}/tick", None),
        ("patch", f"{URL}/tick", {"cron": "0 * * * *"}),
        ("delete", f"{URL}/tick", None),
        ("post", f"{URL}/tick/pause", None),
        ("post", f"{URL}/tick/resume", None),
        ("get", f"{URL}/tick/runs", None),
        ("post", PREVIEW, {"cron": "* * * * *", "timezone": "UTC"}),
    ]
    for method, url, body in calls:
        assert send(client, method, url, body).status_code == 404, (method, url)
    schedule = Schedule.objects.get()
    assert (schedule.name, schedule.cron, schedule.enabled) == ("tick", "* * * * *", True)
