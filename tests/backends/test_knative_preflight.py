"""The preflight (manage.py knative_check, the operators' page) against the fake API server: all ok,
Knative missing, a flag off - each prerequisite with the right state and fix."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from kubernetes import client

from functions.backends import knative_preflight as kpf
from functions.backends import knative_provision as kp
from functions.models import Backend
from tests.support.k8s_fake import platform_namespace

CONFIG = {
    "config-features": {"secure-pod-defaults": "enabled", "kubernetes.podspec-runtimeclassname": "enabled"},
    "config-defaults": {"max-revision-timeout-seconds": "900"},
    "config-domain": {"fn.k3s.test": "", "_example": "# the example block Knative ships"},
}


def _crd(plural: str, version: str) -> dict:
    kind = plural[:-1].title()
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.serving.knative.dev",
            "labels": {"app.kubernetes.io/version": version, "serving.knative.dev/release": f"v{version}"},
        },
        "spec": {
            "group": "serving.knative.dev",
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": plural[:-1], "listKind": f"{kind}List"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }


@pytest.fixture
def cluster(fake_k8s, settings, tmp_path):
    """The platform's credentials point at the fake; the settings a ready cluster needs."""
    path = tmp_path / "platform.kubeconfig"
    path.write_text(fake_k8s.platform_kubeconfig)  # held to deploy/base/rbac.yaml
    settings.HKS_KNATIVE_KUBECONFIG = str(path)
    settings.HKS_REGISTRY = "registry.k3s.test:5000/hks"
    settings.HKS_REGISTRY_SECRET = "hks-registry"
    settings.HKS_PLATFORM_NAMESPACE = "hks"
    settings.HKS_KANIKO_IMAGE = "ghcr.io/osscontainertools/kaniko:v1.28.3"
    settings.HKS_AGENT_RUNTIME_CLASS = "gvisor"
    settings.HKS_KNATIVE_MAX_TIMEOUT_SECONDS = 600
    api = kp.api_client(fake_k8s.kubeconfig)
    core = client.CoreV1Api(api)
    platform_namespace(core)
    return api


def install_knative(api, *, version: str = "1.23.0", config: dict | None = None) -> None:
    extensions, core = client.ApiextensionsV1Api(api), client.CoreV1Api(api)
    for plural in kpf.CRDS:
        extensions.create_custom_resource_definition(_crd(plural, version))
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "knative-serving"}})
    for name, data in (config or CONFIG).items():
        core.create_namespaced_config_map(
            "knative-serving",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data},
        )


def _states(checks) -> dict[str, str]:
    return {check.name: check.state for check in checks}


def _run_command(*args) -> tuple[str, CommandError | None]:
    from io import StringIO

    out = StringIO()
    try:
        call_command("knative_check", *args, stdout=out)
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


def test_a_ready_cluster_passes_every_check(cluster, fake_k8s, db):
    install_knative(cluster)

    where, checks = kpf.preflight()

    assert where == f"{fake_k8s.url} (the platform's credentials)"
    assert [(c.name, c.state, c.detail) for c in checks] == [
        (
            "Knative Serving CRDs",
            "ok",
            "services.serving.knative.dev, configurations.serving.knative.dev, "
            "revisions.serving.knative.dev, routes.serving.knative.dev",
        ),
        ("Knative Serving version", "ok", "1.23.0"),
        ("runtimeClassName feature flag", "ok", "kubernetes.podspec-runtimeclassname: enabled"),
        ("secure pod defaults feature flag", "ok", "secure-pod-defaults: enabled"),
        (
            "max-revision-timeout-seconds",
            "ok",
            "max-revision-timeout-seconds: 900 (HKS_KNATIVE_MAX_TIMEOUT_SECONDS=600)",
        ),
        ("domain", "ok", "fn.k3s.test"),
        ("registry", "ok", "registry.k3s.test:5000/hks, push Secret hks/hks-registry"),
        ("Kaniko image", "ok", "ghcr.io/osscontainertools/kaniko:v1.28.3"),
    ]
    output, failed = _run_command()
    assert failed is None
    assert output.splitlines()[-1] == "all 8 prerequisites are ok"


def test_without_knative_the_crds_are_missing_with_the_install_command(cluster, db):
    where, checks = kpf.preflight()

    assert _states(checks) == {
        "Knative Serving CRDs": "missing",
        "Knative Serving version": "missing",
        "runtimeClassName feature flag": "missing",
        "secure pod defaults feature flag": "missing",
        "max-revision-timeout-seconds": "missing",
        "domain": "missing",
        "registry": "ok",
        "Kaniko image": "ok",
    }
    crds = checks[0]
    assert crds.detail.startswith("no CustomResourceDefinition services.serving.knative.dev, configurations")
    assert crds.fix == (
        "kubectl apply -f https://github.com/knative/serving/releases/download/knative-v1.23.0/serving-crds.yaml"
        " -f https://github.com/knative/serving/releases/download/knative-v1.23.0/serving-core.yaml"
    )
    output, failed = _run_command()
    assert str(failed) == "6 of 8 prerequisites are not ok"
    assert "  missing  Knative Serving CRDs" in output
    assert (
        "fix: kubectl apply -f https://github.com/knative/serving/releases/download/knative-v1.23.0" in output
    )


