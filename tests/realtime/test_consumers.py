"""Websocket consumers over the real Channels layer (channels-redis on the test Redis).

Logs come from the Knative backend talking to the fake Kubernetes API server (the one allowed fake); the
local runtime's logs are exercised end to end by the browser tests.
"""

import asyncio
import datetime as dt

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from functions.realtime import consumers
from functions.realtime import push as live
from tests.support.factories import FunctionFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_prometheus")]


def _application():
    from hks_portal.asgi import application

    return application


def _cookie_for(user) -> list[tuple[bytes, bytes]]:
    client = Client()
    client.force_login(user)
    session = client.cookies["sessionid"].value
    return [(b"cookie", f"sessionid={session}".encode()), (b"origin", b"http://testserver")]


async def _connect(path: str, user=None):
    headers = await sync_to_async(_cookie_for)(user) if user else [(b"origin", b"http://testserver")]
    communicator = WebsocketCommunicator(_application(), path, headers=headers)
    connected, code = await communicator.connect(timeout=10)
    return communicator, connected, code


async def _lines_until(communicator, predicate, limit=50):
    """Collect messages until ``predicate(lines)``; returns (lines, other messages)."""
    lines, others = [], []
    for _ in range(limit):
        message = await communicator.receive_json_from(timeout=10)
        if message["type"] == "lines":
            lines += message["lines"]
        else:
            others.append(message)
        if predicate(lines):
            break
    return lines, others


async def test_viewer_gets_the_tail_then_new_lines_live(knative_hello, viewer, fake_k8s):
    communicator, connected, _ = await _connect("/ws/p/acme/f/hello/logs/", viewer)
    assert connected

    first, _ = await _lines_until(communicator, lambda lines: lines)
    fake_k8s.append_log(knative_hello.ns, knative_hello.pod, "user-container", "hello from the function")
    later, _ = await _lines_until(communicator, lambda lines: any("hello from" in x["text"] for x in lines))
    await communicator.disconnect()

    assert first[0]["text"].startswith("listening")
    line = next(x for x in later if x["text"] == "hello from the function")
    assert line["instance"] == knative_hello.pod and line["stream"] == "stdout" and line["ts"].endswith("Z")


async def test_outsider_and_anonymous_get_a_closed_socket(knative_hello, outsider):
    for user in (outsider, None):
        communicator, connected, code = await _connect("/ws/p/acme/f/hello/logs/", user)
        assert not connected
        await communicator.disconnect()


async def test_unknown_function_is_closed_like_a_forbidden_one(knative_hello, owner):
    communicator, connected, _ = await _connect("/ws/p/acme/f/nope/logs/", owner)

    assert not connected


async def test_paused_client_is_told_how_many_lines_were_dropped(
    knative_hello, viewer, fake_k8s, monkeypatch
):
    monkeypatch.setattr(consumers, "BUFFER_LINES", 10)
    communicator, connected, _ = await _connect("/ws/p/acme/f/hello/logs/", viewer)
    initial, _ = await _lines_until(communicator, lambda lines: lines)
    await communicator.send_json_to({"action": "pause"})
    await asyncio.sleep(0.2)
    for i in range(100):
        fake_k8s.append_log(knative_hello.ns, knative_hello.pod, "user-container", f"chatty {i}")
    fake_k8s.append_log(knative_hello.ns, knative_hello.pod, "user-container", "the last line")
    await asyncio.sleep(1.5)  # let the stream reach the paused consumer
    assert await communicator.receive_nothing(timeout=0.3)  # paused: nothing is sent

    await communicator.send_json_to({"action": "resume"})
    lines, others = await _lines_until(
        communicator, lambda lines: any(x["text"] == "the last line" for x in lines)
    )
    await communicator.disconnect()

    dropped = sum(m["count"] for m in others if m["type"] == "dropped")
    chatty = [x for x in lines if x["text"].startswith("chatty") or x["text"] == "the last line"]
    assert dropped > 0
    assert dropped + len(chatty) == 101  # every line is either delivered or counted as dropped
    assert chatty[-1]["text"] == "the last line"  # the newest lines are the ones kept


