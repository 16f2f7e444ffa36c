"""A real run end to end on the local runtime, in-process and fast: a function is deployed by the real
worker onto the real runtime daemon (sandboxed), a schedule every minute is created, the dispatcher is
called at the schedule's due time (a controlled clock instead of waiting for the minute), and the request
travels for real — worker task, HTTP through the runtime's gateway, the function. The function's log shows
the request and the run history (API) records it. Debian package: bubblewrap."""

import asyncio
import datetime as dt

import pytest

from functions.backends import get_backend
from functions.models import Function, FunctionStatus, ScheduleRun
from functions.services import functions as services
from functions.services import schedule_runs as schedule_firing
from functions.services import schedules as services_schedules
from functions.services.functions import function_ref
from functions.services.schedule_runs import Outcome
from tests.support.archive_samples import node_archive
from tests.support.daemon_helpers import wait_until

pytestmark = pytest.mark.runtime

INDEX = b"""module.exports = { handle: async (context, body) => {
  const h = context.headers;
  const job = `${h['x-hks-schedule']} ${h['x-hks-scheduled-for']}`;
  console.log(`scheduled call ${context.method} ${job} ${JSON.stringify(body)}`);
  return { ok: true };
} };
"""


def _containing(text: str, expected: str) -> str | None:
    return text if expected in text else None


def log_text(function) -> str:
    async def collect():
        backend = get_backend(function.project)
        return [line.text async for line in backend.logs(function_ref(function), tail=500)]

    return "\n".join(asyncio.run(collect()))


@pytest.mark.usefixtures("local_backend_settings")
def test_minutely_schedule_fires_the_deployed_function_and_history_records_it(
    celery_worker, project, developer, api_client_for, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path
    function = services.function_create(project=project, name="ticker", runtime="node", user=developer)
    services.function_deploy(function=function, archive=node_archive("ticker", body=INDEX), user=developer)
    function = wait_until(
        lambda: Function.objects.filter(pk=function.pk, status__in=["ready", "failed"]).first(), 600, "deploy"
    )
    assert function.status == FunctionStatus.READY, function.status_message

    schedule = services_schedules.schedule_create(
        function=function,
        user=developer,
        name="minutely",
        cron="* * * * *",
        headers={"Content-Type": "application/json"},
        body='{"tick": 1}',
    )
    due = schedule.next_run_at
    assert due.second == 0 and due > dt.datetime.now(dt.UTC)
    assert schedule_firing.schedules_dispatch(now=due - dt.timedelta(seconds=1)) == []  # not yet due
    [run] = schedule_firing.schedules_dispatch(now=due + dt.timedelta(seconds=1))  # the minute has come
    assert schedule_firing.schedules_dispatch(now=due + dt.timedelta(seconds=6)) == []  # next beat: nothing

    run = wait_until(
        lambda: ScheduleRun.objects.filter(pk=run.pk).exclude(outcome__in=Outcome.ACTIVE).first(),
        120,
        "the run",
    )
    assert (run.outcome, run.status_code, run.error) == (Outcome.SUCCEEDED, 200, ""), run.error
    assert run.duration_ms is not None

    stamp = due.isoformat().replace("+00:00", "Z")
    expected = f'scheduled call POST minutely {stamp} {{"tick":1}}'
    text = wait_until(lambda: _containing(log_text(function), expected), 30, "the log line")
    assert text.count(expected) == 1

    history = (
        api_client_for(developer).get("/api/v1/projects/acme/functions/ticker/schedules/minutely/runs").json()
    )
    assert [(h["outcome"], h["status_code"]) for h in history] == [("succeeded", 200)]
    assert dt.datetime.fromisoformat(history[0]["scheduled_for"]) == due
