"""Writes about a project: who may join it (invitations), its cluster's kubeconfig, stored encrypted
(``functions.crypto``), and its place on the cluster (namespace, rights, quota, policies), provisioned by
tasks (``functions.tasks.provision``)."""

from __future__ import annotations

from urllib.parse import urlparse

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from functions.crypto import encrypt_text
from functions.errors import ServiceError
from functions.models import Backend, ClusterState, Invitation, Membership, Project, Role
from functions.services import enqueue
from functions.services.audit import audit
from functions.services.functions import membership_set
from functions.validators import reserved_namespace, validate_dns_label

MAX_KUBECONFIG_BYTES = 256 * 1024
MAX_PENDING_INVITATIONS = 100


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
        adopted = summary["namespace"]
        # Where functions live names them in metrics and policies: never a system namespace, nor one
        # another project lives in.
        taken = Project.objects.exclude(pk=project.pk).filter(Q(namespace=adopted) | Q(slug=adopted))
        if reserved_namespace(adopted) or taken.exists():
            raise ServiceError(
                f"the kubeconfig's namespace {adopted!r} is reserved or another project's: use a "
                f"kubeconfig for namespace {project.slug!r} or one without a namespace"
            )
        project.namespace = adopted
        fields.append("namespace")
    project.save(update_fields=fields)
    # The audit log records where the credentials point, never the credentials.
    audit(project=project, action="project.kubeconfig", actor=actor, server=summary["server"])
    return project


# Invitations --------------------------------------------------------------------------------------


@transaction.atomic
def member_invite(*, project: Project, username: str, role: str, actor) -> Invitation:
    """Offer ``role`` to whoever has (or will have) the user name; nothing changes until they accept. The
    same for names with and without an account, so the answer tells the inviter nothing. The caller checks
    that the actor owns the project."""
    pending = project.invitations.exclude(username=username)
    if pending.count() >= MAX_PENDING_INVITATIONS:
        raise ServiceError(
            f"{project.slug} has {MAX_PENDING_INVITATIONS} pending invitations; withdraw some first", code=409
        )
    invitation, _ = Invitation.objects.update_or_create(
        project=project, username=username, defaults={"role": role, "invited_by": actor}
    )
    audit(project=project, action="member.invite", actor=actor, user=username, role=role)
    return invitation


@transaction.atomic
def invitation_accept(*, invitation: Invitation, user) -> Membership:
    """The invited user joins with the offered role (a member already keeps the role they have)."""
    if invitation.username != user.get_username():
        raise ServiceError("this invitation is for someone else", code=404)
    membership = Membership.objects.filter(project=invitation.project, user=user).first()
    if membership is None:
        membership = membership_set(project=invitation.project, user=user, role=invitation.role, actor=user)
    invitation.delete()
    audit(project=invitation.project, action="member.accept", actor=user, role=membership.role)
    return membership


@transaction.atomic
def invitation_decline(*, invitation: Invitation, user) -> None:
    if invitation.username != user.get_username():
        raise ServiceError("this invitation is for someone else", code=404)
    invitation.delete()
    audit(project=invitation.project, action="member.decline", actor=user)


@transaction.atomic
def invitation_withdraw(*, project: Project, username: str, actor) -> bool:
    deleted, _ = Invitation.objects.filter(project=project, username=username).delete()
    if deleted:
        audit(project=project, action="member.uninvite", actor=actor, user=username)
    return bool(deleted)


# A project's place on the cluster ------------------------------------------------------------------
# Creating a knative project, changing its quotas or registering a vCluster's kubeconfig asks for it
# (project_provision); a task applies it (project_provision_run); beat repairs drift and finishes
# deletions (projects_reconcile). Deleting a knative project tears its namespace down before the row goes.


@transaction.atomic
def project_create(*, slug: str, name: str, owner, backend: str = "local") -> Project:
    try:
        validate_dns_label(slug)
    except ValidationError as exc:
        raise ServiceError(exc.messages[0]) from exc
    if backend == Backend.KNATIVE and reserved_namespace(slug):
        raise ServiceError(f"{slug!r} is reserved for the cluster and the platform: choose another name")
    # A project's slug is its namespace on the cluster: it may not be another project's namespace either.
    if Project.objects.filter(Q(slug=slug) | Q(namespace=slug)).exists():
        raise ServiceError(f"project {slug!r} already exists", code=409)
    project = Project.objects.create(slug=slug, name=name or slug, backend=backend)
    Membership.objects.create(project=project, user=owner, role=Role.OWNER)
    audit(project=project, action="project.create", actor=owner)
    project_provision(project=project)  # knative: its namespace on the cluster, once committed
    return project


