"""Dashboard fragment for a function's schedules: list with next run and history, create/edit form with a
live preview of the next five run times in the chosen zone, pause/resume/delete.

It is the function page's Schedules tab: its URL (``schedule_list``) serves the whole function page, header
and tabs, or just ``_tab_schedules.html`` when the tab bar swaps ``#tab-content``, as every tab does.
``_schedules.html`` owns ``#function-<id>-schedules``; every action answers with it again when asked by
htmx. A history restore (htmx reloading a page it kept no snapshot of) gets the whole page, tabs included
(``is_partial``).
"""

from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Prefetch
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from functions import selectors
from functions.cron import known_zones
from functions.errors import ServiceError
from functions.models import ConcurrencyPolicy, Role, ScheduleRun
from functions.services import schedules as services_schedules
from functions.validators import validate_dns_label
from functions.views.common import function_for_request, is_partial, render_tab

HISTORY = 10
METHODS = services_schedules.METHODS
DIALECT = (
    "Five fields — minute hour day-of-month month day-of-week — with * , - / and names (JAN, MON), or "
    "@hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually (Kubernetes CronJob syntax)."
)


NAME_HELP = (
    "1-63 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit."
)


class ScheduleForm(forms.Form):
    # The same rule as the service's (validate_dns_label): no underscores, no capitals.
    name = forms.CharField(max_length=63, validators=[validate_dns_label], help_text=NAME_HELP)
    cron = forms.CharField(max_length=120, label="Cron expression", help_text=DIALECT)
    timezone = forms.ChoiceField(label="Time zone", initial="UTC")
    method = forms.ChoiceField(choices=[(m, m) for m in METHODS], initial="POST")
    path = forms.CharField(max_length=200, initial="/")
    headers = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="Name: value"
    )
    body = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}), strip=False)
    concurrency_policy = forms.ChoiceField(choices=ConcurrencyPolicy.choices, initial=ConcurrencyPolicy.ALLOW)
    starting_deadline_seconds = forms.IntegerField(
        required=False, min_value=1, label="Starting deadline (s)", help_text="Empty: always fire the latest"
    )
    enabled = forms.BooleanField(required=False, initial=True, label="Enabled")

    def __init__(self, *args, editing: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["timezone"].choices = [(z, z) for z in sorted(known_zones())]
        if editing:  # the name identifies the schedule (and its CronJob): fixed once created
            self.fields["name"].disabled = True

    @classmethod
    def for_schedule(cls, schedule, data=None) -> ScheduleForm:
        initial = {f: getattr(schedule, f) for f in services_schedules.FIELDS if f != "headers"}
        initial["name"] = schedule.name
        initial["headers"] = "\n".join(f"{k}: {v}" for k, v in schedule.headers.items())
        return cls(data=data, initial=initial, editing=True)

    def clean_headers(self) -> dict[str, str]:
        headers = {}
        for number, raw in enumerate(self.cleaned_data["headers"].splitlines(), start=1):
            if raw.strip():
                key, sep, value = raw.partition(":")
                if not sep or not key.strip():
                    raise ValidationError(f"line {number}: expected 'Name: value'")
                headers[key.strip()] = value.strip()
        return headers


def _render(request, function, *, form=None, editing=None, status=200):
    history = Prefetch(
        "runs", queryset=ScheduleRun.objects.order_by("-scheduled_for")[:HISTORY], to_attr="history"
    )
    schedules = selectors.schedules_for_function(function=function).prefetch_related(history)
    context = {
        "project": function.project,
        "function": function,
        "schedules": schedules,
        "form": form or ScheduleForm(),
        "editing": editing,
        "dialect": DIALECT,
    }
    if is_partial(request) and request.htmx.target != "tab-content":
        return render(request, "functions/_schedules.html", context, status=status)
    # The whole function page (header, tabs) around it: the tab's own URL reloads as itself.
    return render_tab(request, function, "schedules", context, status=status)


@login_required
@require_GET
def schedule_list(request, project: str, name: str):
    return _render(request, function_for_request(request, project, name))


def _save(request, function, form, schedule=None):
    """Validate the form, then create or update through the service; errors go back onto the form."""
    if not form.is_valid():
        return _render(request, function, form=form, editing=schedule, status=400)
    values = {f: form.cleaned_data[f] for f in services_schedules.FIELDS}
    try:
        if schedule is None:
            services_schedules.schedule_create(
                function=function, user=request.user, name=form.cleaned_data["name"], **values
            )
        else:
            services_schedules.schedule_update(schedule=schedule, user=request.user, **values)
    except ServiceError as exc:
        form.add_error(None, exc.message)
        return _render(request, function, form=form, editing=schedule, status=exc.code)
    return _done(request, function)


def _done(request, function):
    if is_partial(request):
        return _render(request, function)
    return redirect("schedule_list", project=function.project.slug, name=function.name)


@login_required
@require_POST
def schedule_create(request, project: str, name: str):
    function = function_for_request(request, project, name, Role.DEVELOPER)
    return _save(request, function, ScheduleForm(request.POST))


@login_required
def schedule_edit(request, project: str, name: str, sched: str):
    """GET: the list with this schedule's values in the form; POST: save them."""
    function = function_for_request(request, project, name, Role.DEVELOPER)
    schedule = selectors.schedule_get(function=function, name=sched)
    if request.method == "POST":
        return _save(request, function, ScheduleForm.for_schedule(schedule, request.POST), schedule)
    return _render(request, function, form=ScheduleForm.for_schedule(schedule), editing=schedule)


def _action(request, project, name, sched, service):
    function = function_for_request(request, project, name, Role.DEVELOPER)
    service(schedule=selectors.schedule_get(function=function, name=sched), user=request.user)
    return _done(request, function)


@login_required
@require_POST
def schedule_pause(request, project: str, name: str, sched: str):
    return _action(request, project, name, sched, services_schedules.schedule_pause)


@login_required
@require_POST
def schedule_resume(request, project: str, name: str, sched: str):
    return _action(request, project, name, sched, services_schedules.schedule_resume)


@login_required
@require_POST
def schedule_delete(request, project: str, name: str, sched: str):
    return _action(request, project, name, sched, services_schedules.schedule_delete)


@login_required
@require_GET
def schedule_preview(request, project: str):
    """The next five run times of ``?cron=&timezone=`` in that zone, or why they are refused."""
    selectors.project_get_for_user(user=request.user, slug=project)
    if not request.GET.get("cron", "").strip():  # nothing typed yet is not an error
        return render(request, "functions/_schedule_preview.html", {"preview": None})
    preview = services_schedules.schedule_preview(
        cron_expression=request.GET.get("cron", ""), zone=request.GET.get("timezone", "UTC")
    )
    return render(request, "functions/_schedule_preview.html", {"preview": preview})
