"""The CronJob's trigger command, run as its container runs it (``sh -c`` then curl, the curl image's
tools) against a local HTTP server: the request carries the headers docs/schedules.md promises -
``User-Agent: hks-scheduler/1``, ``X-HKS-Schedule``, ``X-HKS-Scheduled-For`` (the scheduled minute, from
the Job's name), binary-mode CloudEvent ``ce-*`` headers for CloudEvents functions - with the schedule's
own headers last and winning."""

from __future__ import annotations

import dataclasses
import datetime as dt
import http.server
import subprocess
import threading

import pytest

from functions.backends import k8s_manifests as m
from functions.backends import k8s_schedules as schedules_k8s
from functions.backends.base import FunctionRef, ScheduleSpec
from tests.support.needs import require_binary

REF = FunctionRef(project="acme", namespace="acme", function="hello")
# The CronJob controller names a Job "<cronjob>-<scheduled time in minutes since the epoch>".
SCHEDULED_MINUTE = 29_000_000
SCHEDULED_FOR = dt.datetime.fromtimestamp(SCHEDULED_MINUTE * 60, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
JOB_NAME = f"hks-cron-hello-nightly-{SCHEDULED_MINUTE}"


@pytest.fixture
def server():
    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("content-length", 0))
            received.append((self.command, self.path, self.headers, self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        do_GET = do_POST

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", received
    httpd.shutdown()


def schedule(url: str, **changes) -> ScheduleSpec:
    values = dict(
        ref=REF,
        name="nightly",
        cron="0 3 * * *",
        timezone="UTC",
        method="POST",
        path="/run",
        headers={"X-Kind": "cron"},
        body='{"a": 1}',
        enabled=True,
        concurrency_policy="Allow",
        starting_deadline_seconds=None,
        target_url=url + "/run",
    )
    values.update(changes)
    return ScheduleSpec(**values)


def fire(spec: ScheduleSpec, job_name: str = JOB_NAME):
    require_binary("curl")
    container = schedules_k8s.cron_job(spec, m.ClusterSettings())["spec"]["jobTemplate"]["spec"]["template"][
        "spec"
    ]["containers"][0]
    assert container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['job-name']"
    env = {"HKS_JOB": job_name, "PATH": "/usr/bin:/bin"}
    subprocess.run(container["command"], env=env, check=True, timeout=30)


def test_a_schedule_sends_the_documented_headers_and_its_own_last(server):
    url, received = server
    fire(schedule(url))
    ((method, path, headers, body),) = received
    assert (method, path, body) == ("POST", "/run", b'{"a": 1}')
    assert headers["User-Agent"] == "hks-scheduler/1"
    assert headers["X-HKS-Schedule"] == "nightly"
    assert headers["X-HKS-Scheduled-For"] == SCHEDULED_FOR
    assert headers["X-Kind"] == "cron"
    names = [name.lower() for name in headers.keys()]
    assert names.index("x-kind") > names.index("x-hks-scheduled-for")  # the schedule's own come last
    assert "ce-id" not in names


def test_a_schedule_to_a_cloudevents_function_sends_a_binary_cloudevent(server):
    url, received = server
    fire(schedule(url, kind="cloudevents"))
    ((_, _, headers, _),) = received
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-type"] == "dev.hks.schedule"
    assert headers["ce-source"] == "/projects/acme/functions/hello/schedules/nightly"
    assert headers["ce-id"] == JOB_NAME
    assert headers["ce-time"] == SCHEDULED_FOR


def test_the_schedule_own_headers_win(server):
    url, received = server
    spec = schedule(url, kind="cloudevents", headers={"user-agent": "mine/2", "ce-type": "com.example.tick"})
    fire(spec)
    ((_, _, headers, _),) = received
    assert headers.get_all("User-Agent") == ["mine/2"]
    assert headers.get_all("ce-type") == ["com.example.tick"]


def test_shell_characters_in_a_schedule_stay_data(server, tmp_path):
    url, received = server
    marker = tmp_path / "pwned"
    fire(
        dataclasses.replace(schedule(url), headers={"X-Evil": f"$(touch {marker})"}, body=f"`touch {marker}`")
    )
    ((_, _, headers, body),) = received
    assert headers["X-Evil"] == f"$(touch {marker})"
    assert body == f"`touch {marker}`".encode()
    assert not marker.exists()


@pytest.mark.parametrize("job_name", ["manual-run", "hks-cron-hello-nightly-1e3", "adhoc"])
def test_a_job_made_by_hand_is_sent_as_scheduled_now(server, job_name):
    """kubectl create job --from=cronjob/... names the Job itself: no scheduled minute in the name, so the
    time sent is the run's (not 1970, not empty), and the run still happens."""
    url, received = server
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    fire(schedule(url, kind="cloudevents"), job_name=job_name)
    after = dt.datetime.now(dt.UTC)
    ((_, _, headers, _),) = received
    sent = dt.datetime.strptime(headers["X-HKS-Scheduled-For"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert before <= sent <= after
    assert headers["ce-time"] == headers["X-HKS-Scheduled-For"]
    assert headers["ce-id"] == job_name
