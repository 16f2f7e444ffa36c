"""docs/install-k3s.md: every command block says where it runs; the ``# here:`` blocks run (in order, on a
copy of the repository) and leave valid secrets and manifests; of the ``# cluster:`` blocks, the
manifests they apply render and validate, their JSON is JSON, and their Knative settings make the
preflight pass against the fake API server."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tests.support.needs import require_binary

from .conftest import REPO, find, kustomize

DOC = REPO / "docs" / "install-k3s.md"
BLOCK_RE = re.compile(r"```sh\n(.*?)```", re.S)


def blocks(where: str | None = None) -> list[str]:
    found = BLOCK_RE.findall(DOC.read_text())
    return [b for b in found if where is None or b.startswith(f"# {where}:")]


def cluster_lines() -> list[str]:
    return [line for block in blocks("cluster") for line in block.splitlines() if not line.startswith("#")]


def test_every_block_says_where_it_runs():
    assert len(blocks()) > 10
    for block in blocks():
        assert block.startswith(("# here:", "# cluster:")), block.splitlines()[0]
    assert len(blocks("here")) >= 4


@pytest.fixture(scope="module")
def ran_here(tmp_path_factory) -> Path:
    """A copy of what the commands use, with every ``# here:`` block run in it, in order."""
    require_binary("kubectl")
    require_binary("openssl")
    root = tmp_path_factory.mktemp("install") / "hks"
    root.mkdir()
    shutil.copytree(REPO / "deploy", root / "deploy", ignore=shutil.ignore_patterns("secrets.env", "*.pem"))
    for name in ("Dockerfile", ".dockerignore", "requirements.txt"):
        shutil.copy(REPO / name, root / name)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(root),
    }
    for block in blocks("here"):
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{block}\n---\n{done.stdout}\n{done.stderr}"
    return root


def test_the_secret_commands_make_working_keys(ran_here):
    overlay = ran_here / "deploy" / "overlays" / "k3s"
    values = dict(line.split("=", 1) for line in (overlay / "secrets.env").read_text().splitlines() if line)
    assert "change-me" not in values["HKS_SECRET_KEY"]
    Fernet(values["HKS_ENCRYPTION_KEY"].encode())  # a real Fernet key
    key = load_pem_private_key((overlay / "internal-jwt-ed25519.pem").read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    assert oct((overlay / "secrets.env").stat().st_mode & 0o777) == "0o600"


def test_the_rendered_manifests_carry_those_secrets_and_validate(ran_here):
    objects = [o for o in yaml.safe_load_all((ran_here / "hks.yaml").read_text()) if o]
    for obj in objects:
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
    secret = find(objects, "Secret", "hks-secrets")
    assert set(secret["data"]) == {"DATABASE_URL", "REDIS_URL", "HKS_SECRET_KEY", "HKS_ENCRYPTION_KEY"}


def test_the_cli_scaffolds_the_first_function(ran_here):
    assert (ran_here / "hello" / "index.js").exists()
    assert (ran_here / "hello" / "func.yaml").exists()


def test_what_the_cluster_blocks_apply_renders_and_validates(deploy_copy):
    applied = [shlex.split(line)[3] for line in cluster_lines() if line.startswith("kubectl apply -k ")]
    assert applied == ["deploy/registry"]
    for directory in applied:
        for obj in kustomize(deploy_copy.parent / directory):
            kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


def _patches() -> list[tuple[str, str, dict]]:
    found = []
    for line in cluster_lines():
        if line.startswith("kubectl") and " patch " in line:
            words = shlex.split(line)
            target, payload = words[words.index("patch") + 1], json.loads(words[words.index("-p") + 1])
            namespace = words[words.index("-n") + 1]
            found.append((namespace, target, payload))
    return found


def test_every_patch_is_json_and_names_its_namespace():
    patched = {(ns, target) for ns, target, _ in _patches()}
    assert patched == {
        ("kourier-system", "service/kourier"),
        ("knative-serving", "configmap/config-network"),
        ("knative-serving", "configmap/config-domain"),
        ("knative-serving", "configmap/config-features"),
        ("knative-serving", "configmap/config-defaults"),
    }


def test_the_documented_knative_settings_pass_the_preflight(fake_k8s, settings, tmp_path, k3s_objects):
    from functions.backends import knative_preflight as kpf
    from functions.backends import knative_provision as kp
    from tests.backends.test_knative_preflight import install_knative

    version = next(line.split("=v")[1] for line in cluster_lines() if line.startswith("KNATIVE="))
    assert version == kpf.KNATIVE_VERSION
    config: dict[str, dict] = {}
    for namespace, target, payload in _patches():
        if namespace == "knative-serving":
            config.setdefault(target.split("/")[1], {}).update(payload["data"])
    platform = find(k3s_objects, "ConfigMap", "hks-config")["data"]
    settings.HKS_REGISTRY = platform["HKS_REGISTRY"]
    settings.HKS_REGISTRY_SECRET = platform["HKS_REGISTRY_SECRET"]
    settings.HKS_KANIKO_IMAGE = platform["HKS_KANIKO_IMAGE"]
    settings.HKS_KNATIVE_MAX_TIMEOUT_SECONDS = int(platform["HKS_KNATIVE_MAX_TIMEOUT_SECONDS"])
    settings.HKS_AGENT_RUNTIME_CLASS = "gvisor"
    path = tmp_path / "platform.kubeconfig"
    path.write_text(fake_k8s.platform_kubeconfig)  # held to deploy/base/rbac.yaml
    settings.HKS_KNATIVE_KUBECONFIG = str(path)
    install_knative(kp.api_client(fake_k8s.kubeconfig), version=version, config=config)

    _, checks = kpf.preflight()

    assert [(c.name, c.detail) for c in checks if not c.ok] == []
    assert "fn.k3s.test" in next(c.detail for c in checks if c.name == "domain")


def test_the_first_project_command_creates_a_knative_project_that_asks_for_provisioning(
    db, django_user_model, django_capture_on_commit_callbacks
):
    """The Python the "first project" block hands to `manage.py shell -c`, run here as it is written."""
    (code,) = re.findall(r'manage\.py shell -c "\n(.*?)"\n', "\n".join(blocks("cluster")), re.S)
    django_user_model.objects.create_superuser("admin", password="x" * 12)
    with django_capture_on_commit_callbacks() as callbacks:
        exec(compile(code, "install-k3s.md", "exec"), {})  # noqa: S102

    from functions.models import Backend, ClusterState, Project

    project = Project.objects.get(slug="acme")
    assert (project.backend, project.cluster_state) == (Backend.KNATIVE, ClusterState.PENDING)
    assert project.memberships.get().user.username == "admin"
    assert len(callbacks) == 1  # the provisioning task, sent once the row is committed
