"""The Knative backend's manifests validate against the real schemas and say what the design asks."""

import copy

import pytest

from functions.backends import k8s_manifests as m
from functions.backends.base import BuildSpec, FunctionRef, Resources, Scale, ScheduleSpec, ServiceSpec
from tests.k8s_fake import ManifestInvalid, validate_manifest

REF = FunctionRef(project="acme", namespace="acme", function="hello")
CLUSTER = m.ClusterSettings(
    registry="registry.example.test/hks", agent_runtime_class="gvisor", registry_secret="push-creds"
)


def service_spec(**changes) -> ServiceSpec:
    values = dict(
        ref=REF,
        revision="hello-00003",
        runtime="node",
        kind="http",
        artifact="registry.example.test/hks/x:1",
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
        "network-policy": m.network_policy(REF),
        "ksvc": m.knative_service(service_spec(), CLUSTER),
        "ksvc-restricted": m.knative_service(restricted, CLUSTER),
        "build-configmap": m.build_config_map(BUILD),
        "build-secret": m.build_secret(BUILD),
        "build-job": m.kaniko_job(BUILD, CLUSTER),
        "cronjob": m.cron_job(SCHEDULE, CLUSTER),
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
    assert container["resources"]["limits"] == {"cpu": "250m", "memory": "128Mi"}
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


def test_network_policy_denies_all_egress_for_the_function_pods():
    policy = m.network_policy(REF)["spec"]
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
    cron = m.cron_job(SCHEDULE, CLUSTER)
    spec = cron["spec"]
    assert spec["schedule"] == "0 3 * * *"
    assert spec["timeZone"] == "Europe/Berlin"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] == 120
    assert spec["suspend"] is True  # paused schedule
    assert spec["successfulJobsHistoryLimit"] == spec["failedJobsHistoryLimit"] == CLUSTER.schedule_history
    container = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == CLUSTER.curl_image
    args = container["args"]
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
