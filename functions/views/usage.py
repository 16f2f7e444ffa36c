"""The project's usage page: its agent and storage quotas beside what is used of them, today's and this
month's agent totals, and (owners) a form to change the agent quotas. Viewers and operators read it;
outsiders get 404."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render

from functions import selectors
from functions.errors import ServiceError
from functions.forms import QuotasForm
from functions.models import Role
from functions.services import usage as services_usage


@login_required
def project_usage(request, project: str):
    project_obj = selectors.project_get_for_user(user=request.user, slug=project, operators_read=True)
    membership = getattr(project_obj, "membership", None)
    may_change = membership is not None and membership.allows(Role.OWNER)
    initial = {f: getattr(project_obj, f) for f in QuotasForm.base_fields}
    form = QuotasForm(initial=initial)
    if request.method == "POST":
        if not may_change:
            raise PermissionDenied(f"Changing quotas needs the owner role in project {project_obj.slug}.")
        form = QuotasForm(request.POST, initial=initial)
        if form.is_valid():
            try:
                services_usage.project_quotas_update(
                    project=project_obj, user=request.user, **form.cleaned_data
                )
            except ServiceError as exc:
                form.add_error(None, exc.message)
            else:
                messages.success(request, "Quotas saved.")
                return redirect("project_usage", project=project_obj.slug)
    usage = selectors.project_agent_usage(project=project_obj)
    usage["storage_used_mb"] = usage["storage_used_bytes"] / (1 << 20)
    context = {"project": project_obj, "usage": usage, "form": form, "may_change": may_change}
    context["revision_history"] = settings.HKS_REVISION_HISTORY
    return render(request, "functions/project_usage.html", context)
