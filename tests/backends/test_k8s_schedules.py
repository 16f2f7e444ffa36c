"""Schedules on a Knative project: the CronJob built from a real schedule validates against Kubernetes'
schema (kubernetes-validate --strict), and create/pause/update/delete reach the cluster (the fake API
server, itself schema-validating) while the portal's dispatcher leaves these schedules to the CronJob."""

import datetime as dt
import time

import kubernetes_validate
import pytest

from functions.backends import k8s_manifests as m
from functions.backends import k8s_schedules as schedules_k8s
from functions.models import ScheduleRun
from functions.services import functions as services
from functions.services import schedule_runs as schedule_firing
from functions.services import schedules as services_schedules
from tests.support.factories import FunctionFactory
from tests.support.k8s_fake import K8S_SCHEMA_VERSION
from tests.support.schedules import T0

pytestmark = pytest.mark.django_db
CLUSTER = m.ClusterSettings()


@pytest.fixture
def kn_hello(knative_project):
    return FunctionFactory(
        project=knative_project,
        name="hello",
        runtime="node",
        status="ready",
        internal_url="http://hello.acme.svc.cluster.local",
    )


def cron_job_for(schedule) -> dict:
    return schedules_k8s.cron_job(services_schedules.schedule_spec(schedule), CLUSTER)


VARIANTS = [
    dict(cron="30 2 * * *", timezone="Europe/Berlin"),
    dict(cron="@hourly", concurrency_policy="Forbid", starting_deadline_seconds=120),
    dict(
        cron="@weekly",
        concurrency_policy="Replace",
        method="PUT",
        path="/jobs?full=1",
        headers={"X-Kind": "weekly", "Content-Type": "application/json"},
        body='{"a": "b c"}',
    ),
    dict(cron="*/5 9-17 * JAN-MAR,DEC MON-FRI", timezone="America/New_York", enabled=False),
    dict(cron="@yearly", timezone="Asia/Kolkata", method="GET"),
]


@pytest.mark.parametrize("fields", VARIANTS)
def test_cronjob_of_a_schedule_validates_against_the_kubernetes_schema(kn_hello, owner, fields):
    schedule = services_schedules.schedule_create(
        function=kn_hello, user=owner, name="tick", now=T0, **fields
    )
    manifest = cron_job_for(schedule)
    kubernetes_validate.validate(manifest, K8S_SCHEMA_VERSION, strict=True)
    spec = manifest["spec"]
    assert spec["schedule"] == schedule.cron  # the normalized five fields, macros expanded
    assert spec["timeZone"] == schedule.timezone
    assert spec["concurrencyPolicy"] == schedule.concurrency_policy
    assert spec["suspend"] is (not schedule.enabled)
    assert spec.get("startingDeadlineSeconds") == schedule.starting_deadline_seconds
    [container] = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    context = container["securityContext"]  # Pod Security Standards "restricted"
    assert context["runAsNonRoot"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    args = container["command"]  # sh -c SCRIPT, then the request as positional arguments
    assert args[-1] == "http://hello.acme.svc.cluster.local" + schedule.path
    assert schedule.method in args


def test_a_stray_field_would_be_refused_by_the_same_validation(kn_hello, owner):
    schedule = services_schedules.schedule_create(
        function=kn_hello, user=owner, name="tick", cron="@daily", now=T0
    )
    manifest = cron_job_for(schedule)
    manifest["spec"]["timezone"] = "UTC"  # wrong case: not a CronJob field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, K8S_SCHEMA_VERSION, strict=True)


def cron_jobs(fake_k8s, function) -> list[dict]:
    return fake_k8s.list("cronjobs.batch", function.project.effective_namespace)


def test_create_pause_update_delete_reach_the_cluster(kn_hello, owner, fake_k8s):
    schedule = services_schedules.schedule_create(
        function=kn_hello, user=owner, name="tick", cron="@hourly", now=T0
    )
    services_schedules.schedule_sync_run(schedule=schedule)
    [job] = cron_jobs(fake_k8s, kn_hello)
    assert (job["spec"]["schedule"], job["spec"]["suspend"]) == ("0 * * * *", False)

    services_schedules.schedule_pause(schedule=schedule, user=owner)
    services_schedules.schedule_sync_run(schedule=schedule)
    [job] = cron_jobs(fake_k8s, kn_hello)
    assert job["spec"]["suspend"] is True

    services_schedules.schedule_update(
        schedule=schedule,
        user=owner,
        cron="15 4 * * *",
        timezone="Asia/Tokyo",
        concurrency_policy="Forbid",
        enabled=True,
    )
    services_schedules.schedule_sync_run(schedule=schedule)
    [job] = cron_jobs(fake_k8s, kn_hello)
    assert (job["spec"]["schedule"], job["spec"]["timeZone"], job["spec"]["concurrencyPolicy"]) == (
        "15 4 * * *",
        "Asia/Tokyo",
        "Forbid",
    )
    assert job["spec"]["suspend"] is False

    services_schedules.schedule_remove_run(function=kn_hello, name="tick")
    assert cron_jobs(fake_k8s, kn_hello) == []


def test_deleting_the_function_removes_its_cronjobs(kn_hello, owner, fake_k8s):
    for name in ("a", "b"):
        schedule = services_schedules.schedule_create(
            function=kn_hello, user=owner, name=name, cron="@daily", now=T0
        )
        services_schedules.schedule_sync_run(schedule=schedule)
    assert len(cron_jobs(fake_k8s, kn_hello)) == 2
    services.function_delete_run(function=kn_hello)
    assert cron_jobs(fake_k8s, kn_hello) == []


def test_the_portal_dispatcher_leaves_knative_schedules_to_their_cronjob(kn_hello, owner, fake_k8s):
    schedule = services_schedules.schedule_create(
        function=kn_hello, user=owner, name="tick", cron="* * * * *", now=T0
    )
    assert schedule_firing.schedules_dispatch(now=T0 + m_minutes(3)) == []
    assert not ScheduleRun.objects.exists()
    schedule.refresh_from_db()
    assert schedule.next_run_at == T0 + m_minutes(4)  # kept current for the dashboard


def m_minutes(n):
    return dt.timedelta(minutes=n)


def wait_until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_the_worker_syncs_and_removes_cronjobs_after_api_changes(
    celery_worker, kn_hello, developer, api_client_for, fake_k8s
):
    client = api_client_for(developer)
    url = "/api/v1/projects/acme/functions/hello/schedules"
    created = client.post(
        url, {"name": "tick", "cron": "@daily", "timezone": "Europe/Berlin"}, content_type="application/json"
    )
    assert created.status_code == 201
    wait_until(lambda: len(cron_jobs(fake_k8s, kn_hello)) == 1)
    assert cron_jobs(fake_k8s, kn_hello)[0]["spec"]["timeZone"] == "Europe/Berlin"
    assert client.post(f"{url}/tick/pause").status_code == 200
    wait_until(lambda: cron_jobs(fake_k8s, kn_hello)[0]["spec"]["suspend"] is True)
    assert client.delete(f"{url}/tick").status_code == 204
    wait_until(lambda: cron_jobs(fake_k8s, kn_hello) == [])
