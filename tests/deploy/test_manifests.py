"""The install manifests: everything kustomize renders validates against Kubernetes' schemas (strict), and
the properties the platform relies on hold in the base and the K3s overlay."""

from __future__ import annotations

import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.support.needs import require_binary

from .conftest import find

# The oldest Kubernetes the manifests are meant for (K3s 1.31) and the newest the validator knows.
K8S_VERSIONS = ["1.31.0", kubernetes_validate.latest_version()]
COMPONENTS = ["hks-portal", "hks-worker", "hks-beat"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("render", ["base_objects", "k3s_objects", "registry_objects"])
def test_every_rendered_object_validates_strictly(render, version, request):
    objects = request.getfixturevalue(render)
    assert len(objects) >= 4
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)  # raises on an unknown or wrong field


def test_strict_validation_would_catch_a_stray_field(base_objects):
    portal = find(base_objects, "Deployment", "hks-portal")
    portal["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(portal, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("render", ["base_objects", "k3s_objects"])
def test_the_portal_runs_two_replicas_with_health_probes_and_a_disruption_budget(render, request):
    objects = request.getfixturevalue(render)
    portal = find(objects, "Deployment", "hks-portal")
    assert portal["spec"]["replicas"] >= 2
    container = portal["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"].startswith("/healthz")
    budget = find(objects, "PodDisruptionBudget", "hks-portal")
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"] == portal["spec"]["selector"]
    service = find(objects, "Service", "hks-portal")
    assert service["spec"]["selector"] == portal["spec"]["selector"]["matchLabels"]


def test_the_portal_bounds_request_heads_in_the_manifests_and_the_image(base_objects):
    """uvicorn's default parser (httptools) buffers a request head of any size; h11 with a limit does not."""
    portal = find(base_objects, "Deployment", "hks-portal")
    args = " ".join(portal["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "--http h11 --h11-max-incomplete-event-size" in args
    dockerfile = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
    cmd = next(line for line in dockerfile.splitlines() if line.startswith("CMD"))
    assert '"--http", "h11", "--h11-max-incomplete-event-size"' in cmd


@pytest.mark.parametrize("render", ["base_objects", "k3s_objects"])
def test_exactly_one_beat_behind_its_lock_never_two_side_by_side(render, request):
    beat = find(request.getfixturevalue(render), "Deployment", "hks-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert beat["spec"]["template"]["spec"]["containers"][0]["args"][:3] == [
        "python",
        "-m",
        "hks_portal.beat",
    ]


def test_one_image_for_every_component_and_the_migrations(k3s_objects):
    images = {
        container["image"]
        for obj in k3s_objects
        if obj["kind"] in ("Deployment", "Job")
        for container in obj["spec"]["template"]["spec"].get("initContainers", [])
        + obj["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"registry.registry.svc.cluster.local:5000/hks-functions:0.1.0"}
    job = find(k3s_objects, "Job", "hks-migrate")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][-2:] == ["migrate", "--noinput"]


@pytest.mark.parametrize("render", ["base_objects", "k3s_objects"])
def test_every_container_runs_as_non_root_with_a_read_only_root(render, request):
    for obj in request.getfixturevalue(render):
        if obj["kind"] not in ("Deployment", "Job"):
            continue
        pod = obj["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for container in pod.get("initContainers", []) + pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}


def test_the_overlay_wires_the_secrets_it_generates_into_every_pod(k3s_objects):
    secrets = {o["metadata"]["name"]: o for o in k3s_objects if o["kind"] == "Secret"}
    env_secret = next(name for name in secrets if name.startswith("hks-secrets-"))
    assert set(secrets[env_secret]["data"]) == {
        "DATABASE_URL",
        "REDIS_URL",
        "HKS_SECRET_KEY",
        "HKS_ENCRYPTION_KEY",
    }
    jwt = next(name for name in secrets if name.startswith("hks-jwt-"))
    for name in COMPONENTS:
        pod = find(k3s_objects, "Deployment", name)["spec"]["template"]["spec"]
        refs = {
            e["valueFrom"]["secretKeyRef"]["name"] for e in pod["containers"][0]["env"] if "valueFrom" in e
        }
        assert refs == {env_secret}
        assert {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v} == {jwt}
    config = find(k3s_objects, "ConfigMap", "hks-config")
    assert config["data"]["HKS_PUBLIC_URL"] == "https://hks.k3s.test"
    assert config["data"]["HKS_PLATFORM_NAMESPACE"] == "hks"  # from the base, merged


def test_functions_reach_kouriers_gateway_through_traefik(k3s_objects):
    ingress = find(k3s_objects, "Ingress", "hks-functions")
    assert ingress["metadata"]["namespace"] == "kourier-system"
    assert ingress["spec"]["ingressClassName"] == "traefik"
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "*.fn.k3s.test"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "kourier", "port": {"number": 80}}


def test_the_ingress_goes_through_traefik_to_the_portal(k3s_objects):
    ingress = find(k3s_objects, "Ingress", "hks-portal")
    assert ingress["spec"]["ingressClassName"] == "traefik"
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "hks.k3s.test"
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == "hks-portal"


def test_the_platform_may_bind_only_the_project_role_and_holds_no_cluster_wide_secrets(base_objects):
    platform = find(base_objects, "ClusterRole", "hks-platform")
    for rule in platform["rules"]:
        assert "secrets" not in rule["resources"]
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        if "bind" in rule["verbs"] or "escalate" in rule["verbs"]:
            assert rule["verbs"] == ["bind"] and rule["resourceNames"] == ["hks-project"]
    bindings = [o for o in base_objects if o["kind"] == "ClusterRoleBinding"]
    assert [b["roleRef"]["name"] for b in bindings] == ["hks-platform"]  # hks-project: per namespace only


def test_the_prometheus_configuration_passes_promtool(base_objects, tmp_path):
    """Debian's Prometheus is built without Kubernetes service discovery, so promtool checks everything but
    the ``kubernetes_sd_configs`` blocks (relabelling, regexes, authorisation), with static targets there."""
    promtool = require_binary("promtool", hint="Debian's prometheus package has it")
    config = yaml.safe_load(find(base_objects, "ConfigMap", "hks-prometheus")["data"]["prometheus.yml"])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"knative-queue-proxy", "knative-serving", "cadvisor", "hks-platform"} <= set(jobs)
    assert jobs["cadvisor"]["kubernetes_sd_configs"] == [{"role": "node"}]
    for job in config["scrape_configs"]:
        assert {sd["role"] for sd in job.pop("kubernetes_sd_configs")} <= {"pod", "node"}
        job["static_configs"] = [{"targets": ["127.0.0.1:9090"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
