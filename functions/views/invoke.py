"""The invoke pane: send a request to the function from the dashboard and see what answered.

CloudEvents functions get binary-mode ``ce-*`` headers and a sample event filled in (``?sample=cloudevent``
fills them for any function). After a call the pane shows the answer, the call as a ``curl`` command, the
revision and instance that answered and the log lines of that call (the gateway's request line says which,
see ``hks_runtime/logstore.py``), and the last calls of this session.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
import time
import uuid

from asgiref.sync import async_to_sync
from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from functions.backends import BackendError, function_ref
from functions.errors import ServiceError
from functions.forms import InvokeForm
from functions.models import FunctionKind, Role
from functions.secret_env import log_source
from functions.services.invoke import function_invoke
from functions.views.common import function_for_request, is_partial, render_tab

HISTORY = 10
LINES_WAIT_SECONDS = 1.5  # HAProxy's request line reaches the log a moment after the answer


def sample_event(function) -> tuple[str, str]:
    """Binary-mode CloudEvents headers and a JSON body, as ``kn func invoke`` sends them."""
    headers = "\n".join(
        [
            "Content-Type: application/json",
            "ce-specversion: 1.0",
            "ce-type: dev.hks.sample",
            f"ce-source: /dashboard/{function.project.slug}/{function.name}",
            f"ce-id: {uuid.uuid4()}",
        ]
    )
    return headers, json.dumps({"message": "Hello from the dashboard"}, indent=2)


def _initial(request, function) -> dict:
    if function.kind == FunctionKind.CLOUDEVENTS or request.GET.get("sample") == "cloudevent":
        headers, body = sample_event(function)
        return {"method": "POST", "path": "/", "headers": headers, "body": body}
    return {"method": "POST", "path": "/", "headers": "Content-Type: application/json", "body": "{}"}


def as_curl(function, data: dict) -> str:
    """The same request as a shell command against the function's public URL."""
    url = (function.url or "").rstrip("/") + data["path"]
    parts = ["curl", "-i", "-X", data["method"]]
    for name, value in data["headers"].items():
        parts += ["-H", f"{name}: {value}"]
    if data["body"]:
        parts += ["--data-raw", data["body"]]
    parts.append(url)
    return " ".join(shlex.quote(p) for p in parts)


async def _lines_since(backend, ref, since) -> list:
    return [line async for line in backend.logs(ref, since=since, follow=False)]


def call_lines(function, since: dt.datetime, path: str) -> tuple[dict, list]:
    """(the call's request line parsed, the lines its instance printed during the call)."""
    bare = path.split("?", 1)[0] or "/"
    deadline = time.monotonic() + LINES_WAIT_SECONDS
    while True:
        try:
            source, ref = log_source(function), function_ref(function)  # secret values masked
            lines = async_to_sync(_lines_since)(source, ref, since)
        except BackendError:
            return {}, []
        requests = [x for x in lines if x.stream == "request" and _path_of(x.text).endswith(bare)]
        if requests or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if not requests:
        return {}, []
    line = requests[0]
    fields = dict(part.split("=", 1) for part in line.text.split() if "=" in part)
    printed = [
        x
        for x in lines
        if x.instance == line.instance and x.stream != "request" and x.timestamp <= line.timestamp
    ]
    return {"revision": fields.get("revision", ""), "instance": line.instance, "text": line.text}, printed


def _path_of(text: str) -> str:
    parts = text.split()
    return parts[1] if len(parts) > 1 else ""


def _remember(request, function, data: dict, result) -> list:
    key = f"hks-invoke-history-{function.pk}"
    history = request.session.get(key, [])
    history.insert(
        0,
        {
            "at": dt.datetime.now(dt.UTC).strftime("%H:%M:%S"),
            "method": data["method"],
            "path": data["path"],
            "status": result.status if result else None,
            "ms": round(result.duration_ms, 1) if result else None,
        },
    )
    request.session[key] = history[:HISTORY]
    return request.session[key]


@login_required
def function_invoke_view(request, project: str, name: str):
    function = function_for_request(request, project, name)
    history = request.session.get(f"hks-invoke-history-{function.pk}", [])
    if request.method != "POST":
        context = {"form": InvokeForm(initial=_initial(request, function)), "history": history}
        return render_tab(request, function, "invoke", context)
    function = function_for_request(request, project, name, role=Role.DEVELOPER)
    form = InvokeForm(request.POST)
    context, status = {"form": form, "result": None, "error": ""}, 200
    if not form.is_valid():
        status = 400
    else:
        started = dt.datetime.now(dt.UTC)
        try:
            context["result"] = function_invoke(function=function, **form.cleaned_data)
        except ServiceError as exc:
            context["error"], status = exc.message, exc.code
        context["curl"] = as_curl(function, form.cleaned_data)
        if context["result"] is not None:
            context["answered"], context["call_lines"] = call_lines(
                function, started, form.cleaned_data["path"]
            )
        context["history"] = _remember(request, function, form.cleaned_data, context["result"])
    if is_partial(request, "invoke-result"):
        return render(request, "functions/_invoke_result.html", context, status=status)
    return render_tab(request, function, "invoke", context, status=status)
