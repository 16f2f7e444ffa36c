"""The project's function list: search, status filter, sort and page in the URL, ``PAGE_SIZE`` rows a page,
with how many functions each status filter keeps above them.

Its cost follows the page, not the project: one aggregate counts the statuses, one query fetches the
page's rows with their next scheduled run, and Prometheus is asked once per figure for the whole project.
Rendering a row costs about half a millisecond, so 1,000 rows on one page took a second to render and to
re-poll; a page of 50 takes the same at 10 or 10,000 functions. A sort by a live figure orders every
function's (id, name) pair by its figures and then fetches one page of rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.decorators import login_required
from django.db.models import OuterRef, Subquery
from django.shortcuts import render

from functions import metrics, selectors
from functions.forms import STATUS_FILTERS, FunctionFilterForm
from functions.models import Schedule
from functions.views.common import is_partial, link_revision

PAGE_SIZE = 50


@dataclass(frozen=True)
class Page:
    """One page of the list: ``number`` of ``pages``, rows ``first`` to ``last`` (from 1) of ``total``."""

    number: int
    pages: int
    total: int

    @classmethod
    def of(cls, raw: str | None, total: int) -> Page:
        """The page ``raw`` asks for, kept within the pages there are (the first for anything else)."""
        pages = max(1, -(-total // PAGE_SIZE))
        number = int(raw) if raw and raw.isdigit() else 1
        return cls(number=min(max(number, 1), pages), pages=pages, total=total)

    @property
    def offset(self) -> int:
        return (self.number - 1) * PAGE_SIZE

    @property
    def first(self) -> int:
        return self.offset + 1 if self.total else 0

    @property
    def last(self) -> int:
        return min(self.offset + PAGE_SIZE, self.total)


def _with_next_run(queryset):
    next_run = (
        Schedule.objects.filter(function=OuterRef("pk"), enabled=True, next_run_at__isnull=False)
        .order_by("next_run_at")
        .values("next_run_at")[:1]
    )
    return queryset.annotate(next_run_at=Subquery(next_run))


def _page_rows(queryset, page: Page, form: FunctionFilterForm, figures) -> list:
    """The page's functions in the order asked for: the database's, or their live figures' (highest or
    lowest first, functions without a figure last, equal ones in name order)."""
    metric_sort = form.metric_sort()
    if not metric_sort or figures is None or not figures.available:
        return list(_with_next_run(queryset)[page.offset : page.offset + PAGE_SIZE])
    by, highest_first = metric_sort
    sign = -1 if highest_first else 1

    def key(pair):
        value = getattr(figures.for_function(pair[1]), by)
        return value is None, sign * (value or 0)

    ids = [pk for pk, _ in sorted(queryset.values_list("pk", "name"), key=key)]  # name order in, stable sort
    ids = ids[page.offset : page.offset + PAGE_SIZE]
    found = {f.pk: f for f in _with_next_run(queryset.filter(pk__in=ids))}
    return [found[pk] for pk in ids if pk in found]


@login_required
def function_list(request, project: str):
    """A page of a project's functions with their live figures; ``_function_rows.html`` for htmx (its polls,
    the pager)."""
    project_obj = selectors.project_get_for_user(user=request.user, slug=project, operators_read=True)
    form = FunctionFilterForm(request.GET)
    functions = selectors.functions_for_project(project=project_obj)
    counts = form.status_counts(functions)
    page = Page.of(request.GET.get("page"), counts[form.status_key()])
    figures = metrics.project_list_metrics(project=project_obj) if page.total else None
    rows = []
    for function in _page_rows(form.filter(functions), page, form, figures):
        link_revision(function)
        rows.append((function, figures.for_function(function.name) if figures else None))
    context = {
        "project": project_obj,
        "form": form,
        "rows": rows,
        "page": page,
        "status_counts": [(key, label, counts[key]) for key, label in STATUS_FILTERS],
        "status": form.status_key(),
        "sort": form.sort_key(),
        "metrics": figures,
        "filtered": bool(form.is_valid() and (form.cleaned_data["q"] or form.cleaned_data["status"])),
        "query": request.GET.urlencode(),
    }
    if is_partial(request):
        return render(request, "functions/_function_rows.html", context)
    return render(request, "functions/function_list.html", context)
