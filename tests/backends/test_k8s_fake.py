"""The fake Kubernetes API server behaves like a real one where the backend relies on it."""

import time

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.support.k8s_fake import KSVC

IMAGE = "registry.local/x@sha256:" + "a" * 64


def _api(fake):
    cfg = client.Configuration()
    config.load_kube_config_from_dict(yaml.safe_load(fake.kubeconfig), client_configuration=cfg)
    return client.ApiClient(cfg)


def _wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def _ksvc(name, **spec_extra):
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [{"image": IMAGE}], **spec_extra}}},
    }


def test_requests_without_the_token_are_unauthorized(fake_k8s):
    cfg = client.Configuration()
    cfg.host = fake_k8s.url
    with pytest.raises(ApiException) as exc:
        client.CoreV1Api(client.ApiClient(cfg)).list_namespaced_pod("default")
    assert exc.value.status == 401


def test_knative_service_with_unknown_field_gets_422_and_is_not_stored(fake_k8s):
    objects = client.CustomObjectsApi(_api(fake_k8s))
    with pytest.raises(ApiException) as exc:
        objects.create_namespaced_custom_object(
            "serving.knative.dev", "v1", "default", "services", _ksvc("bad", bogus=1)
        )
    assert exc.value.status == 422
    assert "bogus" in exc.value.body
    assert fake_k8s.get(KSVC, "default", "bad") is None


def test_knative_service_becomes_ready_with_a_revision_and_a_pod(fake_k8s):
    objects = client.CustomObjectsApi(_api(fake_k8s))
    objects.create_namespaced_custom_object(
        "serving.knative.dev", "v1", "default", "services", _ksvc("hello")
    )
    _wait(lambda: fake_k8s.get(KSVC, "default", "hello")["status"].get("latestReadyRevisionName"))
    status = fake_k8s.get(KSVC, "default", "hello")["status"]
    assert status["url"] == "http://hello.default.example.test"
    assert status["latestReadyRevisionName"] == "hello-00001"
    assert fake_k8s.list("pods", "default", "serving.knative.dev/revision=hello-00001")


def test_a_job_fails_when_the_test_says_so(fake_k8s):
    fake_k8s.fail_next_job("no space left")
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "b"},
        "spec": {
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}
        },
    }
    client.BatchV1Api(_api(fake_k8s)).create_namespaced_job("default", job)
    _wait(lambda: fake_k8s.get("jobs.batch", "default", "b").get("status", {}).get("failed"))
    conditions = fake_k8s.get("jobs.batch", "default", "b")["status"]["conditions"]
    assert any(c["type"] == "Failed" and "no space left" in c["message"] for c in conditions)


def test_stale_resource_version_is_a_conflict(fake_k8s):
    core = client.CoreV1Api(_api(fake_k8s))
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}
    created = core.create_namespaced_config_map("default", body)
    core.replace_namespaced_config_map("c", "default", {**body, "data": {"a": "2"}})
    stale = {**body, "metadata": {"name": "c", "resourceVersion": created.metadata.resource_version}}
    with pytest.raises(ApiException) as exc:
        core.replace_namespaced_config_map("c", "default", stale)
    assert exc.value.status == 409
    assert fake_k8s.get("configmaps", "default", "c")["data"] == {"a": "2"}


def test_knative_refuses_an_update_that_drops_the_creator_annotation(fake_k8s):
    objects = client.CustomObjectsApi(_api(fake_k8s))
    objects.create_namespaced_custom_object(
        "serving.knative.dev", "v1", "default", "services", _ksvc("hello")
    )
    with pytest.raises(ApiException) as exc:
        objects.replace_namespaced_custom_object(
            "serving.knative.dev",
            "v1",
            "default",
            "services",
            "hello",
            _ksvc("hello", containerConcurrency=5),
        )
    assert exc.value.status == 400
    assert "immutable" in exc.value.body


