"""The audit trail: every write a member makes records an ``AuditEvent`` here."""

from __future__ import annotations

from functions.models import AuditEvent, Function, Project


def audit(*, project: Project, action: str, actor=None, function: Function | None = None, **detail):
    AuditEvent.objects.create(
        project=project,
        function=function,
        function_name=function.name if function else "",
        actor=actor if actor is not None and actor.is_authenticated else None,
        action=action,
        detail=detail,
    )