async def test_lines_of_a_burst_sharing_one_timestamp_all_arrive(knative_hello, viewer, fake_k8s):
    communicator, connected, _ = await _connect("/ws/p/acme/f/hello/logs/", viewer)
    await _lines_until(communicator, lambda lines: lines)
    moment = dt.datetime.now(dt.UTC)
    for i in range(5):
        fake_k8s.append_log(knative_hello.ns, knative_hello.pod, "user-container", f"burst {i}", at=moment)
    lines, _ = await _lines_until(communicator, lambda lines: any(x["text"] == "burst 4" for x in lines))
    await communicator.disconnect()
    assert [x["text"] for x in lines if x["text"].startswith("burst")] == [f"burst {i}" for i in range(5)]


async def test_filter_applies_to_lines_sent(knative_hello, viewer, fake_k8s):
    communicator, connected, _ = await _connect("/ws/p/acme/f/hello/logs/", viewer)
    await _lines_until(communicator, lambda lines: lines)
    await communicator.send_json_to({"action": "filter", "text": "ERROR"})
    await asyncio.sleep(0.2)
    fake_k8s.append_log(knative_hello.ns, knative_hello.pod, "user-container", "all fine")
    fake_k8s.append_log(knative_hello.ns, knative_hello.pod, "user-container", "an ERROR happened")

    lines, _ = await _lines_until(communicator, lambda lines: any("ERROR" in x["text"] for x in lines))
    await communicator.disconnect()

    assert [x["text"] for x in lines] == ["an ERROR happened"]


async def test_unknown_action_gets_an_error_message(knative_hello, viewer):
    communicator, connected, _ = await _connect("/ws/p/acme/f/hello/logs/", viewer)
    await _lines_until(communicator, lambda lines: lines)

    await communicator.send_json_to({"action": "explode"})
    _, others = await _lines_until(communicator, lambda lines: True, limit=1)
    await communicator.disconnect()

    assert others and others[0]["type"] == "error"


# Status pushes ---------------------------------------------------------------------------------------


async def test_status_change_is_pushed_as_an_out_of_band_row(project, other_project, viewer, hello):
    theirs = await sync_to_async(FunctionFactory)(project=other_project, name="theirs", status="ready")
    communicator, connected, _ = await _connect("/ws/p/acme/functions/", viewer)
    assert connected

    await sync_to_async(live.function_changed)(function_id=theirs.pk)
    assert await communicator.receive_nothing(timeout=0.5)  # another project's news is not ours
    hello.status, hello.status_message = "failed", "exit code 7"
    await sync_to_async(hello.save)()
    await sync_to_async(live.function_changed)(function_id=hello.pk)
    html = await communicator.receive_from(timeout=10)
    await communicator.disconnect()

    assert html.startswith(f'<tr id="function-{hello.pk}" hx-swap-oob="true"')
    assert "exit code 7" in html


async def test_a_socket_left_idle_past_the_layers_blocking_read_still_gets_pushes(project, viewer, hello):
    """channels-redis blocks 5 s waiting for a message; a Redis client that times reads out at 5 s (redis-py
    8's default) killed every consumer left idle that long."""
    from functions.services import functions as services

    communicator, connected, _ = await _connect("/ws/p/acme/functions/", viewer)
    assert connected
    await asyncio.sleep(6.5)  # longer than one blocking read of the channel layer
    await sync_to_async(services.function_mark_failed)(function=hello, message="after a quiet while")
    html = await communicator.receive_from(timeout=10)
    await communicator.disconnect()
    assert "after a quiet while" in html


