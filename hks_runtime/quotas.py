"""A project's instance quota on this machine: at most ``cap`` instances of its functions at once.

Every instance counts from the moment it is started until its process has exited (starting, ready and
draining: a draining one still holds its memory); a pooled standby counts only once it is claimed. The cap
comes with every spec (``FunctionSpec.project_max_instances``): the most recent spec of a namespace sets it,
0 meaning none. A start past it is not made: the function waits here, in the order it first had to, and
gets its start once another instance of the project has stopped (``Autoscaler.resume``). Instances running
when a cap is lowered are not stopped, as a Kubernetes ResourceQuota does not evict pods.

A leaf: it knows instances and functions only by their ``namespace`` and ``key``.
"""

from __future__ import annotations

from typing import Any


class ProjectQuotas:
    def __init__(self) -> None:
        self.caps: dict[str, int] = {}
        self.running: dict[str, set[Any]] = {}  # namespace -> its instances that have not exited yet
        # namespace -> the functions held back, in the order they were (dicts keep insertion order)
        self.waiting: dict[str, dict[tuple[str, str], Any]] = {}

    def set_cap(self, namespace: str, cap: int) -> bool:
        """Record the cap of the namespace's most recent spec; True when it now allows more than before."""
        before = self.caps.get(namespace, 0)
        self.caps[namespace] = cap
        return (before != 0 and cap == 0) or cap > before > 0

    def cap(self, namespace: str) -> int:
        return self.caps.get(namespace, 0)

    def count(self, namespace: str) -> int:
        return len(self.running.get(namespace, ()))

    def allows(self, namespace: str, *, besides: int = 0) -> bool:
        """Whether one more instance fits (``besides``: instances a new one will replace, not counted)."""
        cap = self.cap(namespace)
        return cap == 0 or self.count(namespace) - besides < cap

    def add(self, inst: Any) -> None:
        self.running.setdefault(inst.namespace, set()).add(inst)

    def discard(self, inst: Any) -> bool:
        """Forget an instance that is gone; True when it was counted (its place is free now)."""
        running = self.running.get(inst.namespace)
        if running is None or inst not in running:
            return False
        running.discard(inst)
        return True

    def hold(self, fn: Any) -> bool:
        """``fn`` wants a start the cap does not allow: it waits, behind those already waiting. True when it
        was not waiting yet (the caller says so once in the function's log)."""
        queue = self.waiting.setdefault(fn.spec.namespace, {})
        if queue.get(fn.key) is fn:
            return False
        queue[fn.key] = fn  # (in place of a deleted function of the same name, if one still waited)
        return True

    def requeue(self, fn: Any) -> None:
        """``fn`` had its turn and still wants more: behind the others now (round-robin)."""
        queue = self.waiting.get(fn.spec.namespace, {})
        if queue.pop(fn.key, None) is not None:
            queue[fn.key] = fn

    def release(self, fn: Any) -> None:
        """``fn`` wants nothing the cap holds back any more (or is gone)."""
        queue = self.waiting.get(fn.spec.namespace)
        if queue is not None and queue.get(fn.key) is fn:
            del queue[fn.key]

    def is_held(self, fn: Any) -> bool:
        return self.waiting.get(fn.spec.namespace, {}).get(fn.key) is fn

    def held_in(self, namespace: str) -> list[Any]:
        """The namespace's held functions, the one waiting longest first."""
        return list(self.waiting.get(namespace, {}).values())

    def namespaces_waiting(self) -> list[str]:
        return [ns for ns, queue in self.waiting.items() if queue]

    def message(self, fn: Any) -> str:
        """What the function's status and log say while it is held back."""
        live, cap = fn.live, self.cap(fn.spec.namespace)
        return (
            f"held at {live} instance{'' if live == 1 else 's'}: "
            f"project quota of {cap} instance{'' if cap == 1 else 's'} reached"
        )
