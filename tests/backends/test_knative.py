"""The Knative backend against the fake Kubernetes API server (real HTTP, real schemas), and a knative
project deploying through the real Celery worker."""

import asyncio
import dataclasses
import re
import time

import pytest
from kubernetes import client

from functions.backends import get_backend
from functions.backends import k8s_manifests as m
from functions.backends.base import (
    BackendError,
    BuildSpec,
    FunctionRef,
    Resources,
    Scale,
    ScheduleSpec,
    ServiceSpec,
)
from functions.backends.knative import KnativeBackend
from functions.models import Build, Function, FunctionStatus
from functions.services import functions as services
from functions.services.projects import project_set_kubeconfig
from functions.sources.archives import pack_files
from tests.support.k8s_fake import KSVC

REF = FunctionRef(project="acme", namespace="acme", function="hello")
CLUSTER = m.ClusterSettings(registry="registry.example.test/hks", agent_runtime_class="gvisor")
BUILD = BuildSpec(
    ref=REF,
    revision="hello-00003",
    runtime="node",
    archive_path="/dev/null",
    archive_url="https://portal.example.test/cluster/archives/t/",
    content_hash="cd" * 32,
)
SCHEDULE = ScheduleSpec(
    ref=REF,
    name="nightly",
    cron="0 3 * * *",
    timezone="UTC",
    method="POST",
    path="/",
    headers={},
    body="",
    enabled=True,
    concurrency_policy="Allow",
    starting_deadline_seconds=None,
    target_url="http://hello.acme.svc.cluster.local/",
)
LABELLED = "hks.dev/function=hello"
KINDS = [
    "services.serving.knative.dev",
    "jobs.batch",
    "cronjobs.batch",
    "networkpolicies.networking.k8s.io",
    "serviceaccounts",
    "configmaps",
    "secrets",
    "pods",
    "revisions.serving.knative.dev",
]


def service_spec(**changes) -> ServiceSpec:
    values = dict(
        ref=REF,
        revision="hello-00003",
        runtime="node",
        kind="http",
        artifact=f"registry.example.test/hks/acme/hello@sha256:{'e' * 64}",
        env={"GREETING": "hi"},
        scale=Scale(0, 3, 10, 0),
        resources=Resources(100, 128),
        labels={"hks.dev/project": "acme", "hks.dev/function": "hello"},
    )
    values.update(changes)
    return ServiceSpec(**values)


@pytest.fixture
def backend(fake_k8s):
    backend = KnativeBackend(fake_k8s.kubeconfig, cluster=CLUSTER)
    backend.poll_interval = 0.05
    return backend


def wait_ready(backend, ref=REF, revision="hello-00003", timeout=10.0):
    deadline = time.monotonic() + timeout
    status = backend.status(ref)
    while not (status.ready and status.latest_ready_revision == revision):
        assert time.monotonic() < deadline, f"not ready: {status}"
        time.sleep(0.05)
        status = backend.status(ref)
    return status


def collect(agen_factory):
    async def run():
        return [line async for line in agen_factory()]

    return asyncio.run(run())


def labelled_objects(fake, selector=LABELLED):
    return {kind: fake.list(kind, "acme", selector) for kind in KINDS if fake.list(kind, "acme", selector)}


