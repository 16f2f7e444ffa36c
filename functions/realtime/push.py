"""Pushing a function's new state to the pages that show it (``FunctionStatusConsumer``'s group).

Call ``function_changed(function_id=...)`` after a status write has committed; it renders the list row as an
htmx out-of-band fragment and sends it to ``project_<id>``. A push that fails is logged and forgotten: the
pages poll as well, so a lost push only delays an update.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.template.loader import render_to_string

from functions.metrics import FunctionFigures
from functions.models import Function
from functions.realtime.consumers import project_group

logger = logging.getLogger(__name__)


def render_row_oob(function: Function) -> str:
    html = render_to_string(
        "functions/_function_row.html",
        {"function": function, "project": function.project, "figures": FunctionFigures()},
    )
    return html.replace(
        f'<tr id="function-{function.pk}"', f'<tr id="function-{function.pk}" hx-swap-oob="true"', 1
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
