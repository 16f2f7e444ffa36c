"""Beat's session garbage collection (functions/sessions.py)."""

from celery import shared_task

from functions import sessions


@shared_task
def collect_expired_sessions() -> int:
    return sessions.sessions_collect_expired()
