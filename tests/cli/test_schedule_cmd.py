"""``hks-func schedule …`` (hks_cli.schedule_cmd) against the real API: each command's request goes through
Django's test client to the schedules router, so parsing, paths and payloads are checked end to end."""

import argparse
import json

import pytest

from functions.models import Schedule, ScheduleRun
from hks_cli.schedule_cmd import add_schedule_commands
from tests.support.schedules import T0, hello  # noqa: F401  (fixtures of the schedule tests)

pytestmark = pytest.mark.django_db


class ApiError(Exception):
    pass


class ApiClient:
    """The small client schedule_cmd expects: get/post/patch/delete(path, json=...) -> parsed JSON."""

    def __init__(self, django_client, project="acme"):
        self.http = django_client
        self.config = argparse.Namespace(project=project)

    def _call(self, method, path, json_body=None):
        response = getattr(self.http, method)(
            "/api/v1" + path,
            data=json.dumps(json_body) if json_body is not None else None,
            content_type="application/json",
        )
        if response.status_code >= 400:
            raise ApiError(response.status_code, response.json()["detail"])
        return response.json() if response.content else None

    def get(self, path, **kw):
        return self._call("get", path, kw.get("json"))

    def post(self, path, **kw):
        return self._call("post", path, kw.get("json"))

    def patch(self, path, **kw):
        return self._call("patch", path, kw.get("json"))

    def delete(self, path, **kw):
        return self._call("delete", path, kw.get("json"))


@pytest.fixture
def cli(api_client_for, developer, hello, capsys):
    client = ApiClient(api_client_for(developer))
    parser = argparse.ArgumentParser(prog="hks-func")
    add_schedule_commands(parser.add_subparsers(dest="command"), lambda: client)

    def run(*argv):
        args = parser.parse_args(list(argv))
        code = args.handler(args)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_set_creates_a_schedule_with_every_option(cli, tmp_path):
    (tmp_path / "body.json").write_text('{"report": true}')
    code, out, _ = cli(
        "schedule",
        "set",
        "nightly",
        "--function",
        "hello",
        "--cron",
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "-X",
        "put",
        "--route",
        "/report",
        "-H",
        "X-Kind: nightly",
        "-d",
        f"@{tmp_path / 'body.json'}",
        "--concurrency",
        "Forbid",
        "--deadline",
        "600",
    )
    assert code == 0
    assert "Created schedule nightly: 30 2 * * * in Europe/Berlin — At 02:30 every day" in out
    s = Schedule.objects.get()
    assert (s.method, s.path, s.headers, s.body) == (
        "PUT",
        "/report",
        {"X-Kind": "nightly"},
        '{"report": true}',
    )
    assert (s.concurrency_policy, s.starting_deadline_seconds) == ("Forbid", 600)


def test_set_reads_the_function_name_from_func_yaml(cli, tmp_path):
    (tmp_path / "func.yaml").write_text("specVersion: 0.36.0\nname: hello\nruntime: node\n")
    code, _, _ = cli("schedule", "set", "tick", "-p", str(tmp_path), "--cron", "@hourly")
    assert code == 0 and Schedule.objects.get().cron == "0 * * * *"


def test_set_on_an_existing_schedule_changes_only_the_given_options(cli):
    cli(
        "schedule",
        "set",
        "tick",
        "-f",
        "hello",
        "--cron",
        "*/5 * * * *",
        "--tz",
        "Asia/Tokyo",
        "--deadline",
        "60",
    )
    code, out, _ = cli("schedule", "set", "tick", "-f", "hello", "--cron", "0 * * * *", "--no-deadline")
    assert code == 0 and out.startswith("Updated schedule tick")
    s = Schedule.objects.get()
    assert (s.cron, s.timezone, s.starting_deadline_seconds) == ("0 * * * *", "Asia/Tokyo", None)


def test_set_with_an_invalid_expression_reports_the_server_reason(cli):
    with pytest.raises(ApiError) as err:
        cli("schedule", "set", "tick", "-f", "hello", "--cron", "0 0 * * MON#1")
    assert err.value.args[0] == 400 and "not supported in this dialect" in err.value.args[1]
    assert not Schedule.objects.exists()


def test_a_new_schedule_needs_cron(cli):
    code, _, err = cli("schedule", "set", "tick", "-f", "hello")
    assert code == 2 and "needs --cron" in err


def test_list_shows_schedules_and_history(cli):
    cli("schedule", "set", "tick", "-f", "hello", "--cron", "* * * * *")
    ScheduleRun.objects.create(
        schedule=Schedule.objects.get(),
        scheduled_for=T0,
        outcome="succeeded",
        status_code=200,
        duration_ms=12,
    )
    code, out, _ = cli("schedule", "list", "-f", "hello")
    header, row = out.splitlines()
    assert header.split() == ["NAME", "CRON", "TIMEZONE", "STATE", "NEXT", "RUN", "LAST", "RUN"]
    assert row.startswith("tick") and "enabled" in row and "2026-03-02 09:00:00 UTC succeeded 200" in row
    code, out, _ = cli("schedule", "list", "-f", "hello", "--runs", "tick")
    assert "succeeded" in out and "12 ms" in out
    code, out, _ = cli("schedule", "list", "-f", "hello", "-o", "json")
    assert json.loads(out)[0]["last_run"]["status_code"] == 200


def test_pause_resume_remove(cli):
    cli("schedule", "set", "tick", "-f", "hello", "--cron", "* * * * *")
    assert cli("schedule", "pause", "tick", "-f", "hello")[1].startswith("Schedule tick is paused")
    assert Schedule.objects.get().enabled is False
    cli("schedule", "resume", "tick", "-f", "hello")
    assert Schedule.objects.get().enabled is True
    assert cli("schedule", "remove", "tick", "-f", "hello")[1].strip() == "Removed schedule tick."
    assert not Schedule.objects.exists()


def test_preview_prints_the_next_five_times_or_the_reason(cli):
    code, out, _ = cli("schedule", "preview", "30 2 * * *", "--tz", "Europe/Berlin")
    assert code == 0 and out.splitlines()[0] == "30 2 * * * in Europe/Berlin: At 02:30 every day"
    assert len(out.splitlines()) == 6
    code, _, err = cli("schedule", "preview", "0 0 * *")
    assert code == 1 and "has 4" in err


def test_an_outsider_gets_not_found(api_client_for, outsider, hello, capsys):
    client = ApiClient(api_client_for(outsider))
    parser = argparse.ArgumentParser()
    add_schedule_commands(parser.add_subparsers(), lambda: client)
    args = parser.parse_args(["schedule", "set", "tick", "-f", "hello", "--cron", "* * * * *"])
    with pytest.raises(ApiError) as err:
        args.handler(args)
    assert err.value.args[0] == 404 and not Schedule.objects.exists()


def test_wired_into_hks_func():
    from hks_cli.func import build_parser

    parser, own = build_parser()
    assert "schedule" in own
    args = parser.parse_args(["schedule", "list", "-f", "hello"])
    assert callable(args.handler)