async def test_outsider_cannot_subscribe_to_a_projects_status(project, outsider, hello):
    communicator, connected, _ = await _connect("/ws/p/acme/functions/", outsider)

    assert not connected


async def test_a_removed_member_stops_receiving_pushes(project, viewer, hello):
    """Access is checked again on each push (not only at connect): once the membership ends, the next push
    closes the socket instead of reaching it."""
    from functions.models import Membership

    communicator, connected, _ = await _connect("/ws/p/acme/functions/", viewer)
    assert connected
    await sync_to_async(live.function_changed)(function_id=hello.pk)
    assert f'id="function-{hello.pk}"' in await communicator.receive_from(timeout=10)

    await sync_to_async(Membership.objects.filter(project=project, user=viewer).delete)()
    hello.status_message = "news the former member must not see"
    await sync_to_async(hello.save)()
    await sync_to_async(live.function_changed)(function_id=hello.pk)
    closed = await communicator.receive_output(timeout=10)
    await communicator.disconnect()

    assert closed["type"] == "websocket.close" and closed.get("code") == consumers.CLOSE_NOT_FOUND


async def test_a_failing_deploy_is_pushed_to_the_list(project, viewer, hello):
    from functions.services import functions as services

    communicator, connected, _ = await _connect("/ws/p/acme/functions/", viewer)
    assert connected

    await sync_to_async(services.function_mark_failed)(function=hello, message="revision hello-00002 crashed")
    html = await communicator.receive_from(timeout=10)
    await communicator.disconnect()

    assert f'id="function-{hello.pk}"' in html and "revision hello-00002 crashed" in html and "Failed" in html


@pytest.mark.parametrize("step", ["deploy", "delete"])
async def test_a_deploy_or_delete_is_pushed_to_the_list_at_once(
    project, viewer, owner, hello, settings, tmp_path, step
):
    """Not at the next poll: the row says "Building" / "Deleting" as soon as the request is taken."""
    from functions.services import functions as services
    from tests.support.archive_samples import node_archive

    settings.MEDIA_ROOT = tmp_path / "media"
    communicator, connected, _ = await _connect("/ws/p/acme/functions/", viewer)
    assert connected
    if step == "deploy":
        await sync_to_async(services.function_deploy)(function=hello, archive=node_archive(), user=owner)
    else:
        await sync_to_async(services.function_delete)(function=hello, user=owner)
    html = await communicator.receive_from(timeout=10)
    await communicator.disconnect()
    assert f'id="function-{hello.pk}"' in html
    assert ("Building" if step == "deploy" else "Deleting") in html


def test_log_snapshot_downloads_as_text(knative_hello, viewer, outsider, fake_k8s, client_for):
    fake_k8s.append_log(knative_hello.ns, knative_hello.pod, "user-container", "a line for the snapshot")

    response = client_for(viewer).get("/p/acme/f/hello/logs.txt")
    refused = client_for(outsider).get("/p/acme/f/hello/logs.txt")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert response["Content-Disposition"].startswith('attachment; filename="hello-')
    last = response.content.decode().splitlines()[-1]
    assert last.endswith(f"{knative_hello.pod} stdout a line for the snapshot")
    assert refused.status_code == 404 and b"snapshot" not in refused.content


async def test_a_client_that_reconnects_paused_gets_nothing_until_it_resumes(knative_hello, viewer, fake_k8s):
    communicator, connected, _ = await _connect("/ws/p/acme/f/hello/logs/?paused=1", viewer)
    assert connected
    fake_k8s.append_log(knative_hello.ns, knative_hello.pod, "user-container", "while paused")
    await asyncio.sleep(1.5)  # let the stream reach the consumer
    assert await communicator.receive_nothing(timeout=0.3)

    await communicator.send_json_to({"action": "resume"})
    lines, _ = await _lines_until(communicator, lambda lines: any(x["text"] == "while paused" for x in lines))
    await communicator.disconnect()
    assert lines[-1]["text"] == "while paused"