def test_full_flow_build_apply_status_logs_schedule_delete(fake_k8s, backend):
    lines = []
    result = backend.build(BUILD, on_log=lines.append)
    repository, digest = result.artifact.split("@")
    assert repository == m.image_ref(BUILD, CLUSTER).rsplit(":", 1)[0]
    assert re.fullmatch("sha256:[0-9a-f]{64}", digest)
    assert fake_k8s.images[result.artifact]["has_code"]  # the fake Kaniko found the code outside mounts
    assert any(f"Pushed {m.image_ref(BUILD, CLUSTER)}" in line for line in lines)
    assert fake_k8s.get("jobs.batch", "acme", m.build_name(BUILD))["status"]["succeeded"] == 1
    assert fake_k8s.get("secrets", "acme", m.build_name(BUILD)) is None  # the one-time URL is not kept
    assert fake_k8s.get("configmaps", "acme", m.build_name(BUILD)) is None

    backend.apply(service_spec(artifact=result.artifact))
    status = wait_ready(backend)
    assert status.url == "http://hello.acme.example.test"
    assert status.internal_url == "http://hello.acme.svc.cluster.local"
    assert status.replicas == 1
    ksvc = fake_k8s.get(KSVC, "acme", "hello")
    assert ksvc["spec"]["template"]["spec"]["containers"][0]["image"] == result.artifact
    assert (
        fake_k8s.get("serviceaccounts", "acme", m.service_account_name(REF))["automountServiceAccountToken"]
        is False
    )

    pod = fake_k8s.list("pods", "acme", "serving.knative.dev/service=hello")[0]["metadata"]["name"]
    fake_k8s.append_log("acme", pod, "user-container", "handled GET /")
    fake_k8s.append_log("acme", pod, "queue-proxy", "not the function's output")
    logs = collect(lambda: backend.logs(REF))
    assert [line.text for line in logs][-1] == "handled GET /"
    assert all(line.instance == pod for line in logs)
    assert "not the function's output" not in [line.text for line in logs]
    assert [line.text for line in collect(lambda: backend.logs(REF, tail=1))] == ["handled GET /"]

    backend.apply_schedule(SCHEDULE)
    backend.apply_schedule(dataclasses.replace(SCHEDULE, enabled=False, cron="*/5 * * * *"))
    crons = fake_k8s.list("cronjobs.batch", "acme")
    assert len(crons) == 1
    assert crons[0]["spec"]["suspend"] is True and crons[0]["spec"]["schedule"] == "*/5 * * * *"

    backend.delete(REF)
    assert labelled_objects(fake_k8s) == {}
    assert fake_k8s.list("pods", "acme") == []  # build pods and function pods went with their owners
    backend.delete(REF)  # twice is fine
    assert backend.status(REF).exists is False


def test_other_functions_survive_a_delete(fake_k8s, backend):
    other = FunctionRef(project="acme", namespace="acme", function="other")
    backend.apply(service_spec())
    backend.apply(
        service_spec(
            ref=other, revision="other-00001", labels={"hks.dev/project": "acme", "hks.dev/function": "other"}
        )
    )
    backend.delete(REF)
    assert fake_k8s.get(KSVC, "acme", "other") is not None
    assert fake_k8s.get("serviceaccounts", "acme", m.service_account_name(other)) is not None


def test_following_logs_yields_new_lines_as_they_come(fake_k8s, backend):
    backend.apply(service_spec())
    wait_ready(backend)
    pod = fake_k8s.list("pods", "acme", "serving.knative.dev/service=hello")[0]["metadata"]["name"]

    async def follow():
        stream = backend.logs(REF, follow=True)
        first = await asyncio.wait_for(anext(stream), 10)
        fake_k8s.append_log("acme", pod, "user-container", "a later line")
        second = await asyncio.wait_for(anext(stream), 10)
        await stream.aclose()
        return first, second

    first, second = asyncio.run(follow())
    assert first.text.startswith("listening")
    assert second.text == "a later line"


def test_build_log_lines_arrive_while_the_build_runs(fake_k8s, backend):
    fake_k8s.job_seconds = 1.0
    seen = []

    def on_log(line):
        job = fake_k8s.get("jobs.batch", "acme", m.build_name(BUILD))
        seen.append((line, job["status"].get("succeeded")))

    backend.build(BUILD, on_log=on_log)
    fetched = next(entry for entry in seen if entry[0].startswith("[fetch-source]"))
    assert fetched == ("[fetch-source] fetched the build context", None)  # the Job was still running
    assert ("[kaniko] waiting: PodInitializing", None) in seen  # the pod's state is in the log too
    assert seen[-1][0].startswith("[kaniko] INFO Pushed ")
    assert len({line for line, _ in seen}) == len(seen)  # each line once


def test_following_logs_picks_up_pods_that_start_later(fake_k8s, backend):
    backend.log_rescan_seconds = 0.05
    backend.apply(service_spec())
    wait_ready(backend)

    async def follow():
        stream = backend.logs(REF, follow=True)
        first = await asyncio.wait_for(anext(stream), 10)
        backend.apply(service_spec(revision="hello-00004", env={"V": "4"}))  # a new revision: a new pod
        second = await asyncio.wait_for(anext(stream), 10)
        await stream.aclose()
        return first, second

    first, second = asyncio.run(follow())
    assert first.text == "listening on :8080 (hello-00001)"
    assert second.text == "listening on :8080 (hello-00002)"
    assert first.instance != second.instance


