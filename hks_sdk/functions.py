"""``execute(code=...)``: deploy -> wait until ready -> invoke -> delete, always deleting."""

from __future__ import annotations

import json
import time

from .client import Client, HksError
from .execution import Execution, ExecutionError
from .sessions import AsyncSession, Session, execute_fast, session  # noqa: F401  (functions.session())


def execute(
    code: str,
    *,
    language: str = "python",
    env: dict[str, str] | None = None,
    files: dict[str, str] | None = None,
    timeout: int = 60,
    ready_timeout: float = 180.0,
    client: Client | None = None,
    wait_for_quota: float = 0.0,
) -> Execution:
    """Run ``code`` once in a fresh sandboxed function and return what it printed, returned and raised.

    The function is deleted afterwards whatever happens; if this process dies first, the platform deletes
    it when its time to live runs out. Raises ``DeployError`` when the code could not be deployed and
    ``HksError`` when the platform refused a request; errors raised by the code itself, and a run past
    ``timeout`` seconds, come back in ``Execution.error``.

    Python code without ``files`` takes the fast path (a pre-started sandbox, no deploy; sessions.py). Past
    the project's concurrency quota it answers 429; ``wait_for_quota`` seconds makes the SDK wait and retry.
    """
    own_client = client is None
    client = client or Client()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    name = ""
    try:
        if language == "python" and not files:  # fast path: a pre-started sandbox takes it (sessions.py)
            fast = execute_fast(code, env=env, timeout=timeout, client=client, wait_for_quota=wait_for_quota)
            if fast is not None:
                return fast
        name = client.deploy(code=code, runtime=language, env=env, files=files, timeout_seconds=timeout)[
            "name"
        ]
        client.wait_ready(name, timeout=ready_timeout)
        timings["deploy_ms"] = (time.perf_counter() - started) * 1000
        invoked = time.perf_counter()
        response = client.invoke(name, timeout=timeout + 30)
        timings["invoke_ms"] = (time.perf_counter() - invoked) * 1000
        return _execution(response, name, timings)
    finally:
        if name:
            try:
                client.delete(name)
            except HksError:
                pass  # the platform's expiry collects it
        if own_client:
            client.close()


def _execution(response: dict, name: str, timings: dict[str, float]) -> Execution:
    status = response["status"]
    if status == 200:
        try:
            return Execution.from_response(json.loads(response["body"]), function=name, timings=timings)
        except (ValueError, TypeError):
            pass
    reason = "TimeoutError" if status == 504 else "ExecutionError"
    detail = response.get("body", "")[:2000]
    return Execution(
        error=ExecutionError(name=reason, value=f"HTTP {status}: {detail}"),
        exit_code=1,
        function=name,
        timings=timings,
    )
