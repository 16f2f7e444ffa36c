"""What the Kubernetes API's answers mean to a backend: the request timeout, and ``BackendError`` from its
errors (which are worth retrying). Shared by the Knative backend and project provisioning."""

from __future__ import annotations

import json

import pydantic
from kubernetes.client.rest import ApiException

from functions.backends.base import BackendError

TIMEOUT = (5, 30)  # connect, read - seconds
TRANSIENT_STATUS = {409, 429, 500, 502, 503, 504}


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
