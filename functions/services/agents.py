"""Writes an agent makes through the internal Operations API (functions/agents/api.py): deploying generated
code as a throwaway function goes through the same checks and audit trail as every other deploy."""

from __future__ import annotations

import secrets

from django.db import transaction

from functions.agents.code import agent_archive
from functions.errors import ServiceError
from functions.models import Function, Project
from functions.services import usage
from functions.services.audit import audit
from functions.services.functions import function_create, function_deploy, function_update_settings


def agent_function_deploy(
    *,
    project: Project,
    credential: str,
    jti: str,
    runtime: str,
    code: str,
    files: dict[str, str],
    env: dict[str, str],
    ttl_seconds: int,
    timeout_seconds: int,
) -> Function:
    """Wrap ``code`` as a function (restricted, cluster-local, expiring after ``ttl_seconds``), set its env
    and timeout through ``function_update_settings`` and deploy it; a refusal leaves nothing behind."""
    usage.execution_admit(project=project)  # the executions-per-minute and CPU quotas (429)
    name = f"agent-{secrets.token_hex(5)}"
    try:
        archive = agent_archive(name=name, runtime=runtime, code=code, files=files)
    except ValueError as exc:
        raise ServiceError(str(exc)) from exc
    with transaction.atomic():
        function = function_create(
            project=project, name=name, runtime=runtime, user=None, ephemeral=True, ttl_seconds=ttl_seconds
        )
        function = function_update_settings(
            function=function, user=None, env=env, timeout_seconds=timeout_seconds
        )
        function_deploy(function=function, archive=archive, user=None)
        audit(project=project, function=function, action="agent.deploy", credential=credential, jti=jti)
        usage.usage_record(project=project, executions=1)  # its CPU is the function's, not counted here
    function.refresh_from_db()
    return function