def test_knative_refuses_reserved_env_names(fake_k8s):
    ksvc = _ksvc("hello")
    ksvc["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "K_SERVICE", "value": "x"}]
    with pytest.raises(ApiException) as exc:
        client.CustomObjectsApi(_api(fake_k8s)).create_namespaced_custom_object(
            "serving.knative.dev", "v1", "default", "services", ksvc
        )
    assert exc.value.status == 400
    assert "K_SERVICE" in exc.value.body


def _pod_states(fake, namespace, selector):
    """The sequence of (phase, user-container state) a pod goes through, sampled until it runs."""
    seen = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pods = fake.list("pods", namespace, selector)
        if pods:
            status = pods[0]["status"]
            states = status.get("containerStatuses", [])
            state = next(iter(states[0]["state"])) if states else None
            if not seen or seen[-1] != (status["phase"], state):
                seen.append((status["phase"], state))
            if state == "running":
                return seen, pods[0]
        time.sleep(0.005)
    raise AssertionError(f"the pod never ran: {seen}")


def test_a_revision_pod_is_pending_then_waiting_then_running_and_logs_only_once_started(fake_k8s):
    fake_k8s.ready_seconds = 0.6
    objects, core = client.CustomObjectsApi(_api(fake_k8s)), client.CoreV1Api(_api(fake_k8s))
    objects.create_namespaced_custom_object(
        "serving.knative.dev", "v1", "default", "services", _ksvc("hello")
    )
    _wait(lambda: fake_k8s.list("pods", "default", "serving.knative.dev/service=hello"))
    pod = fake_k8s.list("pods", "default", "serving.knative.dev/service=hello")[0]["metadata"]["name"]
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_pod_log(pod, "default", container="user-container")
    assert exc.value.status == 400
    assert "is waiting to start: ContainerCreating" in exc.value.body
    seen, _ = _pod_states(fake_k8s, "default", "serving.knative.dev/service=hello")
    assert seen[0] == ("Pending", None)
    assert ("Pending", "waiting") in seen
    assert seen[-1] == ("Running", "running")
    assert "listening" in core.read_namespaced_pod_log(pod, "default", container="user-container")


def test_knative_cannot_resolve_a_tag_of_a_registry_it_cannot_reach(fake_k8s):
    objects = client.CustomObjectsApi(_api(fake_k8s))
    ksvc = _ksvc("hello")
    ksvc["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.local/x:1"
    objects.create_namespaced_custom_object("serving.knative.dev", "v1", "default", "services", ksvc)
    _wait(lambda: fake_k8s.get(KSVC, "default", "hello")["status"]["conditions"][0]["status"] == "False")
    ready = {c["type"]: c for c in fake_k8s.get(KSVC, "default", "hello")["status"]["conditions"]}["Ready"]
    assert 'Unable to fetch image "registry.local/x:1"' in ready["message"]
    assert "failed to resolve image to digest" in ready["message"]


def _namespace(fake, name, level):
    client.CoreV1Api(_api(fake)).create_namespace(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": level}},
        }
    )


def _job(name, security_context):
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "activeDeadlineSeconds": 900,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox", "securityContext": security_context}],
                }
            },
        },
    }


def test_pod_security_refuses_a_root_job_pod_in_a_restricted_namespace(fake_k8s):
    fake_k8s.job_deadline_cap = 0.5
    _namespace(fake_k8s, "tight", "restricted")
    batch = client.BatchV1Api(_api(fake_k8s))
    batch.create_namespaced_job("tight", _job("root", {"allowPrivilegeEscalation": False}))
    _wait(lambda: fake_k8s.get("jobs.batch", "tight", "root")["status"].get("conditions"))
    job = fake_k8s.get("jobs.batch", "tight", "root")
    assert fake_k8s.list("pods", "tight") == []
    assert "failed" not in job["status"]  # no pod ever failed: only the condition says so
    assert {c["type"]: c["reason"] for c in job["status"]["conditions"]}["Failed"] == "DeadlineExceeded"
    (event,) = fake_k8s.list("events", "tight")
    assert event["reason"] == "FailedCreate"
    assert 'violates PodSecurity "restricted:latest"' in event["message"]
    assert "runAsNonRoot != true" in event["message"]


def test_pod_security_baseline_lets_a_root_pod_without_privileges_run(fake_k8s):
    _namespace(fake_k8s, "base", "baseline")
    batch = client.BatchV1Api(_api(fake_k8s))
    batch.create_namespaced_job("base", _job("root", {"allowPrivilegeEscalation": False}))
    _wait(lambda: fake_k8s.get("jobs.batch", "base", "root")["status"].get("succeeded"))
    assert fake_k8s.list("events", "base") == []


