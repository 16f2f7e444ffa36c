"""What one client may hold of the gateway, so a slow or greedy one cannot starve the others.

The same limits drive both data paths: HAProxy's config (``timeout http-request``, ``timeout
http-keep-alive``, ``maxconn`` and a per-address connection count in a stick table), and, when the Python
gateway faces clients itself, ``guarded()``: a protocol wrapper that closes a connection whose request head
has not arrived within the header timeout and refuses connections past the per-address count.
Set by the daemon's environment: ``HKS_GATEWAY_HEADER_TIMEOUT`` (seconds, default 10),
``HKS_GATEWAY_KEEPALIVE_TIMEOUT`` (10), ``HKS_GATEWAY_MAX_CONNECTIONS`` (20000) and
``HKS_GATEWAY_MAX_CONNECTIONS_PER_CLIENT`` (1000).
"""

from __future__ import annotations

import asyncio
import os
import resource
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class ClientLimits:
    header_timeout: float = 10.0  # from the first byte of a connection to the end of its request head
    keepalive_timeout: float = 10.0  # an idle kept-alive connection is closed after this
    max_connections: int = 20_000
    max_connections_per_client: int = 1000  # per source address

    def connections_allowed(self) -> int:
        """``max_connections``, lowered to what this process's open-file limit can hold (HAProxy needs two
        descriptors per proxied connection and refuses to start when it cannot raise its limit)."""
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard == resource.RLIM_INFINITY:
            return self.max_connections
        return max(256, min(self.max_connections, (hard - 200) // 2))

    @classmethod
    def from_env(cls) -> ClientLimits:
        def number(name: str, default: float) -> float:
            raw = os.environ.get(name, "")
            try:
                value = float(raw) if raw else default
            except ValueError as exc:
                raise SystemExit(f"{name} must be a number, not {raw!r}") from exc
            if value <= 0:
                raise SystemExit(f"{name} must be positive")
            return value

        return cls(
            header_timeout=number("HKS_GATEWAY_HEADER_TIMEOUT", cls.header_timeout),
            keepalive_timeout=number("HKS_GATEWAY_KEEPALIVE_TIMEOUT", cls.keepalive_timeout),
            max_connections=int(number("HKS_GATEWAY_MAX_CONNECTIONS", cls.max_connections)),
            max_connections_per_client=int(
                number("HKS_GATEWAY_MAX_CONNECTIONS_PER_CLIENT", cls.max_connections_per_client)
            ),
        )


class _Guard(asyncio.Protocol):
    """Wraps one connection's protocol: a deadline for the first request head, a per-address count."""

    def __init__(self, inner: asyncio.Protocol, factory: guarded):
        self.inner, self.factory = inner, factory
        self.peer = ""
        self.timer: asyncio.TimerHandle | None = None
        self.tail = b""

    def connection_made(self, transport) -> None:
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        counts = self.factory.counts
        if counts[self.peer] >= self.factory.limits.max_connections_per_client:
            transport.abort()
            self.peer = ""
            return
        counts[self.peer] += 1
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.factory.limits.header_timeout, transport.abort)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.timer is not None:
            seen = self.tail + data
            if b"\r\n\r\n" in seen:
                self.timer.cancel()  # the head is in: from here the keep-alive and request timeouts apply
                self.timer = None
            self.tail = seen[-3:]
        self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received()

    def connection_lost(self, exc) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.peer:
            self.factory.counts[self.peer] -= 1
            if not self.factory.counts[self.peer]:
                del self.factory.counts[self.peer]
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class guarded:  # noqa: N801 - used like a function: guarded(server, limits)
    """A protocol factory for ``loop.create_server`` applying ``limits`` around ``factory``'s protocols."""

    def __init__(self, factory, limits: ClientLimits):
        self.inner_factory, self.limits = factory, limits
        self.counts: Counter[str] = Counter()

    def __call__(self) -> asyncio.Protocol:
        return _Guard(self.inner_factory(), self)