def project_provision(*, project: Project) -> None:
    """Make or bring up to date the project's namespace, rights, quota, limits, policies and registry
    Secret, once the current transaction commits. Nothing for local projects."""
    if project.backend != Backend.KNATIVE or project.cluster_state == ClusterState.DELETING:
        return
    Project.objects.filter(pk=project.pk).exclude(cluster_state=ClusterState.DELETING).update(
        cluster_state=ClusterState.PENDING
    )
    tasks_provision = enqueue.tasks().provision

    transaction.on_commit(lambda: tasks_provision.provision_project.delay(project.pk))


def _record(project: Project, state: str, message: str) -> None:
    project.cluster_state, project.cluster_message = state, message[:2000]
    project.cluster_synced_at = timezone.now()
    Project.objects.filter(pk=project.pk).exclude(cluster_state=ClusterState.DELETING).update(
        cluster_state=state,
        cluster_message=project.cluster_message,
        cluster_synced_at=project.cluster_synced_at,
    )


def project_provision_run(*, project: Project) -> list[str]:
    """Apply the project's objects; returns what changed (nothing when all was in place)."""
    from functions.backends import knative_provision as kp

    changes = kp.provisioner_for(project).apply(kp.desired_objects(project), project.slug)
    _record(project, ClusterState.READY, "; ".join(changes) or "up to date")
    if changes:
        audit(
            project=project,
            action="project.provision",
            namespace=project.effective_namespace,
            changes=changes,
        )
    return changes


def project_provision_fail(*, project: Project, message: str) -> None:
    _record(project, ClusterState.FAILED, message)


@transaction.atomic
def project_delete(*, project: Project, actor) -> None:
    """Delete a project. A knative one first loses its place on the cluster (a task, then the row)."""
    if project.backend != Backend.KNATIVE:
        project.delete()
        return
    project.cluster_state = ClusterState.DELETING
    project.save(update_fields=["cluster_state"])
    audit(project=project, action="project.delete", actor=actor, namespace=project.effective_namespace)
    tasks_provision = enqueue.tasks().provision

    transaction.on_commit(lambda: tasks_provision.teardown_project.delay(project.pk))


def project_teardown_run(*, project: Project) -> list[str]:
    """Remove what provisioning made (the namespace, and everything in it), then the project itself."""
    from functions.backends import knative_provision as kp

    changes = []
    if project.kubeconfig_encrypted or kp.platform_kubeconfig():
        changes = kp.provisioner_for(project).teardown(project.effective_namespace, project.slug)
    project.delete()
    return changes


def project_teardown_fail(*, project: Project, message: str) -> None:
    """The project stays "deleting"; beat tries again."""
    Project.objects.filter(pk=project.pk).update(cluster_message=f"delete failed: {message}"[:2000])


def projects_reconcile() -> dict[str, int]:
    """Beat: re-apply every knative project (drift repair), finish deletions, and delete the namespaces
    provisioning made for projects that no longer exist."""
    from functions.backends import knative_provision as kp

    tasks_provision = enqueue.tasks().provision

    counts = {"provision": 0, "teardown": 0, "orphans": 0}
    for project in Project.objects.filter(backend=Backend.KNATIVE):
        if project.cluster_state == ClusterState.DELETING:
            tasks_provision.teardown_project.delay(project.pk)
            counts["teardown"] += 1
        else:
            tasks_provision.provision_project.delay(project.pk)
            counts["provision"] += 1
    platform = kp.platform_provisioner()
    if platform is not None:
        counts["orphans"] = len(_orphans_collect(platform))
    return counts


def _orphans_collect(platform) -> list[str]:
    on_host = {
        p.effective_namespace: p.slug
        for p in Project.objects.filter(backend=Backend.KNATIVE, kubeconfig_encrypted="")
    }
    deleted = []
    for namespace, slug in platform.project_namespaces().items():
        if on_host.get(namespace) != slug:
            deleted += platform.teardown(namespace, slug)
    return deleted