def test_pod_security_refuses_a_revision_pod_and_knative_fails_the_revision_with_the_refusal(fake_k8s):
    _namespace(fake_k8s, "tight", "restricted")
    objects = client.CustomObjectsApi(_api(fake_k8s))
    objects.create_namespaced_custom_object("serving.knative.dev", "v1", "tight", "services", _ksvc("root"))
    _wait(
        lambda: (
            {c["type"]: c["status"] for c in fake_k8s.get(KSVC, "tight", "root")["status"]["conditions"]}[
                "Ready"
            ]
            == "False"
        )
    )
    ready = next(
        c for c in fake_k8s.get(KSVC, "tight", "root")["status"]["conditions"] if c["type"] == "Ready"
    )
    assert 'violates PodSecurity "restricted:latest"' in ready["message"]
    assert 'runAsNonRoot != true (container "user-container")' in ready["message"]
    assert "queue-proxy" not in ready["message"]  # Knative's sidecar is restricted-compliant
    assert fake_k8s.list("pods", "tight") == []
    (event,) = fake_k8s.list("events", "tight")
    assert (event["involvedObject"]["kind"], event["reason"]) == ("ReplicaSet", "FailedCreate")


def test_pod_security_baseline_lets_a_revision_pod_without_a_security_context_run(fake_k8s):
    _namespace(fake_k8s, "base", "baseline")
    objects = client.CustomObjectsApi(_api(fake_k8s))
    objects.create_namespaced_custom_object("serving.knative.dev", "v1", "base", "services", _ksvc("plain"))
    _wait(lambda: fake_k8s.get(KSVC, "base", "plain")["status"].get("latestReadyRevisionName"))
    (pod,) = fake_k8s.list("pods", "base")
    assert [c["name"] for c in pod["spec"]["containers"]] == ["user-container", "queue-proxy"]


OLD_DOCKERFILE = """\
FROM node:24-slim
WORKDIR /workspace/function
COPY . .
CMD ["faas-js-runtime", "./index.js"]
"""


def _kaniko_job(name, mount_path, workdir_dockerfile):
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "volumes": [
                        {"name": "src", "emptyDir": {}},
                        {"name": "df", "configMap": {"name": name}},
                    ],
                    "containers": [
                        {
                            "name": "kaniko",
                            "image": "ghcr.io/osscontainertools/kaniko:v1.28.3",
                            "args": [
                                f"--context=tar://{mount_path}/context.tar.gz",
                                "--dockerfile=/kaniko/df/Dockerfile",
                                f"--destination=registry.local/hks/acme/{name}:1",
                                "--digest-file=/dev/termination-log",
                            ],
                            "volumeMounts": [
                                {"name": "src", "mountPath": mount_path},
                                {"name": "df", "mountPath": "/kaniko/df"},
                            ],
                        }
                    ],
                }
            }
        },
    }


def _built_image(fake, name, mount_path, dockerfile):
    core, batch = client.CoreV1Api(_api(fake)), client.BatchV1Api(_api(fake))
    core.create_namespaced_config_map(
        "default",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": {"Dockerfile": dockerfile},
        },
    )
    batch.create_namespaced_job("default", _kaniko_job(name, mount_path, dockerfile))
    _wait(lambda: fake.get("jobs.batch", "default", name)["status"].get("succeeded"))
    (pod,) = fake.list("pods", "default", f"job-name={name}")
    digest = pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
    return f"registry.local/hks/acme/{name}@{digest}"


def test_kaniko_leaves_code_copied_under_a_mount_out_of_the_image_and_the_revision_crashes(fake_k8s):
    image = _built_image(fake_k8s, "old", "/workspace", OLD_DOCKERFILE)
    assert fake_k8s.images[image]["has_code"] is False
    ksvc = _ksvc("old")
    ksvc["spec"]["template"]["spec"]["containers"][0]["image"] = image
    client.CustomObjectsApi(_api(fake_k8s)).create_namespaced_custom_object(
        "serving.knative.dev", "v1", "default", "services", ksvc
    )
    _wait(lambda: fake_k8s.get(KSVC, "default", "old")["status"]["conditions"][0]["status"] == "False")
    ready = {c["type"]: c for c in fake_k8s.get(KSVC, "default", "old")["status"]["conditions"]}["Ready"]
    assert (
        "Container failed with: Error: Cannot find module '/workspace/function/index.js'" in ready["message"]
    )


def test_kaniko_keeps_code_copied_outside_its_mounts(fake_k8s):
    dockerfile = OLD_DOCKERFILE.replace("/workspace/function", "/app")
    image = _built_image(fake_k8s, "new", "/kaniko/src", dockerfile)
    assert fake_k8s.images[image]["has_code"] is True
