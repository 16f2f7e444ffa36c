"""The Knative backend's manifests validate against the real schemas and say what the design asks."""

import copy
import dataclasses

import pytest

from functions.backends import k8s_manifests as m
from functions.backends import k8s_schedules as schedules_k8s
from functions.backends.base import BuildSpec, FunctionRef, Resources, Scale, ScheduleSpec, ServiceSpec
from tests.support.k8s_fake import ManifestInvalid, validate_manifest

REF = FunctionRef(project="acme", namespace="acme", function="hello")
CLUSTER = m.ClusterSettings(
    registry="registry.example.test/hks", agent_runtime_class="gvisor", registry_secret="push-creds"
)
# Every registry knob on: a plain-HTTP K3s registry with a private CA, mirrors, cache, an arch pin.
EVERYTHING = m.ClusterSettings(
    registry="registry.kube-system.svc.cluster.local:5000/hks",
    registry_secret="push-creds",
    registry_insecure=True,
    registry_ca_configmap="registry-ca",
    registry_mirrors=("mirror.gcr.io",),
    portal_ca_configmap="portal-ca",
    build_cache=True,
    kaniko_extra_args=("--verbosity=debug",),
    node_arch="arm64",
)
DIGEST = "sha256:" + "e" * 64


def service_spec(**changes) -> ServiceSpec:
    values = dict(
        ref=REF,
        revision="hello-00003",
        runtime="node",
        kind="http",
        artifact=f"registry.example.test/hks/acme/hello@{DIGEST}",
        env={"GREETING": "hi", "B": "2"},
        scale=Scale(1, 5, 50, 10),
        resources=Resources(250, 128),
        timeout_seconds=60,
        labels={"hks.dev/project": "acme", "hks.dev/function": "hello"},
    )
    values.update(changes)
    return ServiceSpec(**values)


BUILD = BuildSpec(
    ref=REF,
    revision="hello-00003",
    runtime="python",
    archive_path="/dev/null",
    archive_url="https://portal.example.test/cluster/archives/tok/",
    content_hash="ab" * 32,
)
SCHEDULE = ScheduleSpec(
    ref=REF,
    name="nightly",
    cron="0 3 * * *",
    timezone="Europe/Berlin",
    method="post",
    path="/run",
    headers={"X-Kind": "cron"},
    body='{"a": 1}',
    enabled=False,
    concurrency_policy="Forbid",
    starting_deadline_seconds=120,
    target_url="http://hello.acme.svc.cluster.local/run",
)


def all_manifests():
    restricted = service_spec(sandbox_profile="restricted", visibility="cluster-local")
    with_secrets = service_spec(secret_env={"API_KEY": "s3cret"}, secret_env_version="abc123")
    return {
        "ksvc-with-secrets": m.knative_service(with_secrets, CLUSTER),
        "env-secret": m.env_secret(with_secrets),
        "namespace": m.namespace("acme"),
        "service-account": m.service_account(REF),
        "network-policy": m.function_network_policy(
            REF, restricted=False, egress_cidrs=("10.20.0.0/16",), egress_namespaces=("kourier-system",)
        ),
        "network-policy-restricted": m.function_network_policy(REF, restricted=True),
        "build-network-policy": m.build_network_policy("acme", "acme", egress_cidrs=("10.43.0.10/32",)),
        "ksvc": m.knative_service(service_spec(), CLUSTER),
        "ksvc-restricted": m.knative_service(restricted, CLUSTER),
        "ksvc-long-timeout-arch": m.knative_service(service_spec(timeout_seconds=600), EVERYTHING),
        "build-configmap": m.build_config_map(BUILD),
        "build-secret": m.build_secret(BUILD),
        "build-job": m.kaniko_job(BUILD, CLUSTER),
        "build-job-every-knob": m.kaniko_job(BUILD, EVERYTHING),
        "cronjob": schedules_k8s.cron_job(SCHEDULE, CLUSTER),
        "cronjob-cloudevents": schedules_k8s.cron_job(
            dataclasses.replace(SCHEDULE, kind="cloudevents"), CLUSTER
        ),
    }


@pytest.mark.parametrize("which", sorted(all_manifests()))
def test_manifest_validates_against_the_real_schema(which):
    validate_manifest(all_manifests()[which])


