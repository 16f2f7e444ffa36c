from django.urls import path

from functions.views import cli as views_cli
from functions.views import dashboard as views
from functions.views import invoke as views_invoke
from functions.views import listing as views_listing
from functions.views import ops as views_ops
from functions.views import schedules as views_schedules
from functions.views import usage as views_usage
from functions.views.archives import archive_download

urlpatterns = [
    path("", views.home, name="home"),
    path("cli/approve", views_cli.cli_approve, name="cli_approve"),
    path("p/<slug:project>/", views_listing.function_list, name="function_list"),
    path("p/<slug:project>/usage/", views_usage.project_usage, name="project_usage"),
    # Dashboard: one function's tabs, fragments and actions (views/dashboard.py, views/ops.py)
    path("p/<slug:project>/f/<slug:name>/", views.function_detail, name="function_detail"),
    path("p/<slug:project>/f/<slug:name>/status/", views.function_status, name="function_status"),
    path("p/<slug:project>/f/<slug:name>/metrics/", views.function_metrics, name="function_metrics"),
    path("p/<slug:project>/f/<slug:name>/logs/", views.function_logs, name="function_logs"),
    path(
        "p/<slug:project>/f/<slug:name>/logs/search/", views.function_logs_search, name="function_logs_search"
    ),
    path(
        "p/<slug:project>/f/<slug:name>/logs.txt", views.function_logs_download, name="function_logs_download"
    ),
    path("p/<slug:project>/f/<slug:name>/revisions/", views.function_revisions, name="function_revisions"),
    path(
        "p/<slug:project>/f/<slug:name>/revisions/<int:number>/rollback/",
        views.revision_rollback,
        name="revision_rollback",
    ),
    path("p/<slug:project>/f/<slug:name>/builds/", views.function_builds, name="function_builds"),
    path("p/<slug:project>/f/<slug:name>/builds/<int:build_id>/", views.build_detail, name="build_detail"),
    path("p/<slug:project>/f/<slug:name>/invoke/", views_invoke.function_invoke_view, name="function_invoke"),
    path("p/<slug:project>/f/<slug:name>/settings/", views.function_settings, name="function_settings"),
    path("p/<slug:project>/f/<slug:name>/delete/", views.function_delete, name="function_delete"),
    path("ops/", views_ops.operators_overview, name="operators_overview"),
    path("healthz", views_ops.healthz, name="healthz"),
    # A cluster's build Job fetches a revision's source here with a signed single-use token.
    path("cluster/archives/<str:token>/", archive_download, name="archive_download"),
]

# A function's schedules: an htmx fragment the function page embeds (views/schedules.py).
SCHEDULES = "p/<slug:project>/f/<slug:name>/schedules/"
urlpatterns += [
    path(SCHEDULES, views_schedules.schedule_list, name="schedule_list"),
    path(SCHEDULES + "new/", views_schedules.schedule_create, name="schedule_create"),
    path(SCHEDULES + "<slug:sched>/edit/", views_schedules.schedule_edit, name="schedule_edit"),
    path(SCHEDULES + "<slug:sched>/pause/", views_schedules.schedule_pause, name="schedule_pause"),
    path(SCHEDULES + "<slug:sched>/resume/", views_schedules.schedule_resume, name="schedule_resume"),
    path(SCHEDULES + "<slug:sched>/delete/", views_schedules.schedule_delete, name="schedule_delete"),
    path("p/<slug:project>/schedules/preview/", views_schedules.schedule_preview, name="schedule_preview"),
]