def test_a_failed_build_is_permanent_and_carries_the_message(fake_k8s, backend):
    fake_k8s.fail_next_job("COPY failed: no such file")
    with pytest.raises(BackendError) as exc:
        backend.build(BUILD)
    assert exc.value.permanent is True
    assert "COPY failed: no such file" in exc.value.message


def test_a_retried_build_joins_the_same_job_and_a_failed_one_is_rebuilt(fake_k8s, backend):
    fake_k8s.fail_next_job("flaky registry")
    with pytest.raises(BackendError):
        backend.build(BUILD)
    first = backend.build(BUILD)  # the failed Job is replaced by a fresh one
    second = backend.build(BUILD)  # a finished Job is joined, not rebuilt
    assert first.artifact == second.artifact
    assert len(fake_k8s.list("jobs.batch", "acme")) == 1
    assert fake_k8s.list("jobs.batch", "acme")[0]["status"]["succeeded"] == 1


def test_a_new_revision_replaces_the_previous_one(fake_k8s, backend):
    backend.apply(service_spec())
    wait_ready(backend)
    backend.apply(service_spec(revision="hello-00004", env={"GREETING": "hello"}))
    wait_ready(backend, revision="hello-00004")
    ksvc = fake_k8s.get(KSVC, "acme", "hello")
    assert ksvc["metadata"]["generation"] == 2
    assert ksvc["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "GREETING", "value": "hello"}
    ]


def test_applying_the_same_spec_twice_changes_nothing(fake_k8s, backend):
    backend.apply(service_spec())
    wait_ready(backend)
    before = fake_k8s.objects
    backend.apply(service_spec())
    assert fake_k8s.objects == before  # not even a resourceVersion: every write was a no-op
    assert wait_ready(backend).ready


