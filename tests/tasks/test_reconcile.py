"""The reconciler, driven by a controlled clock: a build, deploy or delete whose task went silent is sent
again, or failed with a message once it was lost too often; a runtime that does not answer turns ready
functions into "unknown" until it answers again. And a request that cannot enqueue changes nothing."""

import datetime as dt

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from functions.models import Build, BuildStatus, Function, FunctionStatus, Revision
from functions.services import enqueue as services
from functions.services.reconcile import functions_reconcile
from hks_portal.celery import app as celery_app
from tests.support.archive_samples import node_archive
from tests.support.factories import FunctionFactory

LONG_AGO = dt.timedelta(hours=1)


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def queue():
    """How many messages wait on this test process's queue (the real Redis)."""
    celery_app.control.purge()
    with celery_app.connection_for_read() as connection:
        client = connection.default_channel.client
        yield lambda: client.llen(celery_app.conf.task_default_queue)
    celery_app.control.purge()


def _stuck(project, status, *, heartbeat, build_status=BuildStatus.RUNNING, artifact="", recoveries=0):
    function = FunctionFactory(project=project, name="hello", status=status, task_recoveries=recoveries)
    revision = Revision(function=function, number=1, content_hash="a" * 64, artifact=artifact)
    revision.archive.save("acme-hello-1.tar.gz", ContentFile(node_archive()), save=False)
    revision.save()
    build = Build.objects.create(revision=revision, status=build_status)
    Function.objects.filter(pk=function.pk).update(desired_revision=revision, task_heartbeat_at=heartbeat)
    return Function.objects.get(pk=function.pk), build


def test_a_build_whose_worker_died_is_sent_again(project, queue):
    now = timezone.now()
    function, build = _stuck(project, FunctionStatus.BUILDING, heartbeat=now - LONG_AGO)
    assert functions_reconcile(now=now).resumed == 1
    function.refresh_from_db()
    build.refresh_from_db()
    assert function.status == FunctionStatus.BUILDING and "build task was lost" in function.status_message
    assert function.task_recoveries == 1 and function.task_heartbeat_at >= now
    assert build.status == BuildStatus.QUEUED
    assert queue() == 1
    assert functions_reconcile(now=now).resumed == 0  # its heartbeat is fresh again: not sent twice


def test_a_live_task_is_left_alone(project, queue):
    now = timezone.now()
    _stuck(project, FunctionStatus.BUILDING, heartbeat=now - dt.timedelta(seconds=5))
    assert functions_reconcile(now=now).resumed == 0 and queue() == 0


@pytest.mark.parametrize("status", [FunctionStatus.DEPLOYING, FunctionStatus.DELETING])
def test_a_lost_deploy_or_delete_is_sent_again(status, project, queue):
    now = timezone.now()
    function, _ = _stuck(
        project, status, heartbeat=now - LONG_AGO, build_status=BuildStatus.SUCCEEDED, artifact="/a/1"
    )
    assert functions_reconcile(now=now).resumed == 1 and queue() == 1
    function.refresh_from_db()
    assert function.status == status and "task was lost" in function.status_message


def test_a_build_that_succeeded_but_never_deployed_is_deployed(project, queue):
    now = timezone.now()
    function, build = _stuck(
        project,
        FunctionStatus.BUILDING,
        heartbeat=now - LONG_AGO,
        build_status=BuildStatus.SUCCEEDED,
        artifact="/a/1",
    )
    assert functions_reconcile(now=now).resumed == 1 and queue() == 1
    build.refresh_from_db()
    assert build.status == BuildStatus.SUCCEEDED


def test_a_task_lost_too_often_fails_the_function_with_a_message(project, settings, queue):
    now = timezone.now()
    function, build = _stuck(
        project,
        FunctionStatus.BUILDING,
        heartbeat=now - LONG_AGO,
        recoveries=settings.HKS_TASK_MAX_RECOVERIES,
    )
    assert functions_reconcile(now=now).failed == 1 and queue() == 0
    function.refresh_from_db()
    build.refresh_from_db()
    assert function.status == FunctionStatus.FAILED
    assert "interrupted" in function.status_message and "deploy again" in function.status_message
    assert build.status == BuildStatus.FAILED and "interrupted" in build.message


def test_a_runtime_that_does_not_answer_makes_ready_functions_unknown(project, settings):
    settings.HKS_RUNTIME_URL = "http://127.0.0.1:9"  # discard port: nothing listens
    function = FunctionFactory(project=project, name="hello", status=FunctionStatus.READY)
    assert functions_reconcile().unreachable == 1
    function.refresh_from_db()
    assert function.status == FunctionStatus.UNKNOWN
    assert function.status_message.startswith("runtime unreachable")


def test_an_unknown_function_is_ready_again_once_the_runtime_answers(project, local_backend_settings):
    function = FunctionFactory(
        project=project, name="hello", status=FunctionStatus.UNKNOWN, status_message="runtime unreachable: x"
    )
    assert functions_reconcile().recovered == 1
    function.refresh_from_db()
    assert function.status == FunctionStatus.READY and function.status_message == ""


# Enqueueing while the task queue is down ---------------------------------------------------------


@pytest.fixture
def queue_down(settings, tmp_path):
    settings.REDIS_URL = f"unix://{tmp_path / 'no-redis.sock'}"  # nothing listens there


def test_a_deploy_that_cannot_be_enqueued_is_a_503_that_creates_nothing(
    project, developer, api_client_for, queue_down, media
):
    response = api_client_for(developer).post(
        "/api/v1/projects/acme/functions/hello/revisions?create=true&runtime=node",
        node_archive(),
        content_type="application/gzip",
    )
    assert response.status_code == 503
    assert "task queue is unavailable" in response.json()["detail"]
    assert not Function.objects.exists() and not Revision.objects.exists()
    assert not media.exists() or not any(p.is_file() for p in media.rglob("*"))


def test_an_agent_deploy_that_cannot_be_enqueued_is_a_503(project, queue_down, settings, tmp_path):
    from django.test import Client

    from functions.models import AgentCredential

    settings.HKS_INTERNAL_JWT_KEY_FILE = str(tmp_path / "jwt.pem")
    _, secret = AgentCredential.issue(project=project, name="agent")
    client = Client()
    token = client.post("/internal/v1/token", {"credential": secret}, content_type="application/json").json()
    response = client.post(
        "/internal/v1/operations/deploy-function",
        {"runtime": "python", "code": "print(1)"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token['token']}",
    )
    assert response.status_code == 503 and "task queue" in response.json()["detail"]
    assert not Function.objects.exists()


def test_enqueue_failing_after_commit_is_said_on_the_function_and_left_to_the_reconciler(project):
    function = FunctionFactory(project=project, name="hello", status=FunctionStatus.BUILDING)

    def refused():
        raise ConnectionError("Error 111 connecting to redis")

    assert services.enqueue(function.pk, refused) is False
    function.refresh_from_db()
    assert "waiting for the task queue" in function.status_message and function.task_heartbeat_at