def test_the_runtime_class_flag_off_is_wrong_for_agent_code_and_says_how_to_turn_it_on(cluster, db):
    features = {**CONFIG["config-features"], "kubernetes.podspec-runtimeclassname": "disabled"}
    install_knative(cluster, config={**CONFIG, "config-features": features})

    _, checks = kpf.preflight()

    flag = next(c for c in checks if c.name == "runtimeClassName feature flag")
    assert (flag.state, flag.detail) == (
        "wrong",
        "kubernetes.podspec-runtimeclassname is 'disabled', so Knative refuses agent functions with "
        "runtimeClassName 'gvisor'",
    )
    assert flag.fix == (
        "kubectl patch configmap/config-features -n knative-serving --type merge "
        """-p '{"data": {"kubernetes.podspec-runtimeclassname": "enabled"}}'"""
    )
    assert [c.name for c in checks if not c.ok] == ["runtimeClassName feature flag"]
    output, failed = _run_command()
    assert str(failed) == "1 of 8 prerequisites are not ok"
    assert "  wrong    runtimeClassName feature flag" in output


def test_the_runtime_class_flag_is_not_needed_without_a_runtime_class(cluster, settings, db):
    settings.HKS_AGENT_RUNTIME_CLASS = ""
    features = {"secure-pod-defaults": "enabled"}
    install_knative(cluster, config={**CONFIG, "config-features": features})
    _, checks = kpf.preflight()
    assert all(c.ok for c in checks)


def test_an_old_knative_a_short_timeout_no_domain_and_secure_defaults_off_are_each_reported(cluster, db):
    config = {
        "config-features": {"kubernetes.podspec-runtimeclassname": "enabled"},
        "config-defaults": {"max-revision-timeout-seconds": "300"},
        "config-domain": {"_example": "..."},
    }
    install_knative(cluster, version="1.17.2", config=config)

    checks = {c.name: c for c in kpf.preflight()[1]}

    assert checks["Knative Serving version"].state == "wrong"
    assert (
        checks["Knative Serving version"].detail
        == "1.17.2: older than 1.19, whose metric names the portal reads"
    )
    assert checks["secure pod defaults feature flag"].state == "wrong"
    assert checks["max-revision-timeout-seconds"].state == "wrong"
    assert "HKS_KNATIVE_MAX_TIMEOUT_SECONDS=300" in checks["max-revision-timeout-seconds"].fix
    assert checks["domain"].state == "missing"


def test_knative_installed_after_the_platform_leaves_its_settings_unreadable_and_says_so(
    cluster, fake_k8s, db
):
    # `kubectl apply -k` before Knative could not create the Role in knative-serving: the API refuses.
    fake_k8s.rbac_objects = [
        o for o in fake_k8s.rbac_objects if o["metadata"].get("namespace") != "knative-serving"
    ]
    install_knative(cluster)

    checks = {c.name: c for c in kpf.preflight()[1]}

    api = checks["Kubernetes API"]
    assert (api.state, api.detail) == ("wrong", "HTTP 403: Forbidden")
    assert "apply the HKS manifests again" in api.fix and "hks-knative-config" in api.fix
    assert checks["Knative Serving CRDs"].ok


@pytest.mark.parametrize(
    ("image", "state"),
    [
        ("ghcr.io/osscontainertools/kaniko:latest", "wrong"),
        ("ghcr.io/osscontainertools/kaniko", "wrong"),
        ("gcr.io/kaniko-project/executor:v1.23.2", "wrong"),
        ("registry.k3s.test:5000/kaniko@sha256:" + "a" * 64, "ok"),
        ("", "missing"),
    ],
)
def test_the_kaniko_image_must_be_a_pinned_maintained_one(image, state, settings):
    settings.HKS_KANIKO_IMAGE = image
    assert kpf.kaniko_check().state == state


def test_no_credentials_say_what_to_configure(settings, db):
    settings.HKS_KNATIVE_KUBECONFIG = ""
    where, checks = kpf.preflight()
    assert (checks[0].name, checks[0].state) == ("cluster credentials", "missing")
    assert "HKS_KNATIVE_KUBECONFIG" in checks[0].fix


def test_a_projects_check_looks_for_the_registry_secret_in_its_namespace(cluster, knative_project, db):
    install_knative(cluster)
    output, failed = _run_command("acme")
    assert "project acme's kubeconfig" in output.splitlines()[0]
    assert "no Secret acme/hks-registry" in output  # provisioning copies it there
    assert str(failed) == "1 of 8 prerequisites are not ok"


def test_the_operators_page_shows_the_prerequisites(cluster, admin_client, project):
    project.backend = Backend.KNATIVE
    project.save()
    install_knative(cluster, config={**CONFIG, "config-domain": {}})

    html = admin_client.get("/ops/").content.decode()

    section = html.split('id="ops-knative"')[1].split("</table>")[0]
    assert "<td>domain</td><td><strong>missing</strong></td>" in section
    assert "kubectl patch configmap/config-domain" in section
