"""Dashboard pages: the home redirect and a function's tabs (overview, metrics, logs, revisions, builds,
settings). Each view finds the function through ``views.common.function_for_request``, parses input with
a form, calls a selector or a service and renders.

A view that serves htmx renders its fragment (``_*.html``) when ``views.common.is_partial`` says htmx asked
for it, and the whole page otherwise, so every page works without JavaScript.
"""

from __future__ import annotations

import datetime as dt

from asgiref.sync import async_to_sync
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from functions import metrics, selectors
from functions.backends import BackendError, function_ref
from functions.errors import ServiceError
from functions.forms import LogSearchForm, MetricsRangeForm, SettingsForm
from functions.models import Build, Role
from functions.realtime import logstream
from functions.secret_env import log_source
from functions.services import functions as services
from functions.views.common import function_for_request, is_partial, render_tab

SNAPSHOT_LINES = 5000


@login_required
def home(request):
    project = selectors.projects_for_user(user=request.user).first()
    if project is None:
        return render(request, "functions/no_projects.html")
    return redirect("function_list", project=project.slug)


OVERVIEW_LOG_LINES = 8
DEPLOY_ACTIONS = ("function.deploy", "function.rollback", "function.settings")


def _last_lines(function) -> tuple[list, str]:
    try:
        return async_to_sync(logstream.snapshot)(
            log_source(function), function_ref(function), tail=OVERVIEW_LOG_LINES
        ), ""
    except BackendError as exc:
        return [], exc.message


@login_required
def function_detail(request, project: str, name: str):
    """The overview: the last hour at a glance (requests, errors, p95, cold starts), the last deploy and
    who made it, the newest log lines, then the configuration."""
    function = function_for_request(request, project, name)
    schedules = function.schedules.all()
    last_deploy = (
        function.audit_events.filter(action__in=DEPLOY_ACTIONS)
        .select_related("actor")
        .order_by("-created_at")
        .first()
    )
    lines, lines_error = _last_lines(function)
    context = {
        "schedules": schedules,
        "summary": metrics.function_summary(function=function),
        "last_deploy": last_deploy,
        "log_lines": lines,
        "log_error": lines_error,
    }
    return render_tab(request, function, "overview", context)


@login_required
def function_status(request, project: str, name: str):
    """The status fragment (``function-<id>-status``) that detail pages poll."""
    function = function_for_request(request, project, name)
    figures = metrics.function_figures(function=function)
    return render(request, "functions/_function_status.html", {"function": function, "figures": figures})


@login_required
def function_metrics(request, project: str, name: str):
    function = function_for_request(request, project, name)
    window = request.GET.get("window", "1h")
    range_form = MetricsRangeForm(request.GET if "start" in request.GET else None)
    start, end = range_form.range()
    result = metrics.function_metrics(function=function, window=window, start=start, end=end)
    context = {
        "result": result,
        "windows": list(metrics.WINDOWS),
        "range_form": range_form,
        "chart_start": result.start.timestamp(),
        "chart_end": result.end.timestamp(),
        "panel_query": request.GET.urlencode() or f"window={result.window}",
    }
    if is_partial(request, "metrics-panel"):
        return render(request, "functions/_metrics_panel.html", {"function": function, **context})
    return render_tab(request, function, "metrics", context)


@login_required
def function_logs(request, project: str, name: str):
    function = function_for_request(request, project, name)
    return render_tab(request, function, "logs", {"search": LogSearchForm()})


@login_required
def function_logs_search(request, project: str, name: str):
    """Lines of a time range, streams and text, newest 200 first-to-last; ``before`` loads older ones.
    JSON (``?format=json``) for the live view's "load older", the ``_log_search.html`` fragment otherwise."""
    function = function_for_request(request, project, name)
    form = LogSearchForm(request.GET)
    if not form.is_valid():
        if request.GET.get("format") == "json":
            return JsonResponse({"error": form.errors.get_json_data()}, status=400)
        return render_tab(request, function, "logs", {"search": form}, status=400)
    try:
        result = async_to_sync(logstream.search)(log_source(function), function_ref(function), **form.query())
    except BackendError as exc:
        if request.GET.get("format") == "json":
            return JsonResponse({"error": exc.message}, status=502)
        context = {"search": form, "search_error": exc.message}
        return render_tab(request, function, "logs", context, status=502)
    if request.GET.get("format") == "json":
        lines = [
            {"ts": logstream.stamp(x), "instance": x.instance, "stream": x.stream, "text": x.text}
            for x in result.lines
        ]
        return JsonResponse({"lines": lines, "more": result.more})
    older = request.GET.copy()
    if result.lines:
        older["before"] = logstream.stamp(result.lines[0])
    context = {"search": form, "result": result, "older_query": older.urlencode(), "searched": True}
    if is_partial(request, "log-search-results"):
        return render(request, "functions/_log_search.html", {"function": function, **context})
    return render_tab(request, function, "logs", context)


