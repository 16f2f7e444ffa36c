"""A session's Python kernel: runs code in one persistent namespace, reporting events as JSON lines.

Started by session_agent.py inside the session's sandbox (standard library only), or as a sandbox of its
own for a one-shot run (``standalone()``: hks_runtime/oneshot.py, no agent). Requests arrive one JSON
line at a time on the fd HKS_KERNEL_IN (``{"code": ..., "env": {...}}``); events go to the fd HKS_KERNEL_OUT,
in the shape of E2B's code interpreter stream: ``number_of_executions``, ``stdout``/``stderr`` (what ``print``
writes), ``result`` (the last expression's value, and a PNG per open matplotlib figure), ``error`` (name,
value, traceback) and ``end_of_execution``. SIGINT interrupts the running code (KeyboardInterrupt).
"""

# What every start pays for is kept to what every run needs: the C modules _ast (compile() parses to an AST
# with PyCF_ONLY_AST, without the ast module and the enum, contextlib and textwrap it pulls in) and _thread;
# traceback (linecache, tokenize) and base64 are imported by the runs that need them. On the 2-core machine
# these imports were ~12 ms of a kernel's ~40 ms start, paid by every one-shot run of a cold burst.
import _ast
import _thread
import builtins
import io
import json
import os
import sys

_lock = _thread.allocate_lock()
_out = None  # the event fd, opened by main()
_FILENAME = "<cell>"


def emit(event: dict) -> None:
    with _lock:
        _out.write(json.dumps(event) + "\n")
        _out.flush()


class _Stream(io.TextIOBase):
    def __init__(self, name: str):
        self.name = name

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            emit({"type": self.name, "text": str(text)})
        return len(text)


_REPRS = (
    ("_repr_html_", "html"),
    ("_repr_markdown_", "markdown"),
    ("_repr_svg_", "svg"),
    ("_repr_png_", "png"),
    ("_repr_jpeg_", "jpeg"),
    ("_repr_latex_", "latex"),
    ("_repr_json_", "json"),
)


def _result(value, *, main: bool) -> dict:
    text = repr(value)
    if isinstance(value, str) and len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]  # as E2B's interpreter shows a string: without its quotes
    result = {"type": "result", "text": text, "is_main_result": main}
    for method, key in _REPRS:
        rich = getattr(value, method, None)
        if callable(rich):
            try:
                data = rich()
            except Exception:  # noqa: BLE001 - a broken _repr_ never fails the run
                continue
            if isinstance(data, bytes):
                import base64

                data = base64.b64encode(data).decode()
            if data is not None:
                result[key] = data
    try:
        json.dumps(value)
        result["value"] = value  # HKS extra (E2B's SDK drops unknown keys): the value itself, when JSON
    except (TypeError, ValueError):
        pass
    return result


def _figures() -> None:
    """Every open matplotlib figure becomes a PNG result (as E2B's charts), then is closed."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return
    import base64

    for number in pyplot.get_fignums():
        figure = pyplot.figure(number)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        emit(
            {
                "type": "result",
                "text": repr(figure),
                "png": base64.b64encode(buffer.getvalue()).decode(),
                "is_main_result": False,
            }
        )
    pyplot.close("all")


def _traceback(exc: BaseException) -> str:
    try:
        import traceback
    except BaseException:  # noqa: BLE001 - a MemoryError may leave no room to import it: the error still says
        return f"{type(exc).__name__}: {exc}\n"
    frames = traceback.extract_tb(exc.__traceback__)
    keep = [f for f in frames if f.filename != __file__]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(keep)]
    return "".join(lines + traceback.format_exception_only(type(exc), exc))


def run(code: str, namespace: dict) -> None:
    tree = compile(code, _FILENAME, "exec", _ast.PyCF_ONLY_AST)  # as ast.parse does
    last = None
    if tree.body and isinstance(tree.body[-1], _ast.Expr):
        last = _ast.Expression(tree.body.pop().value)
    exec(compile(tree, _FILENAME, "exec"), namespace)
    if last is not None:
        value = eval(compile(last, _FILENAME, "eval"), namespace)
        if value is not None:
            emit(_result(value, main=True))
    _figures()


def main() -> None:
    global _out
    _out = os.fdopen(int(os.environ["HKS_KERNEL_OUT"]), "w", buffering=1, encoding="utf-8")
    requests = os.fdopen(int(os.environ["HKS_KERNEL_IN"]), "r", encoding="utf-8")
    sys.stdout, sys.stderr = _Stream("stdout"), _Stream("stderr")
    sys.stdin = io.StringIO("")
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    count = 0
    emit({"type": "ready"})
    for line in requests:
        try:
            request = json.loads(line)
            count += 1
            emit({"type": "number_of_executions", "execution_count": count})
            saved = dict(os.environ)
            os.environ.update({str(k): str(v) for k, v in (request.get("env") or {}).items()})
            try:
                run(request["code"], namespace)
            finally:
                os.environ.clear()
                os.environ.update(saved)
        except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt included
            error = {"name": type(exc).__name__, "value": str(exc), "traceback": _traceback(exc)}
            emit({"type": "error", **error})
        finally:
            emit({"type": "end_of_execution"})


def standalone() -> None:
    """The kernel as the sandbox's only program (a one-shot standby): its two pipes, which the runtime
    passed at its own fd numbers, moved to 3 (requests) and 4 (events); every other fd above stderr closed,
    whatever its number (an inherited fd may lie above this sandbox's open-files limit, where closerange
    does not reach); named session_kernel in ps and /proc, as when the agent forks it. Then ``main()``."""
    for fd, name in ((3, "HKS_KERNEL_IN"), (4, "HKS_KERNEL_OUT")):
        given = int(os.environ[name])
        if given != fd:
            os.dup2(given, fd)
        os.environ[name] = str(fd)
    try:
        open_fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        open_fds = []
    for fd in open_fds:
        if fd > 4:
            try:
                os.close(fd)
            except OSError:
                pass
    os.closerange(5, os.sysconf("SC_OPEN_MAX"))
    try:
        with open("/proc/self/comm", "w") as comm:
            comm.write("session_kernel")
    except OSError:
        pass
    main()


if __name__ == "__main__":
    main()
