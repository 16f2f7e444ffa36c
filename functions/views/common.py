"""What every dashboard view shares: the function a URL names (``function_for_request``), whether htmx asked
for a fragment (``is_partial``), and the function page's tabs (``render_tab``)."""

from __future__ import annotations

from django.shortcuts import render
from django.urls import reverse

from functions import metrics, selectors
from functions.models import Role

TABS = [
    ("overview", "Overview"),
    ("metrics", "Metrics"),
    ("logs", "Logs"),
    ("revisions", "Revisions"),
    ("builds", "Builds"),
    ("invoke", "Invoke"),
    ("schedules", "Schedules"),
    ("settings", "Settings"),
]
TAB_VIEWS = {"overview": "function_detail", "schedules": "schedule_list"}  # schedules: views/schedules.py


def is_partial(request, *targets: str) -> bool:
    """Whether htmx asked for a fragment (rather than a whole page): an htmx request that is neither a boosted
    navigation nor a history restore (htmx reloading a page it has no snapshot of: it swaps the whole body)
    and, when ``targets`` are given, swaps one of them. Everything else gets the whole page."""
    if not request.htmx or request.htmx.boosted or request.htmx.history_restore_request:
        return False
    return not targets or request.htmx.target in targets


def link_revision(function) -> None:
    """``Revision.name`` reads its function: hand it the one we hold instead of a query per row."""
    if function.current_revision is not None:
        function.current_revision.function = function


def function_for_request(request, project: str, name: str, role: str = Role.VIEWER):
    """The function a dashboard URL names, as this user may see it (404 otherwise), marked with what the
    page may offer: ``can_write`` (developer or owner), ``read_only_operator`` (staff, not a member)."""
    function = selectors.function_get_for_user(
        user=request.user, project_slug=project, name=name, role=role, operators_read=True
    )
    link_revision(function)
    membership = function.membership  # the selector found it while checking access
    function.can_write = membership is not None and membership.allows(Role.DEVELOPER)
    function.read_only_operator = membership is None  # only staff get here without a membership
    return function


def render_tab(request, function, tab: str, extra: dict | None = None, status: int = 200):
    template = f"functions/_tab_{tab}.html"
    kwargs = {"project": function.project.slug, "name": function.name}
    tabs = [
        (key, label, reverse(TAB_VIEWS.get(key, f"function_{key}"), kwargs=kwargs)) for key, label in TABS
    ]
    context = {"project": function.project, "function": function, "tab": tab, "tabs": tabs, **(extra or {})}
    context["tab_label"] = dict(TABS)[tab]
    context["read_only"] = getattr(function, "read_only_operator", False)
    if is_partial(request, "tab-content", f"{tab}-panel"):
        return render(request, template, context, status=status)
    context.setdefault("figures", metrics.function_figures(function=function))
    return render(
        request, "functions/function_detail.html", {**context, "tab_template": template}, status=status
    )
