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
import time
from collections.abc import AsyncIterator, Callable

from functions.backends.base import LogLine, LogSink

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

    A container's log is followed (one stream per container, read on a thread) once it has started - the
    kubelet answers 400 before - so each line crosses the network once; ``poll`` passes on what arrived.
    A stream that broke is made up for by one full read once the container has terminated."""

    containers = ("fetch-source", "kaniko")

    def __init__(self, call: Callable, core, job: str, namespace: str, on_log: LogSink | None):
        self.call, self.core, self.job, self.namespace, self.on_log = call, core, job, namespace, on_log
        self.lines: list[str] = []
        self.events: list = []
        self.waiting: list[tuple[str, str, str]] = []
        self._seen: dict[tuple[str, str], int] = {}
        self._said: set[tuple] = set()
        self._pods: list = []
        self._lock = threading.Lock()
        self._arrived: list[tuple[tuple[str, str], str]] = []
        self._streams: dict[tuple[str, str], threading.Thread] = {}
        self._complete: set[tuple[str, str]] = set()  # streams that ended by themselves
        self._terminated: set[tuple[str, str]] = set()

    def poll(self) -> None:
        pods = self.call(self.core.list_namespaced_pod, self.namespace, label_selector=f"job-name={self.job}")
        self._pods = list(pods.items)
        self.waiting = []
        for pod in self._pods:
            states = self._states(pod)
            for container in self.containers:
                state, key = states.get(container), (pod.metadata.name, container)
                if state is None:
                    continue
                if state.waiting is not None:
                    reason, message = state.waiting.reason or "", state.waiting.message or ""
                    self.waiting.append((container, reason, message))
                    self._say(
                        ("waiting", pod.metadata.name, container, reason),
                        f"[{container}] waiting: {reason} {message}".rstrip(),
                    )
                    continue
                if state.terminated is not None:
                    self._terminated.add(key)
                self._follow(key)
        self._drain()
        self._read_events([self.job, *(pod.metadata.name for pod in self._pods)])

    def finish(self, timeout: float = 15.0) -> None:
        """The build is over: let the streams end, pass on their last lines, and read in full any
        container whose stream broke."""
        self.poll()
        deadline = time.monotonic() + timeout
        for thread in list(self._streams.values()):
            thread.join(max(0.0, deadline - time.monotonic()))
        self._drain()
        for key in sorted(self._terminated - self._complete):
            text = self.call(
                self.core.read_namespaced_pod_log, key[0], self.namespace, container=key[1], ok=(400, 404)
            )
            lines = (text or "").splitlines()
            for line in lines[self._seen.get(key, 0) :]:
                self._line(key, line)

    def _follow(self, key: tuple[str, str]) -> None:
        with self._lock:
            alive = key in self._streams and self._streams[key].is_alive()
            if alive or key in self._complete:
                return
            thread = threading.Thread(target=self._pump, args=(key,), daemon=True, name=f"build-log-{key[1]}")
            self._streams[key] = thread
        thread.start()

    def _pump(self, key: tuple[str, str]) -> None:
        try:
            response = self.call(
                self.core.read_namespaced_pod_log,
                key[0],
                self.namespace,
                container=key[1],
                follow=True,
                _preload_content=False,
                _request_timeout=FOLLOW_TIMEOUT,
                ok=(400, 404),
            )
            if response is None:
                return  # not started after all: the next poll follows again
            buffer = b""
            for chunk in response.stream(4096):
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                with self._lock:
                    self._arrived += [(key, raw.decode(errors="replace")) for raw in complete]
            with self._lock:
                if buffer:
                    self._arrived.append((key, buffer.decode(errors="replace")))
                self._complete.add(key)
        except Exception:  # a broken stream: ``finish`` reads the container in full
            pass

    def _drain(self) -> None:
        with self._lock:
            arrived, self._arrived = self._arrived, []
        for key, line in arrived:
            self._line(key, line)

    def _line(self, key: tuple[str, str], line: str) -> None:
        self._seen[key] = self._seen.get(key, 0) + 1
        self._send(f"[{key[1]}] {line}")

    @staticmethod
    def _states(pod) -> dict:
        status = pod.status
        statuses = (
            [*(status.init_container_statuses or []), *(status.container_statuses or [])] if status else []
        )
        return {s.name: s.state for s in statuses if s.state is not None}

    def terminated(self) -> dict:
        """Container name -> its ``terminated`` state, for the Job's pods as last seen."""
        return {
            name: state.terminated
            for pod in self._pods
            for name, state in self._states(pod).items()
            if state.terminated is not None
        }

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