@pytest.mark.parametrize(
    ("which", "path"),
    [
        ("cronjob", ["spec"]),
        ("build-job", ["spec", "template", "spec"]),
        ("ksvc", ["spec", "template", "spec", "containers", 0]),
        ("service-account", ["metadata"]),
        ("ksvc", ["metadata"]),
    ],
)
def test_a_stray_field_is_rejected(which, path):
    manifest = copy.deepcopy(all_manifests()[which])
    target = manifest
    for key in path:
        target = target[key]
    target["strayField"] = True
    with pytest.raises(ManifestInvalid, match="strayField"):
        validate_manifest(manifest)


def test_a_wrong_type_is_rejected_in_a_knative_service():
    manifest = m.knative_service(service_spec(), CLUSTER)
    manifest["spec"]["template"]["spec"]["containerConcurrency"] = "ten"
    with pytest.raises(ManifestInvalid, match="containerConcurrency"):
        validate_manifest(manifest)


def test_ksvc_carries_scale_resources_and_a_restricted_container():
    ksvc = m.knative_service(service_spec(), CLUSTER)
    template = ksvc["spec"]["template"]
    assert template["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] == "1"
    assert template["metadata"]["annotations"]["autoscaling.knative.dev/max-scale"] == "5"
    assert template["metadata"]["annotations"]["autoscaling.knative.dev/target"] == "50"
    pod = template["spec"]
    assert pod["containerConcurrency"] == 10
    assert pod["timeoutSeconds"] == 60
    assert pod["serviceAccountName"] == m.service_account_name(REF)
    container = pod["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "250m", "memory": "128Mi", "ephemeral-storage": "1Gi"}
    assert container["env"] == [{"name": "B", "value": "2"}, {"name": "GREETING", "value": "hi"}]
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "runtimeClassName" not in pod
    assert "networking.knative.dev/visibility" not in ksvc["metadata"]["labels"]
    assert ksvc["metadata"]["labels"]["hks.dev/function"] == "hello"


def test_env_names_knative_reserves_are_left_to_knative():
    ksvc = m.knative_service(service_spec(env={"K_SERVICE": "spoof", "PORT": "1", "OK": "1"}), CLUSTER)
    assert ksvc["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "OK", "value": "1"}]


def test_secret_env_is_read_from_a_secret_and_never_written_into_the_service():
    spec = service_spec(env={"MODE": "x"}, secret_env={"API_KEY": "s3cret"}, secret_env_version="v1")
    ksvc = m.knative_service(spec, CLUSTER)
    assert "s3cret" not in str(ksvc)
    assert ksvc["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "MODE", "value": "x"},
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "hello-env", "key": "API_KEY"}}},
    ]
    # new values make a new template, so Knative rolls a new revision that reads them
    assert ksvc["spec"]["template"]["metadata"]["annotations"]["hks.dev/secret-env-version"] == "v1"
    secret = m.env_secret(spec)
    assert secret["metadata"]["name"] == "hello-env" and secret["stringData"] == {"API_KEY": "s3cret"}
    assert secret["metadata"]["labels"]["hks.dev/function"] == "hello"  # deleted with the function


