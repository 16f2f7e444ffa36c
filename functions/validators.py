"""Validators shared by models, forms and the API."""

import re
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ValidationError

# The one name rule of the platform (projects, functions, schedules; hks_runtime checks the same): a DNS-1035
# label, which is a DNS-1123 label that starts with a letter - what Knative requires of a Service name.
DNS_LABEL_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


def validate_dns_label(value: str) -> None:
    """A DNS-1035 label (see ``DNS_LABEL_RE``)."""
    if not DNS_LABEL_RE.match(value or ""):
        raise ValidationError(
            "%(value)r is not a valid name: use 1-63 lowercase letters, digits and '-', "
            "starting with a letter and ending with a letter or digit.",
            params={"value": value},
            code="invalid_dns_label",
        )


# Namespaces no project may have on the host cluster: the cluster's own (K3s's included), Knative's and its
# ingress', the platform's, and every namespace the NetworkPolicies trust - functions accept traffic from
# HKS_KNATIVE_INGRESS_NAMESPACES, may reach HKS_KNATIVE_EGRESS_NAMESPACES, and Prometheus' namespace may
# scrape them: a project owning one would run its functions inside another project's trust.
# HKS_RESERVED_NAMESPACES adds the operator's own.
SYSTEM_NAMESPACES = frozenset(
    {"default", "local-path-storage", "knative-serving", "knative-eventing", "kourier-system", "registry"}
)


def reserved_namespace(name: str) -> bool:
    """``name`` is a namespace no project may hold on the host cluster (see ``SYSTEM_NAMESPACES``)."""
    from django.conf import settings

    trusted = {
        settings.HKS_PLATFORM_NAMESPACE,
        settings.HKS_PROMETHEUS_NAMESPACE,
        *settings.HKS_KNATIVE_INGRESS_NAMESPACES,
        *settings.HKS_KNATIVE_EGRESS_NAMESPACES,
        *getattr(settings, "HKS_RESERVED_NAMESPACES", ()),
    }
    return name.startswith("kube-") or name in SYSTEM_NAMESPACES or name in trusted


ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Env limits: far above what a function needs, far below what reaches the runtime's 1 MiB request cap or a
# Kubernetes object's size. The same rules for func.yaml, the settings form and API, and the internal API.
ENV_MAX_NAME_BYTES = 256
ENV_MAX_VALUE_BYTES = 32 * 1024
ENV_MAX_COUNT = 200
ENV_MAX_TOTAL_BYTES = 256 * 1024


def check_env(env) -> dict[str, str]:
    """A function's environment, checked: POSIX-style names (letters, digits, ``_``, not starting with a
    digit - so no ``=`` or NUL), values without NUL, and bounded sizes. Returns it as ``dict[str, str]``;
    raises ValueError with the reason, in words for the person who sent it."""
    if not isinstance(env, dict):
        raise ValueError("env must be a mapping of variable names to values")
    if len(env) > ENV_MAX_COUNT:
        raise ValueError(f"{len(env)} environment variables; the limit is {ENV_MAX_COUNT}")
    checked: dict[str, str] = {}
    total = 0
    for name, value in env.items():
        name = str(name)
        shown = name[:40] + ("..." if len(name) > 40 else "")
        if len(name.encode()) > ENV_MAX_NAME_BYTES:
            raise ValueError(f"environment variable name {shown!r} is longer than {ENV_MAX_NAME_BYTES} bytes")
        if not ENV_NAME_RE.match(name):
            raise ValueError(
                f"{shown!r} is not a valid environment variable name "
                "(letters, digits and '_', not starting with a digit)"
            )
        if value is None:
            value = ""
        if not isinstance(value, str | int | float | bool):
            raise ValueError(f"environment variable {name} must have a text value")
        value = str(value)
        if "\x00" in value:
            raise ValueError(f"environment variable {name} contains a NUL character")
        size = len(value.encode())
        if size > ENV_MAX_VALUE_BYTES:
            raise ValueError(
                f"environment variable {name} is {size} bytes; the limit is {ENV_MAX_VALUE_BYTES} per value"
            )
        total += len(name.encode()) + size
        if total > ENV_MAX_TOTAL_BYTES:
            raise ValueError(f"the environment is larger than {ENV_MAX_TOTAL_BYTES} bytes in total")
        checked[name] = value
    return checked


def check_function_path(path: str) -> str:
    """A request path on a function: starts with '/', no scheme or host, no control characters, no '.' or
    '..' segments (even encoded) - so it can never reach another host or another function. Raises
    ValueError with the reason."""
    parts = urlsplit(path)
    if (
        not path.startswith("/")
        or path.startswith("//")
        or parts.scheme
        or parts.netloc
        or "\\" in path
        or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in path)
    ):
        raise ValueError(
            "path must be a path on the function starting with '/', without scheme, host or spaces"
        )
    if any(segment in (".", "..") for segment in unquote(parts.path).split("/")):
        raise ValueError("path must not contain '.' or '..' segments")
    return path
