"""``execute(code=...)``: deploy -> wait until ready -> invoke -> delete, always deleting."""

from __future__ import annotations

import json
import time

from .client import Client, HksError, quota_wait
from .execution import Execution, ExecutionError
from .sessions import (  # noqa: F401  (functions.session())
    LANGUAGES,
    AsyncSession,
    Session,
    execute_fast,
    session,
)


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
    ``HksError`` when the platform refused a request. Every outcome of the code itself comes back in
    ``Execution.error``: what it raised, ``TimeoutError`` for a run past ``timeout`` seconds,
    ``MemoryError`` ("out of memory") when the sandbox's memory limit killed it, ``ProcessLimitError`` when
    it hit the process limit, ``ExecutionError`` when its process ended without an answer.

    Python, Node and TypeScript (``language="typescript"``: its types stripped, not checked) code without
    ``files`` takes the fast path (a pre-started sandbox, no deploy; sessions.py), or the deploy path where
    the platform has none. Past a quota of the project (executions at once, per minute, CPU seconds a day)
    the platform answers 429 with ``Retry-After``; ``wait_for_quota`` seconds makes the SDK wait as it says
    and retry, for that long at most: a 429 whose Retry-After is past the remaining wait is raised
    (``HksError``/``DeployError``, status 429) at once.
    """
    own_client = client is None
    client = client or Client()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    name = ""
    try:
        if language in LANGUAGES and not files:  # fast path: a pre-started sandbox (sessions.py)
            fast = execute_fast(
                code,
                language=language,
                env=env,
                timeout=timeout,
                client=client,
                wait_for_quota=wait_for_quota,
            )
            if fast is not None:
                return fast
        deployed = quota_wait(
            lambda: client.deploy(code=code, runtime=language, env=env, files=files, timeout_seconds=timeout),
            wait_for_quota,
        )
        name = deployed["name"]
        client.wait_ready(name, timeout=ready_timeout)
        timings["deploy_ms"] = (time.perf_counter() - started) * 1000
        invoked = time.perf_counter()
        response = client.invoke(name, timeout=timeout + 30)
        timings["invoke_ms"] = (time.perf_counter() - invoked) * 1000
        return _execution(response, name, timings, timeout)
    finally:
        if name:
            try:
                client.delete(name)
            except HksError:
                pass  # the platform's expiry collects it
        if own_client:
            client.close()


# What the platform's X-Hks-Failure header names, as the error the code's run ends with.
FAILURES = {
    "timeout": ("TimeoutError", "the code did not finish within {timeout} s"),
    "out-of-memory": ("MemoryError", "out of memory: the sandbox's memory limit was reached"),
    "process-limit": ("ProcessLimitError", "the code hit the sandbox's process limit (too many processes)"),
    "crashed": ("ExecutionError", "the sandbox's process ended without answering"),
    "unreachable": ("ExecutionError", "the sandbox could not be reached"),
}


def _execution(response: dict, name: str, timings: dict[str, float], timeout: int = 0) -> Execution:
    """Every answer of the invoke is an outcome of the code: its JSON result, or the reason it has none."""
    status = response["status"]
    if status == 200:
        try:
            return Execution.from_response(json.loads(response["body"]), function=name, timings=timings)
        except (ValueError, TypeError):
            pass
    headers = {str(k).lower(): str(v) for k, v in (response.get("headers") or {}).items()}
    failure = headers.get("x-hks-failure") or ("timeout" if status == 504 else "")
    reason, text = FAILURES.get(failure, ("ExecutionError", "the code's run ended without a result"))
    detail = str(response.get("body", ""))[:2000].strip()
    return Execution(
        error=ExecutionError(name=reason, value=f"{text.format(timeout=timeout)} (HTTP {status}: {detail})"),
        exit_code=1,
        function=name,
        timings=timings,
    )