def test_the_registry_secret_pulls_the_image():
    ksvc = m.knative_service(service_spec(), CLUSTER)
    assert ksvc["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "push-creds"}]


def test_agent_code_is_cluster_local_with_the_agent_runtime_class():
    ksvc = m.knative_service(service_spec(sandbox_profile="restricted"), CLUSTER)
    assert ksvc["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
    assert ksvc["spec"]["template"]["spec"]["runtimeClassName"] == "gvisor"


def test_network_policy_denies_all_egress_for_agent_code():
    policy = m.function_network_policy(REF, restricted=True)["spec"]
    assert policy["podSelector"] == {"matchLabels": {"serving.knative.dev/service": "hello"}}
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["egress"] == []


def test_service_account_mounts_no_token():
    assert m.service_account(REF)["automountServiceAccountToken"] is False


def test_build_job_fetches_the_source_from_a_secret_and_pushes_the_image():
    job = m.kaniko_job(BUILD, CLUSTER)
    spec = job["spec"]
    assert spec["activeDeadlineSeconds"] == CLUSTER.build_timeout_seconds
    assert spec["ttlSecondsAfterFinished"] == CLUSTER.build_ttl_seconds
    pod = spec["template"]["spec"]
    fetch, kaniko = pod["initContainers"][0], pod["containers"][0]
    assert BUILD.archive_url not in str(job)  # the one-time URL lives in the Secret
    assert fetch["env"][0]["valueFrom"]["secretKeyRef"]["name"] == m.build_name(BUILD)
    assert kaniko["image"] == CLUSTER.kaniko_image
    assert f"--destination={m.image_ref(BUILD, CLUSTER)}" in kaniko["args"]
    assert m.image_ref(BUILD, CLUSTER).startswith("registry.example.test/hks/acme/hello:hello-00003-")
    assert {"name": "registry", "mountPath": "/kaniko/.docker", "readOnly": True} in kaniko["volumeMounts"]
    assert m.build_secret(BUILD)["stringData"]["archive-url"] == BUILD.archive_url


def test_cronjob_carries_the_schedule_settings_and_the_request():
    cron = schedules_k8s.cron_job(SCHEDULE, CLUSTER)
    spec = cron["spec"]
    assert spec["schedule"] == "0 3 * * *"
    assert spec["timeZone"] == "Europe/Berlin"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] == 120
    assert spec["suspend"] is True  # paused schedule
    assert spec["successfulJobsHistoryLimit"] == spec["failedJobsHistoryLimit"] == CLUSTER.schedule_history
    container = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == CLUSTER.curl_image
    args = container["command"]
    assert args[-1] == SCHEDULE.target_url
    assert args[args.index("--request") + 1] == "POST"
    assert "X-Kind: cron" in args
    assert args[args.index("--data-binary") + 1] == '{"a": 1}'
    assert container["securityContext"]["runAsNonRoot"] is True
    assert cron["metadata"]["labels"]["hks.dev/function"] == "hello"


def test_long_names_are_shortened_uniquely_within_kubernetes_limits():
    a, b = (
        m.k8s_name("hks-cron", "f" * 60, "one", max_length=52),
        m.k8s_name("hks-cron", "f" * 60, "two", max_length=52),
    )
    assert len(a) <= 52 and len(b) <= 52
    assert a != b
    long_ref = FunctionRef(project="acme", namespace="acme", function="x" * 63)
    long_build = BuildSpec(
        ref=long_ref,
        revision="x" * 63 + "-00001",
        runtime="node",
        archive_path="",
        archive_url="http://p/",
        content_hash="0" * 64,
    )
    validate_manifest(m.kaniko_job(long_build, CLUSTER))
    validate_manifest(m.knative_service(service_spec(ref=long_ref, revision="x" * 63 + "-00001"), CLUSTER))


def test_build_pods_mount_nothing_outside_kaniko_own_directory():
    pod = m.kaniko_job(BUILD, EVERYTHING)["spec"]["template"]["spec"]
    for container in [*pod["initContainers"], *pod["containers"]]:
        for mount in container["volumeMounts"]:
            assert mount["mountPath"].startswith("/kaniko/"), mount


def test_kaniko_writes_the_digest_to_the_termination_log():
    kaniko = m.kaniko_job(BUILD, CLUSTER)["spec"]["template"]["spec"]["containers"][0]
    assert "--digest-file=/dev/termination-log" in kaniko["args"]
    assert kaniko["terminationMessagePath"] == "/dev/termination-log"
    assert kaniko["terminationMessagePolicy"] == "File"


def test_the_ksvc_gets_the_image_by_digest():
    image = m.image_with_digest(BUILD, CLUSTER, DIGEST + "\n")
    assert image == f"registry.example.test/hks/acme/hello@{DIGEST}"
    with pytest.raises(ValueError, match="not an image digest"):
        m.image_with_digest(BUILD, CLUSTER, "latest")


def test_registry_knobs_reach_kaniko():
    pod = m.kaniko_job(BUILD, EVERYTHING)["spec"]["template"]["spec"]
    kaniko = pod["containers"][0]
    host = "registry.kube-system.svc.cluster.local:5000"
    assert f"--insecure-registry={host}" in kaniko["args"]
    assert f"--registry-certificate={host}=/kaniko/hks-certs/ca.crt" in kaniko["args"]
    assert "--registry-mirror=mirror.gcr.io" in kaniko["args"]
    assert "--push-retry=3" in kaniko["args"] and "--image-download-retry=3" in kaniko["args"]
    assert "--cache=true" in kaniko["args"]
    assert f"--cache-repo={EVERYTHING.registry}/{BUILD.ref.project}/cache/kaniko" in kaniko["args"]
    assert kaniko["args"][-1] == "--verbosity=debug"
    assert {"name": "registry-ca", "mountPath": "/kaniko/hks-certs", "readOnly": True} in kaniko[
        "volumeMounts"
    ]
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "arm64"}


