"""``functions.logstream.follow`` across a runtime restart: the backend's stream ends, is followed again from
the newest line given, and nothing is lost or given twice. Debian package: bubblewrap.
"""

from __future__ import annotations

import asyncio
import secrets

import pytest

from functions.backends.base import FunctionRef
from functions.backends.local import LocalBackend
from functions.realtime import logstream
from tests.support.daemon import start_daemon, stop_daemon
from tests.support.daemon_helpers import NS, build, call, deploy, service, wait_for
from tests.support.ports import free_port as _free_port
from tests.support.sample_functions import remove_dir, scratch_dir

pytestmark = pytest.mark.runtime


@pytest.fixture
def data_dir():
    path = scratch_dir("logstream-")
    yield path
    remove_dir(path)


def test_following_goes_on_across_a_runtime_restart_without_loss_or_repeats(data_dir, monkeypatch):
    monkeypatch.setattr(logstream, "RESUME_SECONDS", 0.2)
    token, ports = secrets.token_urlsafe(8), ("--control-port", str(_free_port()))
    ports += ("--gateway-port", str(_free_port()), "--data-path", "python")
    daemon = start_daemon(data_dir, token, *ports)
    backend = LocalBackend(daemon.control_url, token)
    ref = FunctionRef(NS, NS, "chatty")
    try:
        deploy(backend, service("chatty", "python", build(backend, data_dir, "chatty", "python")))
    except BaseException:
        stop_daemon(daemon)
        raise

    lines: list[tuple] = []

    async def scenario() -> tuple[list[str], list[str]]:
        texts, troubles = [], []

        async def collect():
            async for item in logstream.follow(backend, ref, tail=100):
                if isinstance(item, logstream.StreamTrouble):
                    troubles.append(item.message)
                else:
                    lines.append((item.timestamp, item.instance, item.stream, item.text))
                    texts.append(item.text)

        async def until(text: str) -> None:
            assert await asyncio.to_thread(wait_for, lambda: text in texts, 60), f"never saw {text!r}"

        follower = asyncio.create_task(collect())
        try:
            for word in ("one", "two"):
                assert (
                    await asyncio.to_thread(call, daemon.gateway_url, "chatty", f"?log={word}")
                ).status_code == 200
            await until("err:two")
            await asyncio.to_thread(stop_daemon, daemon)  # the followed stream ends with it
            restarted = await asyncio.to_thread(start_daemon, data_dir, token, *ports)
            try:
                answer = await asyncio.to_thread(call, restarted.gateway_url, "chatty", "?log=three")
                assert answer.status_code == 200
                await until("err:three")
                await asyncio.sleep(1)  # time for a repeat to show, were one coming
            finally:
                await asyncio.to_thread(stop_daemon, restarted)
        finally:
            follower.cancel()
        return texts, troubles

    texts, troubles = asyncio.run(scenario())
    ours = ["one", "err:one", "two", "err:two", "three", "err:three"]
    assert sorted(t for t in texts if t in ours) == sorted(ours)
    assert len(set(lines)) == len(lines)  # no line given twice, the runtime's own included
