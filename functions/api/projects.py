"""Projects I belong to, their members (owners manage them), the kubeconfig and the audit log."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.http import Http404
from ninja import Router, Status

from .. import selectors, services
from ..models import AuditEvent, Backend, Membership, Project, Role
from .schemas import AuditEventOut, ErrorOut, KubeconfigOut, MemberIn, MemberOut, ProjectOut

router = Router(tags=["projects"])
ERRORS = {403: ErrorOut, 404: ErrorOut, 409: ErrorOut}


def project_out(project: Project, role: str) -> dict:
    return {
        "slug": project.slug,
        "name": project.name,
        "backend": project.backend,
        "namespace": project.effective_namespace,
        "role": role,
        "max_functions": project.max_functions,
        "max_agent_functions": project.max_agent_functions,
        "max_cpu_millicores": project.max_cpu_millicores,
        "max_memory_mb": project.max_memory_mb,
        "created_at": project.created_at,
    }


def member_out(membership: Membership) -> dict:
    user = membership.user
    return {
        "username": user.username,
        "email": user.email,
        "role": membership.role,
        "created_at": membership.created_at,
    }


@router.get("/projects", response=list[ProjectOut])
def project_list(request):
    """The projects I am a member of, with my role in each."""
    memberships = Membership.objects.filter(
        project__in=selectors.projects_for_user(user=request.auth), user=request.auth
    ).select_related("project")
    return [project_out(m.project, m.role) for m in sorted(memberships, key=lambda m: m.project.slug)]


@router.get("/projects/{slug}", response={200: ProjectOut, **ERRORS})
def project_detail(request, slug: str):
    project = selectors.project_get_for_user(user=request.auth, slug=slug)
    return project_out(project, project.membership.role)


@router.get("/projects/{slug}/members", response={200: list[MemberOut], **ERRORS})
def member_list(request, slug: str):
    project = selectors.project_get_for_user(user=request.auth, slug=slug, role=Role.OWNER)
    memberships = project.memberships.select_related("user").order_by("user__username")
    return [member_out(m) for m in memberships]


def _user_get(username: str):
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise Http404(f"No user named {username!r}.")
    return user


def _membership_get(project: Project, username: str) -> Membership:
    membership = project.memberships.select_related("user").filter(user__username=username).first()
    if membership is None:
        raise Http404(f"{username} is not a member of {project.slug}.")
    return membership


@router.get("/projects/{slug}/members/{username}", response={200: MemberOut, **ERRORS})
def member_detail(request, slug: str, username: str):
    project = selectors.project_get_for_user(user=request.auth, slug=slug, role=Role.OWNER)
    return member_out(_membership_get(project, username))


@router.put("/projects/{slug}/members/{username}", response={200: MemberOut, **ERRORS})
def member_set(request, slug: str, username: str, payload: MemberIn):
    """Add a user to the project, or change their role."""
    project = selectors.project_get_for_user(user=request.auth, slug=slug, role=Role.OWNER)
    user = _user_get(username)
    membership = services.membership_set(project=project, user=user, role=payload.role, actor=request.auth)
    return member_out(membership)


@router.delete("/projects/{slug}/members/{username}", response={204: None, **ERRORS})
def member_remove(request, slug: str, username: str):
    project = selectors.project_get_for_user(user=request.auth, slug=slug, role=Role.OWNER)
    membership = _membership_get(project, username)
    services.membership_remove(project=project, user=membership.user, actor=request.auth)
    return Status(204, None)


@router.get("/projects/{slug}/kubeconfig", response={200: KubeconfigOut, **ERRORS})
def project_kubeconfig(request, slug: str):
    """The kubeconfig of a Knative project's cluster (owners and developers)."""
    project = selectors.project_get_for_user(user=request.auth, slug=slug, role=Role.DEVELOPER)
    if project.backend != Backend.KNATIVE:
        raise Http404(f"Project {slug} runs on the local runtime; it has no kubeconfig.")
    if not project.has_kubeconfig:
        raise Http404(f"Project {slug} has no kubeconfig stored yet; ask a platform operator.")
    from ..services_projects import project_kubeconfig

    return {
        "project": project.slug,
        "namespace": project.effective_namespace,
        "kubeconfig": project_kubeconfig(project=project),
    }


@router.get("/audit", response={200: list[AuditEventOut], **ERRORS}, tags=["audit"])
def audit_list(request, project: str | None = None, limit: int = 100):
    """What happened in the projects I own, newest first (``project`` narrows it to one)."""
    if project is not None:
        projects = [selectors.project_get_for_user(user=request.auth, slug=project, role=Role.OWNER)]
    else:
        projects = list(
            selectors.projects_for_user(user=request.auth).filter(
                memberships__user=request.auth, memberships__role=Role.OWNER
            )
        )
    events = (
        AuditEvent.objects.filter(project__in=projects)
        .select_related("project", "actor")
        .order_by("-created_at", "-pk")[: max(1, min(limit, 1000))]
    )
    return [
        {
            "project": event.project.slug,
            "function": event.function_name,
            "actor": event.actor.username if event.actor else None,
            "action": event.action,
            "detail": event.detail,
            "created_at": event.created_at,
        }
        for event in events
    ]
