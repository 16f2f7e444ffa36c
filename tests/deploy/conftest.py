"""Rendering the install manifests (deploy/) offline with ``kubectl kustomize``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.needs import require_binary

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def kustomize(directory: Path) -> list[dict]:
    kubectl = require_binary("kubectl", hint="kustomize renders the manifests")
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def fill_overlay_secrets(overlay: Path) -> None:
    """What docs/install-k3s.md has the operator do: secrets.env from the example, a fresh JWT key."""
    shutil.copy(overlay / "secrets.env.example", overlay / "secrets.env")
    key = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (overlay / "internal-jwt-ed25519.pem").write_bytes(key)


@pytest.fixture(scope="session")
def deploy_copy(tmp_path_factory) -> Path:
    """A copy of deploy/ with the overlay's secret files filled in (the checkout never has them)."""
    target = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(DEPLOY, target)
    fill_overlay_secrets(target / "overlays" / "k3s")
    return target


@pytest.fixture(scope="session")
def base_objects(deploy_copy) -> list[dict]:
    return kustomize(deploy_copy / "base")


@pytest.fixture(scope="session")
def k3s_objects(deploy_copy) -> list[dict]:
    return kustomize(deploy_copy / "overlays" / "k3s")


@pytest.fixture(scope="session")
def registry_objects(deploy_copy) -> list[dict]:
    return kustomize(deploy_copy / "registry")


def find(objects: list[dict], kind: str, name: str) -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(name)]
    assert len(matches) == 1, f"{kind} {name}: {len(matches)} found"
    return matches[0]
