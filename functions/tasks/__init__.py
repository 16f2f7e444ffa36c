"""Celery tasks: thin drivers that load a row by id and call a service. Celery's autodiscovery imports this
package, which imports every task module so that all of them register. Each task names itself (``name=``):
the names are the ones queued in Redis and listed in the beat schedule, older than this package's layout, so
they must never change (tests/tasks/test_run_twice.py lists them)."""

from functions.tasks import functions, provision, schedules, sessions  # noqa: F401  (register every task)
