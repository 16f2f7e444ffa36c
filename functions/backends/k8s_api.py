"""Talking to a Kubernetes API, for the Knative backend, project provisioning and the preflight: the
platform's own kubeconfig, an API client from a kubeconfig, the request timeout, and ``BackendError`` from
the API's errors (which are worth retrying)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pydantic
import yaml
from django.conf import settings
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from functions.backends.base import BackendError

TIMEOUT = (5, 30)  # connect, read - seconds
TRANSIENT_STATUS = {409, 429, 500, 502, 503, 504}
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def _api_message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body or "")["message"]
    except (ValueError, KeyError, TypeError):
        return exc.reason or f"HTTP {exc.status}"


def backend_error(exc: Exception) -> BackendError:
    if isinstance(exc, ApiException):
        if exc.status == 401:
            return BackendError(
                f"the cluster refused the project's credentials: {_api_message(exc)}", permanent=True
            )
        if exc.status == 403:  # RBAC, but also quotas and admission: the server's message says which
            return BackendError(f"the cluster refused the request: {_api_message(exc)}", permanent=True)
        return BackendError(
            f"Kubernetes API: {_api_message(exc)}", permanent=exc.status not in TRANSIENT_STATUS
        )
    if isinstance(exc, pydantic.ValidationError):
        return BackendError(f"invalid Kubernetes object: {exc}", permanent=True)
    return BackendError(f"cannot reach the cluster: {exc}", permanent=False)


def platform_kubeconfig() -> str:
    """The platform's own kubeconfig: ``HKS_KNATIVE_KUBECONFIG``, the pod's ServiceAccount, or ""."""
    if settings.HKS_KNATIVE_KUBECONFIG:
        return Path(settings.HKS_KNATIVE_KUBECONFIG).read_text(encoding="utf-8")
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    token = SERVICE_ACCOUNT_DIR / "token"
    if not host or not token.exists():
        return ""
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "in-cluster",
                    "cluster": {
                        "server": server,
                        "certificate-authority": str(SERVICE_ACCOUNT_DIR / "ca.crt"),
                    },
                }
            ],
            "users": [{"name": "platform", "user": {"token": token.read_text().strip()}}],
            "contexts": [{"name": "platform", "context": {"cluster": "in-cluster", "user": "platform"}}],
            "current-context": "platform",
        }
    )


def api_client(kubeconfig: str) -> client.ApiClient:
    try:
        configuration = client.Configuration()
        config.load_kube_config_from_dict(yaml.safe_load(kubeconfig), client_configuration=configuration)
    except Exception as exc:  # the loader raises many kinds; all mean the same to the caller
        raise BackendError(f"the kubeconfig is not usable: {exc}", permanent=True) from exc
    configuration.retries = 1
    return client.ApiClient(configuration)