def test_every_function_gets_a_network_policy_with_no_egress_for_agent_code(fake_k8s, backend):
    backend.apply(service_spec(sandbox_profile="restricted", visibility="cluster-local"))
    ksvc = fake_k8s.get(KSVC, "acme", "hello")
    assert ksvc["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
    assert ksvc["spec"]["template"]["spec"]["runtimeClassName"] == "gvisor"
    (policy,) = fake_k8s.list("networkpolicies.networking.k8s.io", "acme", LABELLED)
    assert policy["spec"]["egress"] == []
    backend.apply(service_spec())
    (policy,) = fake_k8s.list("networkpolicies.networking.k8s.io", "acme", LABELLED)
    assert policy["spec"]["egress"]  # standard code: the internet, not the cluster (test_network_policies)


def test_a_revision_that_fails_reports_why(fake_k8s, backend):
    fake_k8s.fail_next_revision("Back-off pulling image")
    backend.apply(service_spec())
    deadline = time.monotonic() + 10
    while "Back-off" not in backend.status(REF).message:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert backend.status(REF).ready is False


@pytest.mark.parametrize(("status", "permanent"), [(503, False), (500, False), (400, True), (403, True)])
def test_api_errors_map_to_transient_or_permanent(fake_k8s, backend, status, permanent):
    fake_k8s.fail_next_request("POST", "/apis/serving.knative.dev/v1/namespaces/acme/services", status)
    with pytest.raises(BackendError) as exc:
        backend.apply(service_spec())
    assert exc.value.permanent is permanent


def test_refused_credentials_are_permanent(fake_k8s):
    bad = fake_k8s.kubeconfig.replace(fake_k8s.token, "not-the-token")
    with pytest.raises(BackendError, match="credentials") as exc:
        KnativeBackend(bad).status(REF)
    assert exc.value.permanent is True


def test_an_unreachable_cluster_is_transient(fake_k8s):
    kubeconfig = fake_k8s.kubeconfig.replace(fake_k8s.url, "http://127.0.0.1:9")
    with pytest.raises(BackendError) as exc:
        KnativeBackend(kubeconfig).status(REF)
    assert exc.value.permanent is False


def test_garbage_kubeconfig_is_permanent():
    with pytest.raises(BackendError) as exc:
        KnativeBackend("just: [text")
    assert exc.value.permanent is True


def test_list_owned_reports_functions_and_their_revisions(fake_k8s, backend):
    backend.apply(service_spec())
    owned = backend.list_owned("acme", "acme")
    assert [(o.ref.function, o.revision) for o in owned] == [("hello", "hello-00003")]
    assert backend.list_owned("globex", "acme") == []


def test_deleting_a_schedule_is_idempotent(fake_k8s, backend):
    backend.apply_schedule(SCHEDULE)
    backend.delete_schedule(REF, "nightly")
    backend.delete_schedule(REF, "nightly")
    assert fake_k8s.list("cronjobs.batch", "acme") == []


def test_a_name_too_long_for_knative_revisions_is_refused_before_anything_is_written(fake_k8s, backend):
    ref = FunctionRef(project="acme", namespace="acme", function="f" * 58)
    with pytest.raises(BackendError, match="at most 57") as exc:
        backend.apply(service_spec(ref=ref, revision="f" * 58 + "-00001"))
    assert exc.value.permanent is True
    assert fake_k8s.objects == {}


def test_a_spec_knative_refuses_is_a_permanent_error_with_its_reason(fake_k8s, backend):
    with pytest.raises(BackendError, match="timeoutSeconds") as exc:
        backend.apply(service_spec(timeout_seconds=3600))
    assert exc.value.permanent is True
    assert fake_k8s.get(KSVC, "acme", "hello") is None


def test_the_backend_fires_schedules_itself(backend):
    assert backend.fires_schedules_itself() is True


# Through the platform: projects, services and the real worker ------------------------------------------


def test_project_without_kubeconfig_gets_a_permanent_error(project):
    project.backend = "knative"
    project.save()
    with pytest.raises(BackendError, match="no kubeconfig") as exc:
        get_backend(project)
    assert exc.value.permanent is True


def test_project_backend_comes_from_its_encrypted_kubeconfig(fake_k8s, project, owner):
    project.backend = "knative"
    project.save()
    project_set_kubeconfig(project=project, kubeconfig_text=fake_k8s.kubeconfig, actor=owner)
    project.refresh_from_db()
    assert fake_k8s.token not in project.kubeconfig_encrypted
    backend = get_backend(project)
    assert isinstance(backend, KnativeBackend)
    assert backend.status(REF).exists is False


NODE_SOURCE = {
    "func.yaml": b"specVersion: 0.36.0\nname: hello\nruntime: node\ncreated: 2026-11-25T00:00:00Z\n",
    "index.js": b"module.exports = { handle: async () => 'OK' };\n",
}


def wait_for_status(function, wanted, timeout=60.0):
    deadline = time.monotonic() + timeout
    function.refresh_from_db()
    while function.status not in wanted:
        assert time.monotonic() < deadline, (
            f"{function} stuck in {function.status}: {function.status_message}"
        )
        time.sleep(0.1)
        function.refresh_from_db()
    return function


def test_knative_project_deploys_and_deletes_through_the_worker(
    fake_k8s, celery_worker, knative_project, owner
):
    function = services.function_create(project=knative_project, name="hello", runtime="node", user=owner)
    revision = services.function_deploy(function=function, archive=pack_files(NODE_SOURCE), user=owner)

    function = wait_for_status(function, {FunctionStatus.READY, FunctionStatus.FAILED})
    assert function.status == FunctionStatus.READY, function.status_message
    assert function.url == "http://hello.acme.example.test"
    revision.refresh_from_db()
    # by digest, read back from the build's termination message: Knative resolves no tag
    assert re.fullmatch(r"registry\.local/hks/acme/hello@sha256:[0-9a-f]{64}", revision.artifact)
    assert "Pushed" in Build.objects.get(revision=revision).log
    ksvc = fake_k8s.get(KSVC, "acme", "hello")
    assert ksvc["spec"]["template"]["spec"]["containers"][0]["image"] == revision.artifact

    services.function_delete(function=function, user=owner)
    wait_for_status(function, {FunctionStatus.DELETED})
    assert labelled_objects(fake_k8s) == {}


def test_a_failed_cluster_build_marks_the_function_failed(fake_k8s, celery_worker, knative_project, owner):
    fake_k8s.fail_next_job("npm ERR! 404 left-pad")
    function = services.function_create(project=knative_project, name="hello", runtime="node", user=owner)
    services.function_deploy(function=function, archive=pack_files(NODE_SOURCE), user=owner)
    function = wait_for_status(function, {FunctionStatus.READY, FunctionStatus.FAILED})
    assert function.status == FunctionStatus.FAILED
    assert "npm ERR! 404 left-pad" in function.status_message
    assert Function.objects.get(pk=function.pk).current_revision is None


def test_rolling_back_on_knative_serves_the_older_image(fake_k8s, celery_worker, knative_project, owner):
    function = services.function_create(project=knative_project, name="hello", runtime="node", user=owner)
    first = services.function_deploy(function=function, archive=pack_files(NODE_SOURCE), user=owner)
    wait_for_status(function, {FunctionStatus.READY, FunctionStatus.FAILED})
    changed = {**NODE_SOURCE, "index.js": b"module.exports = { handle: async () => 'v2' };\n"}
    second = services.function_deploy(function=function, archive=pack_files(changed), user=owner)
    wait_for_revision(function, second)
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.artifact != second.artifact

    services.revision_rollback(function=function, revision=first, user=owner)
    wait_for_revision(function, first)
    ksvc = fake_k8s.get(KSVC, "acme", "hello")
    assert ksvc["spec"]["template"]["spec"]["containers"][0]["image"] == first.artifact
    assert ksvc["metadata"]["generation"] == 3


def wait_for_revision(function, revision, timeout=60.0):
    deadline = time.monotonic() + timeout
    function.refresh_from_db()
    while not (function.status == FunctionStatus.READY and function.current_revision_id == revision.pk):
        assert function.status != FunctionStatus.FAILED, function.status_message
        assert time.monotonic() < deadline, f"{function} stuck in {function.status}"
        time.sleep(0.1)
        function.refresh_from_db()


def test_a_missing_registry_secret_fails_the_build_at_once_with_what_to_do(fake_k8s):
    backend = KnativeBackend(
        fake_k8s.kubeconfig, cluster=dataclasses.replace(CLUSTER, registry_secret="push")
    )
    with pytest.raises(BackendError) as exc:
        backend.build(BUILD)
    assert exc.value.permanent is True
    assert "has no Secret push" in exc.value.message and "dockerconfigjson" in exc.value.message
    assert fake_k8s.list("jobs.batch", "acme") == []  # no pod left waiting in ContainerCreating


def test_a_build_pod_pod_security_refuses_ends_the_build_with_the_reason(fake_k8s, backend):
    fake_k8s.job_deadline_cap = 600  # the Job alone would say nothing for its whole deadline
    client_core = backend.core
    client_core.create_namespace(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": "acme",
                "labels": {
                    "app.kubernetes.io/managed-by": "hks-functions",
                    "pod-security.kubernetes.io/enforce": "restricted",
                },
            },
        }
    )
    lines = []
    with pytest.raises(BackendError) as exc:
        backend.build(BUILD, on_log=lines.append)
    assert exc.value.permanent is True
    assert 'violates PodSecurity "restricted:latest"' in exc.value.message
    assert any("FailedCreate" in line for line in lines)  # the event is in the build log too
    assert fake_k8s.get("jobs.batch", "acme", m.build_name(BUILD)) is None


