"""Projects I belong to, their members (owners invite, the invited accept), the kubeconfig and the audit
log."""

from __future__ import annotations

from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.http import Http404
from ninja import Router, Status

from functions import selectors
from functions.api.schemas import (
    AuditEventOut,
    ErrorOut,
    InvitationOut,
    KubeconfigOut,
    MemberIn,
    MemberOut,
    ProjectOut,
    QuotasIn,
    UsageOut,
)
from functions.errors import ServiceError
from functions.models import Backend, Invitation, Membership, Project, Role
from functions.services import functions as services
from functions.services import projects as services_projects
from functions.services import usage as services_usage

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
    return [project_out(m.project, m.role) for m in selectors.memberships_of_user(user=request.auth)]


@router.get("/projects/{slug}", response={200: ProjectOut, **ERRORS})
def project_detail(request, slug: str):
    project = selectors.project_get_for_user(user=request.auth, slug=slug)
    return project_out(project, project.membership.role)


@router.get("/projects/{slug}/members", response={200: list[MemberOut], **ERRORS})
def member_list(request, slug: str):
    project = selectors.project_get_for_user(user=request.auth, slug=slug, role=Role.OWNER)
    return [member_out(m) for m in selectors.members_of_project(project=project)]


def invitation_out(invitation: Invitation) -> dict:
    return {
        "project": invitation.project.slug,
        "username": invitation.username,
        "role": invitation.role,
        "invited_by": invitation.invited_by.username if invitation.invited_by else "",
        "created_at": invitation.created_at,
    }


def _valid_username(username: str) -> str:
    try:
        UnicodeUsernameValidator()(username)
    except ValidationError as exc:
        raise ServiceError(f"{username!r} is not a valid user name") from exc
    if len(username) > 150:
        raise ServiceError("a user name has at most 150 characters")
    return username


@router.get("/projects/{slug}/members/{username}", response={200: MemberOut, **ERRORS})
def member_detail(request, slug: str, username: str):
    project = selectors.project_get_for_user(user=request.auth, slug=slug, role=Role.OWNER)
    return member_out(selectors.member_get(project=project, username=username))


@router.put("/projects/{slug}/members/{username}", response={200: MemberOut, 202: InvitationOut, **ERRORS})
def member_set(request, slug: str, username: str, payload: MemberIn):
    """Change a member's role (200), or invite a user name to join with that role (202): they become a
    member when they accept (``POST /invitations/{project}/accept``). The 202 is the same whether or not an
    account has that name. Platform operators (staff) add an existing account at once (200)."""
    project = selectors.project_get_for_user(user=request.auth, slug=slug, role=Role.OWNER)
    _valid_username(username)
    membership = selectors.members_of_project(project=project).filter(user__username=username).first()
    user = membership.user if membership else None
    if user is None and request.auth.is_staff:
        user = selectors.active_user_named(username=username)
    if user is not None:
        membership = services.membership_set(
            project=project, user=user, role=payload.role, actor=request.auth
        )
        return member_out(membership)
    invitation = services_projects.member_invite(
        project=project, username=username, role=payload.role, actor=request.auth
    )
    return Status(202, invitation_out(invitation))


@router.delete("/projects/{slug}/members/{username}", response={204: None, **ERRORS})
def member_remove(request, slug: str, username: str):
    project = selectors.project_get_for_user(user=request.auth, slug=slug, role=Role.OWNER)
    membership = selectors.member_get(project=project, username=username)
    services.membership_remove(project=project, user=membership.user, actor=request.auth)
    return Status(204, None)


@router.get("/projects/{slug}/invitations", response={200: list[InvitationOut], **ERRORS})
def project_invitations(request, slug: str):
    """The project's pending invitations (owners)."""
    project = selectors.project_get_for_user(user=request.auth, slug=slug, role=Role.OWNER)
    return [invitation_out(i) for i in selectors.invitations_of_project(project=project)]


@router.delete("/projects/{slug}/invitations/{username}", response={204: None, **ERRORS})
def project_invitation_withdraw(request, slug: str, username: str):
    """Withdraw an invitation; 204 whether or not one was pending."""
    project = selectors.project_get_for_user(user=request.auth, slug=slug, role=Role.OWNER)
    services_projects.invitation_withdraw(project=project, username=username, actor=request.auth)
    return Status(204, None)


def _my_invitation(request, project: str) -> Invitation:
    invitation = selectors.invitations_for_user(user=request.auth).filter(project__slug=project).first()
    if invitation is None:
        raise Http404(f"No invitation to {project} for you.")
    return invitation


@router.get("/invitations", response=list[InvitationOut])
def my_invitations(request):
    """The projects inviting me, waiting for my answer."""
    return [invitation_out(i) for i in selectors.invitations_for_user(user=request.auth)]


@router.post("/invitations/{project}/accept", response={200: ProjectOut, 404: ErrorOut})
def invitation_accept(request, project: str):
    """Join the project with the role I was invited to."""
    invitation = _my_invitation(request, project)
    membership = services_projects.invitation_accept(invitation=invitation, user=request.auth)
    return project_out(membership.project, membership.role)


@router.post("/invitations/{project}/decline", response={204: None, 404: ErrorOut})
def invitation_decline(request, project: str):
    services_projects.invitation_decline(invitation=_my_invitation(request, project), user=request.auth)
    return Status(204, None)


def usage_out(project: Project) -> dict:
    return {"project": project.slug, **selectors.project_agent_usage(project=project)}


@router.get("/projects/{slug}/usage", response={200: UsageOut, **ERRORS}, tags=["usage"])
def project_usage(request, slug: str):
    """The project's agent quotas and what is used of them: running sessions, executions this minute, CPU
    seconds today; totals of today and this month (UTC). Every member may read it."""
    return usage_out(selectors.project_get_for_user(user=request.auth, slug=slug))


@router.patch("/projects/{slug}/usage", response={200: UsageOut, **ERRORS}, tags=["usage"])
def project_quotas_update(request, slug: str, payload: QuotasIn):
    """Change the project's agent quotas (owners; operators also in the admin). Omitted fields stay."""
    project = selectors.project_get_for_user(user=request.auth, slug=slug, role=Role.OWNER)
    services_usage.project_quotas_update(project=project, user=request.auth, **payload.dict())
    return usage_out(project)


@router.get("/projects/{slug}/kubeconfig", response={200: KubeconfigOut, **ERRORS})
def project_kubeconfig(request, slug: str):
    """The kubeconfig of a Knative project's cluster (owners and developers)."""
    project = selectors.project_get_for_user(user=request.auth, slug=slug, role=Role.DEVELOPER)
    if project.backend != Backend.KNATIVE:
        raise Http404(f"Project {slug} runs on the local runtime; it has no kubeconfig.")
    if not project.has_kubeconfig:
        raise Http404(f"Project {slug} has no kubeconfig stored yet; ask a platform operator.")
    return {
        "project": project.slug,
        "namespace": project.effective_namespace,
        "kubeconfig": selectors.project_kubeconfig(project=project),
    }


@router.get("/audit", response={200: list[AuditEventOut], **ERRORS}, tags=["audit"])
def audit_list(request, project: str | None = None, limit: int = 100):
    """What happened in the projects I own, newest first (``project`` narrows it to one)."""
    if project is not None:
        projects = [selectors.project_get_for_user(user=request.auth, slug=project, role=Role.OWNER)]
    else:
        projects = list(selectors.projects_owned_by(user=request.auth))
    events = selectors.audit_events_for_projects(projects=projects)[: max(1, min(limit, 1000))]
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
