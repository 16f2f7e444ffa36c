"""Runs an agent's code once per request and answers with what happened, as JSON.

The code lives beside this file in ``agent_code.py``. Its last expression, if any, is the result. Output is
both captured for the answer and passed through to the function's own log.
"""

import ast
import contextlib
import io
import json
import os
import sys
import time
import traceback
from pathlib import Path

CODE = (Path(__file__).with_name("agent_code.py")).read_text()


class _Tee(io.TextIOBase):
    def __init__(self, real):
        self.real, self.buffer_ = real, io.StringIO()

    def write(self, text):
        self.real.write(text)
        return self.buffer_.write(text)

    def flush(self):
        self.real.flush()


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def run(code: str, server_pid: int | None = None) -> dict:
    out, err = _Tee(sys.stdout), _Tee(sys.stderr)
    result, error, exit_code = None, None, 0
    started = time.perf_counter()
    namespace = {"__name__": "__main__"}
    try:
        tree = ast.parse(code, "<agent>", "exec")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            exec(compile(tree, "<agent>", "exec"), namespace)
            if last is not None:
                result = eval(compile(ast.Expression(last.value), "<agent>", "eval"), namespace)
    except SystemExit as exc:
        exit_code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # noqa: BLE001 - everything the code raises is its result
        exit_code = 1
        error = {"name": type(exc).__name__, "value": str(exc), "traceback": traceback.format_exc()}
    if server_pid is not None and os.getpid() != server_pid:  # a process the code forked: only the server
        # answers the request
        os._exit(exit_code)
    return {
        "stdout": out.buffer_.getvalue(),
        "stderr": err.buffer_.getvalue(),
        "result": _jsonable(result),
        "error": error,
        "exit_code": exit_code,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
    }


class Function:
    async def handle(self, scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        body = json.dumps(run(CODE, server_pid=os.getpid())).encode()
        headers = [[b"content-type", b"application/json"]]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def new():
    return Function()