def test_builds_run_under_the_build_network_policy(fake_k8s, backend):
    backend.build(BUILD)
    policy = fake_k8s.get("networkpolicies.networking.k8s.io", "acme", m.BUILD_POLICY_NAME)
    assert policy["spec"]["podSelector"] == {"matchLabels": {m.LABEL_COMPONENT: "build"}}
    job = fake_k8s.get("jobs.batch", "acme", m.build_name(BUILD))
    assert job["spec"]["template"]["metadata"]["labels"][m.LABEL_COMPONENT] == "build"


def test_a_ksvc_given_the_built_tag_fails_where_the_digest_runs(fake_k8s, backend):
    """Knative's controller cannot resolve the platform registry's tags (HTTP, private CA, node-only
    name); the digest needs no resolution."""
    result = backend.build(BUILD)
    backend.apply(service_spec(artifact=m.image_ref(BUILD, CLUSTER)))
    status = wait_failed(backend)
    assert "failed to resolve image to digest" in status.message
    backend.apply(service_spec(artifact=result.artifact, revision="hello-00004"))
    assert wait_ready(backend, revision="hello-00004").ready


def wait_failed(backend, ref=REF, timeout=10.0):
    deadline = time.monotonic() + timeout
    status = backend.status(ref)
    while not status.failed:
        assert time.monotonic() < deadline, f"not failed: {status}"
        time.sleep(0.05)
        status = backend.status(ref)
    return status


