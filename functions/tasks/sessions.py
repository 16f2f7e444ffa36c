"""Beat's session garbage collection (functions/agents/sessions.py)."""

from celery import shared_task

from functions.agents import sessions


@shared_task(name="functions.tasks_sessions.collect_expired_sessions")
def collect_expired_sessions() -> int:
    return sessions.sessions_collect_expired()