def test_each_project_has_a_kaniko_layer_cache_of_its_own():
    """A layer one tenant's build made (its install scripts ran in it) is never another tenant's hit, and
    the cache is no function's image repository, not even one called ``cache``."""
    other = dataclasses.replace(BUILD, ref=FunctionRef(project="other", namespace="other", function="cache"))
    mine, theirs = m.kaniko_cache_repo(BUILD, EVERYTHING), m.kaniko_cache_repo(other, EVERYTHING)
    assert mine != theirs
    assert theirs != m.image_repository(other, EVERYTHING)


def test_the_default_kaniko_image_is_pinned():
    assert not m.ClusterSettings().kaniko_image.endswith(":latest")
    assert ":v" in m.ClusterSettings().kaniko_image


def test_every_build_container_has_resources():
    pod = m.kaniko_job(BUILD, CLUSTER)["spec"]["template"]["spec"]
    for container in [*pod["initContainers"], *pod["containers"]]:
        assert set(container["resources"]) == {"requests", "limits"}, container["name"]
        # ephemeral-storage too: the node's disk is shared with other tenants' pods
        limits = set(container["resources"]["limits"])
        assert limits == {"cpu", "memory", "ephemeral-storage"}, container["name"]


def test_function_and_session_containers_cannot_fill_the_nodes_disk():
    for container in m.knative_service(service_spec(), CLUSTER)["spec"]["template"]["spec"]["containers"]:
        assert container["resources"]["limits"]["ephemeral-storage"] == m.FUNCTION_EPHEMERAL_STORAGE


def test_a_long_timeout_raises_the_response_start_timeout_too():
    pod = m.knative_service(service_spec(timeout_seconds=600), CLUSTER)["spec"]["template"]["spec"]
    assert pod["responseStartTimeoutSeconds"] == 600
    short = m.knative_service(service_spec(timeout_seconds=60), CLUSTER)["spec"]["template"]["spec"]
    assert "responseStartTimeoutSeconds" not in short


def test_the_architecture_pin_reaches_the_function_too():
    pod = m.knative_service(service_spec(), EVERYTHING)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
    assert "nodeSelector" not in m.knative_service(service_spec(), CLUSTER)["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    ("kind", "module"), [("http", "func_python.http"), ("cloudevents", "func_python.cloudevent")]
)
def test_python_images_start_the_middleware_of_their_kind(kind, module):
    config_map = m.build_config_map(dataclasses.replace(BUILD, kind=kind))
    cmd = next(line for line in config_map["data"]["Dockerfile"].splitlines() if line.startswith("CMD"))
    assert f"from {module} import serve" in cmd


def test_project_namespaces_enforce_a_pod_security_level_builds_meet():
    labels = m.namespace("acme")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"


def test_ingress_namespaces_are_a_setting_with_contour_internal_by_default():
    default = m.function_network_policy(REF, restricted=True)["spec"]["ingress"][0]["from"][0]
    assert "contour-internal" in default["namespaceSelector"]["matchExpressions"][0]["values"]
    custom = m.function_network_policy(REF, restricted=True, ingress_namespaces=("envoy-gateway-system",))
    peer = custom["spec"]["ingress"][0]["from"][0]
    assert peer["namespaceSelector"]["matchExpressions"][0]["values"] == ["envoy-gateway-system"]


def test_the_source_fetch_trusts_the_portal_ca_when_given():
    fetch = m.kaniko_job(BUILD, EVERYTHING)["spec"]["template"]["spec"]["initContainers"][0]
    assert fetch["args"][:2] == ["--cacert", "/kaniko/hks-portal-ca/ca.crt"]
    assert {"name": "portal-ca", "mountPath": "/kaniko/hks-portal-ca", "readOnly": True} in fetch[
        "volumeMounts"
    ]
    plain = m.kaniko_job(BUILD, CLUSTER)["spec"]["template"]["spec"]["initContainers"][0]
    assert "--cacert" not in plain["args"]
