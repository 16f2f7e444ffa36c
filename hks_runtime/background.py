"""The daemon's fire-and-forget tasks (stopping an instance, refilling the pool, telling HAProxy).

The event loop keeps only weak references to tasks, so each one is held here until it is done; at shutdown
``settle`` lets the pending ones finish for a moment and cancels the rest, so none is destroyed pending.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine

_tasks: set[asyncio.Task] = set()


def start(coro: Coroutine) -> asyncio.Task:
    task = asyncio.get_running_loop().create_task(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return task


async def settle(timeout: float) -> None:
    pending = {task for task in _tasks if not task.done()}
    if pending:
        _, pending = await asyncio.wait(pending, timeout=timeout)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
