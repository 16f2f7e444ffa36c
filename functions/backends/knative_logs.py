"""Pod logs for the Knative backend: a function's ``user-container`` lines (a snapshot, or followed across
pods that come and go with scaling) and a build Job's lines as they appear.

The API calls go through the backend's ``call`` (timeouts and error mapping); the ``kubernetes`` client
is blocking, so followed streams are read on threads and handed to the event loop through a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import threading
from collections.abc import AsyncIterator, Callable

from .base import LogLine, LogSink

FOLLOW_TIMEOUT = (5, 24 * 3600)  # a followed stream may stay quiet for long


def log_params(since: dt.datetime | None, tail: int | None) -> dict:
    params: dict = {"container": "user-container", "timestamps": True}
    if since is not None:
        params["since_seconds"] = max(1, math.ceil((dt.datetime.now(dt.UTC) - since).total_seconds()))
    if tail:
        params["tail_lines"] = tail
    return params


def parse_line(pod: str, raw: str) -> LogLine | None:
    """One line of ``timestamps=true`` output: an RFC 3339 timestamp, a space, the text."""
    stamp, _, text = raw.partition(" ")
    if not stamp:
        return None
    try:
        moment = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return LogLine(timestamp=dt.datetime.now(dt.UTC), instance=pod, stream="stdout", text=raw)
    return LogLine(timestamp=moment, instance=pod, stream="stdout", text=text)


def parse_log(pod: str, text: str) -> list[LogLine]:
    return [line for raw in text.splitlines() if (line := parse_line(pod, raw))]


class PodFollower:
    """Follows the logs of every pod matching a selector until closed, picking up pods as they start."""

    def __init__(
        self, call: Callable, core, namespace: str, selector: str, since, tail, rescan_seconds: float
    ):
        self.call, self.core, self.namespace, self.selector = call, core, namespace, selector
        self.since, self.tail, self.rescan_seconds = since, tail, rescan_seconds
        self.queue: asyncio.Queue = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self.stop = threading.Event()
        self.started: set[str] = set()
        self.responses: list = []

    async def lines(self) -> AsyncIterator[LogLine]:
        try:
            while True:
                await self._start_new_pods()
                try:
                    line = await asyncio.wait_for(self.queue.get(), self.rescan_seconds)
                except TimeoutError:
                    continue
                if line is not None and (self.since is None or line.timestamp >= self.since):
                    yield line
        finally:
            self.close()

    async def _start_new_pods(self) -> None:
        pods = await asyncio.to_thread(
            self.call, self.core.list_namespaced_pod, self.namespace, label_selector=self.selector
        )
        first_scan = not self.started
        for pod in pods.items:
            name = pod.metadata.name
            if name in self.started:
                continue
            self.started.add(name)
            # Pods that start while we follow are new: all their lines count, not just the tail.
            params = log_params(self.since, self.tail if first_scan else None)
            threading.Thread(target=self._pump, args=(name, params), daemon=True, name=f"log-{name}").start()

    def _pump(self, pod: str, params: dict) -> None:
        try:
            response = self.call(
                self.core.read_namespaced_pod_log,
                pod,
                self.namespace,
                follow=True,
                _preload_content=False,
                _request_timeout=FOLLOW_TIMEOUT,
                ok=(400, 404),
                **params,
            )
            if response is None:
                return
            self.responses.append(response)
            buffer = b""
            for chunk in response.stream(4096):
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for raw in complete:
                    line = parse_line(pod, raw.decode(errors="replace"))
                    if line and not self.stop.is_set():
                        self.loop.call_soon_threadsafe(self.queue.put_nowait, line)
        except Exception:  # a stream ends when its pod goes or we close; nothing to report
            pass

    def close(self) -> None:
        self.stop.set()
        for response in self.responses:
            with contextlib.suppress(Exception):
                response.shutdown()  # unblocks the pump thread's read
                response.close()


class BuildLog:
    """The build pod's log lines, passed on as they appear: each poll re-reads and sends what is new."""

    containers = ("fetch-source", "kaniko")

    def __init__(self, call: Callable, core, job: str, namespace: str, on_log: LogSink | None):
        self.call, self.core, self.job, self.namespace, self.on_log = call, core, job, namespace, on_log
        self.lines: list[str] = []
        self._seen: dict[tuple[str, str], int] = {}

    def poll(self) -> None:
        pods = self.call(self.core.list_namespaced_pod, self.namespace, label_selector=f"job-name={self.job}")
        for pod in pods.items:
            for container in self.containers:
                text = self.call(
                    self.core.read_namespaced_pod_log,
                    pod.metadata.name,
                    self.namespace,
                    container=container,
                    ok=(400, 404),
                )
                self._emit(pod.metadata.name, container, (text or "").splitlines())

    def _emit(self, pod: str, container: str, lines: list[str]) -> None:
        seen = self._seen.get((pod, container), 0)
        for line in lines[seen:]:
            self.lines.append(f"[{container}] {line}")
            if self.on_log:
                self.on_log(self.lines[-1])
        self._seen[(pod, container)] = max(seen, len(lines))