@login_required
def function_logs_download(request, project: str, name: str):
    """The newest log lines as a text file: timestamp, instance, stream, text."""
    function = function_for_request(request, project, name)
    try:
        lines = async_to_sync(logstream.snapshot)(
            log_source(function), function_ref(function), tail=SNAPSHOT_LINES
        )
    except BackendError as exc:
        return HttpResponse(f"logs are not available: {exc.message}\n", status=502, content_type="text/plain")
    body = "".join(
        f"{line.timestamp.isoformat()} {line.instance} {line.stream} {line.text}\n" for line in lines
    )
    response = HttpResponse(body, content_type="text/plain; charset=utf-8")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="{function.name}-{stamp}.log"'
    return response


def _revisions_tab(request, function, status: int = 200):
    revisions = function.revisions.select_related("created_by").order_by("-number")
    return render_tab(request, function, "revisions", {"revisions": revisions}, status=status)


@login_required
def function_revisions(request, project: str, name: str):
    return _revisions_tab(request, function_for_request(request, project, name))


@login_required
@require_POST
def revision_rollback(request, project: str, name: str, number: int):
    function = function_for_request(request, project, name, role=Role.DEVELOPER)
    revision = selectors.revision_get(function=function, number=number)
    try:
        services.revision_rollback(function=function, revision=revision, user=request.user)
    except ServiceError as exc:
        messages.error(request, exc.message)
        return _revisions_tab(request, function, status=exc.code)
    messages.success(request, f"Rolling back to revision {revision.number}.")
    if is_partial(request):
        return _revisions_tab(request, function_for_request(request, project, name))
    return redirect("function_revisions", project=project, name=name)


def _builds(function):
    """Builds of a function already fetched through a selector (build ids are global: scope them)."""
    return Build.objects.filter(revision__function=function).select_related("revision__function")


def _numbered(function, builds: list) -> list:
    """Number builds per function (1 = its first build, in creation order), as owners count them."""
    for build in builds:
        earlier = _builds(function).filter(created_at__lt=build.created_at).count()
        ties = _builds(function).filter(created_at=build.created_at, pk__lte=build.pk).count()
        build.number = earlier + ties
        if len(builds) > 1:  # newest first: the others count down from the newest
            for i, other in enumerate(builds[1:], start=1):
                other.number = build.number - i
            break
    return builds


@login_required
def function_builds(request, project: str, name: str):
    function = function_for_request(request, project, name)
    builds = _numbered(function, list(_builds(function).order_by("-created_at", "-pk")[:50]))
    return render_tab(request, function, "builds", {"builds": builds})


@login_required
def build_detail(request, project: str, name: str, build_id: int):
    """One build with its log; the fragment re-polls itself while the build runs."""
    function = function_for_request(request, project, name)
    build = _builds(function).filter(pk=build_id).first()
    if build is None:
        raise Http404("No such build.")
    _numbered(function, [build])
    if is_partial(request, f"build-{build.pk}"):
        return render(request, "functions/_build.html", {"function": function, "build": build})
    return render_tab(request, function, "builds", {"builds": [build], "single": True})


@login_required
def function_settings(request, project: str, name: str):
    function = function_for_request(request, project, name)
    if request.method != "POST":
        return render_tab(request, function, "settings", {"form": SettingsForm.for_function(function)})
    function = function_for_request(request, project, name, role=Role.DEVELOPER)
    form = SettingsForm.for_function(function, data=request.POST)
    if form.is_valid():
        try:
            services.function_update_settings(function=function, user=request.user, **form.changes())
        except ServiceError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, "Settings saved; the function is being redeployed with them.")
            return redirect("function_settings", project=project, name=name)
    return render_tab(request, function, "settings", {"form": form}, status=400)


@login_required
def function_delete(request, project: str, name: str):
    function = function_for_request(request, project, name, role=Role.DEVELOPER)
    if request.method != "POST":
        return render(
            request, "functions/function_delete.html", {"project": function.project, "function": function}
        )
    services.function_delete(function=function, user=request.user)
    messages.success(request, f"Deleting {function.name}.")
    target = reverse("function_list", kwargs={"project": project})
    if is_partial(request):
        return HttpResponseClientRedirect(target)
    return redirect(target)
