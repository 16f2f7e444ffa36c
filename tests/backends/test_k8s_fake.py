"""The fake Kubernetes API server behaves like a real one where the backend relies on it."""

import time

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.k8s_fake import KSVC


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
        "spec": {"template": {"spec": {"containers": [{"image": "registry.local/x:1"}], **spec_extra}}},
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
