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


def container_started(pod, container: str = "user-container") -> tuple[bool, int]:
    """(has ``container`` started - running or terminated -, its restart count). Before that the kubelet
    answers a log request with 400 "is waiting to start" (kubernetes pkg/kubelet/kubelet_pods.go
    ``validateContainerLogStatus``), and a pod that scales up from zero is listed while still Pending."""
    statuses = (pod.status.container_statuses or []) if pod.status else []
    for status in statuses:
        if status.name == container and status.state is not None:
            started = status.state.running is not None or status.state.terminated is not None
            return started, status.restart_count or 0
    return False, 0


class PodFollower:
    """Follows the logs of every pod matching a selector until closed, picking up pods as they start.

    A pod is followed once its ``user-container`` has started; a stream refused (400, 404) or ended is
    tried again at the next rescan, and a restarted container is followed anew."""

    def __init__(
        self, call: Callable, core, namespace: str, selector: str, since, tail, rescan_seconds: float
    ):
        self.call, self.core, self.namespace, self.selector = call, core, namespace, selector
        self.since, self.tail, self.rescan_seconds = since, tail, rescan_seconds
        self.queue: asyncio.Queue = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self.stop = threading.Event()
        self.started: set[tuple[str, int]] = set()
        self.seen_pods: set[str] = set()
        self.responses: list = []
        self._lock = threading.Lock()

    async def lines(self) -> AsyncIterator[LogLine]:
        try:
            first = True
            while True:
                await self._start_new_pods(first)
                first = False
                try:
                    line = await asyncio.wait_for(self.queue.get(), self.rescan_seconds)
                except TimeoutError:
                    continue
                if line is not None and (self.since is None or line.timestamp >= self.since):
                    yield line
        finally:
            self.close()

    async def _start_new_pods(self, first_scan: bool) -> None:
        pods = await asyncio.to_thread(
            self.call, self.core.list_namespaced_pod, self.namespace, label_selector=self.selector
        )
        for pod in pods.items:
            name = pod.metadata.name
            started, restarts = container_started(pod)
            if first_scan:
                self.seen_pods.add(name)
            if not started:
                continue
            key = (name, restarts)
            with self._lock:
                if key in self.started:
                    continue
                self.started.add(key)
            # Pods running when we began keep the tail; pods that start while we follow are new: all lines.
            tail = self.tail if name in self.seen_pods and restarts == 0 else None
            params = log_params(self.since, tail)
            threading.Thread(target=self._pump, args=(key, params), daemon=True, name=f"log-{name}").start()

    def _pump(self, key: tuple[str, int], params: dict) -> None:
        pod = key[0]
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
                with self._lock:  # not ready after all: the next rescan tries again
                    self.started.discard(key)
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
    """The build pod's log lines, passed on as they appear, with the pod's waiting reasons and the events
    of the Job and its pod (FailedCreate, FailedMount, image pulls...) - what ``kubectl describe`` shows.

    A container's log is read only once it has started (the kubelet answers 400 before), and a last time
    when it has terminated; each read sends only the lines not sent yet."""

    containers = ("fetch-source", "kaniko")

    def __init__(self, call: Callable, core, job: str, namespace: str, on_log: LogSink | None):
        self.call, self.core, self.job, self.namespace, self.on_log = call, core, job, namespace, on_log
        self.lines: list[str] = []
        self.events: list = []
        self.waiting: list[tuple[str, str, str]] = []
        self._seen: dict[tuple[str, str], int] = {}
        self._done: set[tuple[str, str]] = set()
        self._said: set[tuple] = set()
        self._pods: list = []

    def poll(self) -> None:
        pods = self.call(self.core.list_namespaced_pod, self.namespace, label_selector=f"job-name={self.job}")
        self._pods = list(pods.items)
        self.waiting = []
        for pod in self._pods:
            states = self._states(pod)
            for container in self.containers:
                state = states.get(container)
                if state is None:
                    continue
                if state.waiting is not None:
                    reason, message = state.waiting.reason or "", state.waiting.message or ""
                    self.waiting.append((container, reason, message))
                    self._say(
                        ("waiting", pod.metadata.name, container, reason),
                        f"[{container}] waiting: {reason} {message}".rstrip(),
                    )
                elif (pod.metadata.name, container) not in self._done:
                    self._read(pod.metadata.name, container)
                    if state.terminated is not None:
                        self._done.add((pod.metadata.name, container))
        self._read_events([self.job, *(pod.metadata.name for pod in self._pods)])

    @staticmethod
    def _states(pod) -> dict:
        status = pod.status
        statuses = (
            [*(status.init_container_statuses or []), *(status.container_statuses or [])] if status else []
        )
        return {s.name: s.state for s in statuses if s.state is not None}

    def terminated(self) -> dict:
        """Container name -> its ``terminated`` state, for the Job's pods as last seen."""
        self.poll()
        return {
            name: state.terminated
            for pod in self._pods
            for name, state in self._states(pod).items()
            if state.terminated is not None
        }

    def _read(self, pod: str, container: str) -> None:
        text = self.call(
            self.core.read_namespaced_pod_log, pod, self.namespace, container=container, ok=(400, 404)
        )
        self._emit(pod, container, (text or "").splitlines())

    def _read_events(self, names: list[str]) -> None:
        for name in names:
            found = self.call(
                self.core.list_namespaced_event,
                self.namespace,
                field_selector=f"involvedObject.name={name}",
                ok=(403, 404),
            )
            for event in found.items if found else []:
                if event.metadata.name not in {e.metadata.name for e in self.events}:
                    self.events.append(event)
                self._say(
                    ("event", event.metadata.name, event.count),
                    f"[event] {event.type or ''} {event.reason or ''}: {event.message or ''}".strip(),
                )

    def _say(self, key: tuple, line: str) -> None:
        if key in self._said:
            return
        self._said.add(key)
        self._send(line)

    def _send(self, line: str) -> None:
        self.lines.append(line)
        if self.on_log:
            self.on_log(line)

    def _emit(self, pod: str, container: str, lines: list[str]) -> None:
        seen = self._seen.get((pod, container), 0)
        for line in lines[seen:]:
            self._send(f"[{container}] {line}")
        self._seen[(pod, container)] = max(seen, len(lines))
