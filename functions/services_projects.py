"""Writes about a project's cluster: its kubeconfig, stored encrypted (``functions.crypto``)."""

from __future__ import annotations

from urllib.parse import urlparse

import yaml
from django.db import transaction

from .crypto import decrypt_text, encrypt_text
from .models import Backend, Project
from .services import ServiceError, audit

MAX_KUBECONFIG_BYTES = 256 * 1024


def _named(entries, what: str) -> dict[str, dict]:
    if not isinstance(entries, list) or not entries:
        raise ServiceError(f"the kubeconfig has no {what}")
    named = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ServiceError(f"every entry of {what} needs a name")
        named[entry["name"]] = entry
    return named


def kubeconfig_check(text: str) -> dict:
    """Parse and check a kubeconfig; ``ServiceError`` says what is wrong. Returns the current context's
    cluster server and namespace (for the audit record)."""
    if len(text.encode()) > MAX_KUBECONFIG_BYTES:
        raise ServiceError(f"the kubeconfig is larger than {MAX_KUBECONFIG_BYTES // 1024} KiB")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ServiceError(f"the kubeconfig is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or data.get("kind", "Config") != "Config":
        raise ServiceError("this is not a kubeconfig (expected a mapping with kind: Config)")
    clusters = _named(data.get("clusters"), "clusters")
    users = _named(data.get("users"), "users")
    contexts = _named(data.get("contexts"), "contexts")
    current = data.get("current-context") or (next(iter(contexts)) if len(contexts) == 1 else None)
    if current not in contexts:
        raise ServiceError("the kubeconfig's current-context does not name one of its contexts")
    context = contexts[current].get("context") or {}
    if context.get("cluster") not in clusters:
        raise ServiceError(f"context {current!r} names a cluster the kubeconfig does not define")
    if context.get("user") not in users:
        raise ServiceError(f"context {current!r} names a user the kubeconfig does not define")
    server = (clusters[context["cluster"]].get("cluster") or {}).get("server", "")
    parsed = urlparse(server)
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise ServiceError(f"cluster {context['cluster']!r} needs a server URL (https://...)")
    return {"server": server, "namespace": context.get("namespace", "")}


@transaction.atomic
def project_set_kubeconfig(*, project: Project, kubeconfig_text: str, actor) -> Project:
    """Store a Knative project's kubeconfig encrypted at rest. The caller checks the actor's role."""
    if project.backend != Backend.KNATIVE:
        raise ServiceError(
            f"project {project.slug} runs on the {project.backend} backend; it takes no kubeconfig"
        )
    summary = kubeconfig_check(kubeconfig_text)
    project.kubeconfig_encrypted = encrypt_text(kubeconfig_text)
    fields = ["kubeconfig_encrypted"]
    # A kubeconfig scoped to one namespace decides where functions go, unless they already live elsewhere
    # ("default" is what a whole-cluster kubeconfig says, so it decides nothing).
    scoped = summary["namespace"] not in ("", "default")
    if scoped and not project.namespace and not project.functions.alive().exists():
        project.namespace = summary["namespace"]
        fields.append("namespace")
    project.save(update_fields=fields)
    # The audit log records where the credentials point, never the credentials.
    audit(project=project, action="project.kubeconfig", actor=actor, server=summary["server"])
    return project


def project_kubeconfig(*, project: Project) -> str:
    """The decrypted kubeconfig, or "" when none is stored. The caller checks the reader's role."""
    return decrypt_text(project.kubeconfig_encrypted) if project.kubeconfig_encrypted else ""
