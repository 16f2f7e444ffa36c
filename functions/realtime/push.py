"""Pushing a function's new state to the pages that show it (``FunctionStatusConsumer``'s group).

Call ``function_changed(function_id=...)`` after a status write has committed; it renders the list row as an
htmx out-of-band fragment and sends it to the project's group (``project_group``: the group names live here).
A push that fails is logged and forgotten: the pages poll as well, so a lost push only delays an update.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.template.loader import render_to_string

from functions.metrics import FunctionFigures
from functions.models import Function

logger = logging.getLogger(__name__)


def project_group(project_id: int) -> str:
    """The channel group of a project's status page (``FunctionStatusConsumer`` joins it)."""
    return f"project_{project_id}"


def render_row_oob(function: Function) -> str:
    return render_to_string(
        "functions/_function_row.html",
        {"function": function, "project": function.project, "figures": FunctionFigures(), "oob": True},
    )


def function_changed(*, function_id: int) -> None:
    """Push the function's row to its project's pages. Never raises: callers are status writes."""
    try:
        function = (
            Function.objects.select_related("project", "current_revision").filter(pk=function_id).first()
        )
        if function is None:
            return
        async_to_sync(get_channel_layer().group_send)(
            project_group(function.project_id), {"type": "function.status", "html": render_row_oob(function)}
        )
    except Exception:  # noqa: BLE001 - see the module docstring
        logger.warning("could not push the status of function %s", function_id, exc_info=True)