def test_following_logs_retries_a_pod_whose_container_has_not_started(fake_k8s, backend):
    fake_k8s.ready_seconds = 1.0  # the pod is listed (Pending, then ContainerCreating) well before it runs
    backend.log_rescan_seconds = 0.05
    backend.apply(service_spec())

    async def follow():
        stream = backend.logs(REF, follow=True)
        line = await asyncio.wait_for(anext(stream), 10)
        await stream.aclose()
        return line

    assert asyncio.run(follow()).text == "listening on :8080 (hello-00001)"


def test_a_403_says_the_cluster_refused_the_request_not_the_credentials(fake_k8s, backend):
    fake_k8s.fail_next_request("POST", "/serviceaccounts", 403, 'exceeded quota: "compute"')
    with pytest.raises(BackendError) as exc:
        backend.apply(service_spec())
    assert exc.value.message == 'the cluster refused the request: exceeded quota: "compute"'


def test_an_image_the_nodes_cannot_pull_is_reported_before_knative_gives_up(fake_k8s, backend):
    fake_k8s.nodes_cannot_pull("registry.example.test/")
    backend.apply(service_spec())
    deadline = time.monotonic() + 10
    status = backend.status(REF)
    while "ImagePullBackOff" not in status.message:
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
        status = backend.status(REF)
    assert status.ready is False and status.failed is False  # Knative has not given up yet
    assert 'Back-off pulling image "registry.example.test/' in status.message


def test_a_build_log_is_followed_not_read_again_at_every_poll(fake_k8s, backend):
    fake_k8s.job_seconds = 2.0  # some forty polls at the test's 50 ms
    lines = []
    backend.build(BUILD, on_log=lines.append)
    log_reads = [path for method, path in fake_k8s.requests if method == "GET" and path.endswith("/log")]
    assert len(log_reads) <= 4, log_reads  # one stream per container (and a retry at most)
    assert sum(line.startswith("[kaniko] INFO") for line in lines) == 3  # every line, once


@pytest.mark.parametrize(
    "changes",
    [{}, {"sandbox_profile": "restricted", "visibility": "cluster-local"}],
    ids=["standard", "agent"],
)
def test_function_pods_pass_pod_security_restricted(fake_k8s, backend, changes):
    """The function's pods (user container and Knative's queue-proxy) are admitted where the namespace
    enforces "restricted", the strictest level (the build pod, root for Kaniko, needs "baseline")."""
    namespace = m.namespace("acme")
    namespace["metadata"].setdefault("labels", {})["pod-security.kubernetes.io/enforce"] = "restricted"
    backend.core.create_namespace(namespace)
    # The agent one runs under CLUSTER's RuntimeClass, which the cluster must have (the fake refuses the
    # pod otherwise, as the RuntimeClass admission plugin does).
    runtime_class = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "gvisor"}}
    client.NodeV1Api(backend._api).create_runtime_class({**runtime_class, "handler": "runsc"})
    backend.apply(service_spec(**changes))
    wait_ready(backend)
    assert fake_k8s.list("events", "acme") == []
    assert fake_k8s.list("pods", "acme", "serving.knative.dev/service=hello")


def test_a_deploy_waits_for_knative_at_the_backends_pace_not_twenty_times_a_second(
    fake_k8s, knative_project, db
):
    """Each status read is two API calls; the deploy backs off (0.25 s, then half the time waited, at most
    2 s) instead of reading 20 times a second for its first 3 s."""
    from functions.models import Revision
    from tests.support.factories import FunctionFactory

    fake_k8s.ready_seconds = 1.0  # the revision is ready about 2 s after the Service is written
    function = FunctionFactory(project=knative_project, name="hello", status=FunctionStatus.DEPLOYING)
    revision = Revision.objects.create(
        function=function, number=1, archive="x", artifact=f"registry.local/hks/acme/hello@sha256:{'e' * 64}"
    )
    services.revision_deploy_run(revision=revision)

    assert Function.objects.get(pk=function.pk).status == FunctionStatus.READY
    reads = [
        path for method, path in fake_k8s.requests if method == "GET" and path.endswith("/services/hello")
    ]
    assert 2 <= len(reads) <= 12, reads  # 20 a second read it 26 times here
    backend = get_backend(knative_project)
    assert [backend.status_poll_seconds(waited) for waited in (0, 1, 2, 60)] == [0.25, 0.5, 1.0, 2.0]
