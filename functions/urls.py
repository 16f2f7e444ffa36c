from django.urls import path

from . import views, views_cli

urlpatterns = [
    path("", views.home, name="home"),
    path("cli/approve", views_cli.cli_approve, name="cli_approve"),
    path("p/<slug:project>/", views.function_list, name="function_list"),
]
