"""The agent inside a session's sandbox: code, files and commands over HTTP (standard library only).

Started by hks_runtime/sessions.py under the restricted profile with a listening socket inherited as
HKS_LISTEN_FD (socket activation: no network of its own). It starts its kernel (session_kernel.py) at once,
then waits for one JSON line on stdin, ``{"token": ...}``, before serving: so a pre-started agent can be
handed to a session later. Every request must carry that token in ``X-HKS-Agent-Token``; only the runtime
daemon and the portal know it.

The endpoints are the wire protocols E2B's SDKs speak, written from their public definitions (envd's
``envd.yaml``, ``process.proto`` and ``filesystem.proto``; the code interpreter's ``/execute`` stream):

    GET  /health                                   204
    POST /execute                                  NDJSON stream of a kernel's events (``context_id``)
    GET|POST /contexts, DELETE /contexts/{id}, POST /contexts/{id}/restart    kernels ("default" first)
    POST /hks/interrupt[?context_id=]              SIGINT to a kernel
    GET  /files?path=P                             the file's bytes
    POST /files[?path=P]                           multipart/form-data ("file" parts) or octet-stream
    POST /filesystem.Filesystem/{ListDir,Stat,MakeDir,Remove,Move}       Connect unary, JSON
    POST /process.Process/Start                    Connect server stream (connect+json envelopes)
    POST /process.Process/{SendSignal,List}        Connect unary, JSON
    POST /hks/commands                             the same run as NDJSON lines (for hks_sdk)
    GET  /hks/usage                                {"cpu_seconds": ...}: what this sandbox has used (a pod's
                                                   own report, read by the portal before it deletes the pod)

Relative paths are resolved against /home/user, the session's writable home.

The runtime starts the agent as ``import session_agent; session_agent.main()`` with its bytecode cached
beside it (the runtime compiles it: a script would be compiled at every start) and
``HKS_SESSION_EARLY_KERNEL=1``: the default Python kernel is then forked at the agent's very start, before
the agent imports its HTTP server (``_early_kernel``). It begins from a bare interpreter, as if started on
its own, with only its own pipes open (stdin /dev/null; the listening socket and the agent's stdin, which
carries the token, closed), and does its imports on one core while the agent does its own on the other,
instead of being a second interpreter started once the agent is up. Kernels started later (restarts, new
contexts) are processes of their own. The agent prints ``hks-agent-ready`` on stdout once its kernel is up
(the runtime bounds the agents starting at once by it).

Kernels are Python (session_kernel.py, the "default" context) or JavaScript (session_kernel.js on the Node
the runtime gives as HKS_SESSION_NODE); an /execute with ``language`` "javascript" (or "js", "node") and no
context runs in the session's default JavaScript context ("default-javascript"), started at its first use -
or ahead, on a ``{"start": "javascript"}`` line before the token (a Node-ready standby) or in the token's
line, so that a session's first JavaScript run does not wait for Node. TypeScript ("typescript", "ts") is
the same Node kernel told to strip each cell's types (``"typescript": true`` on its request line); as in
E2B, it has a default context of its own ("default-typescript", its own state), and whichever of the two
default contexts is used first takes the Node kernel started ahead. (One-shot runs take no agent: the
runtime runs a bare kernel for them, hks_runtime/oneshot.py.)
"""

from __future__ import annotations

import os
import sys

HOME = os.environ.get("HKS_SESSION_HOME", "/home/user")
ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": HOME,
    "LANG": "C.UTF-8",
    "MPLBACKEND": "Agg",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}


def _close_from(lowest: int) -> None:
    """Close every fd from ``lowest`` up, wherever it is numbered (the inherited listening socket keeps the
    daemon's number, which may lie above this sandbox's open-files limit)."""
    try:
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        fds = []
    listen = os.environ.get("HKS_LISTEN_FD", "")
    for fd in [*fds, *([int(listen)] if listen.isdigit() else [])]:
        if fd >= lowest:
            try:
                os.close(fd)
            except OSError:
                pass
    # and by range up to the limit, should /proc not say (not close_range: seccomp may refuse it)
    os.closerange(lowest, os.sysconf("SC_OPEN_MAX"))


def _early_kernel() -> tuple[int, int, int, int, int]:
    """Fork the default Python kernel now, from the bare interpreter (see the module docstring):
    (pid, its request pipe, its event pipe, its stdout, its stderr)."""
    kernel = os.path.join(os.path.dirname(os.path.abspath(__file__)), "session_kernel.py")
    req_r, req_w = os.pipe()
    out_r, out_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    stderr_r, stderr_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the kernel: nothing of the agent's but the interpreter (no thread runs yet)
        status = 1
        try:
            null = os.open(os.devnull, os.O_RDONLY)
            for fd, target in ((null, 0), (stdout_w, 1), (stderr_w, 2), (req_r, 3), (out_w, 4)):
                os.dup2(fd, target)
            _close_from(5)  # the listening socket, the other pipe ends: only the kernel's own stay open
            with open("/proc/self/comm", "w") as comm:  # its name in ps and /proc, as when run as a script
                comm.write("session_kernel")
            os.environ.clear()
            os.environ.update({**ENV, "HKS_KERNEL_IN": "3", "HKS_KERNEL_OUT": "4"})
            os.makedirs(HOME, exist_ok=True)
            os.chdir(HOME)
            sys.argv = [kernel]
            here = os.path.dirname(kernel)
            sys.path[:] = [here] + [p for p in sys.path if p not in ("", here)]  # as when run as a script
            import session_kernel  # its bytecode, as the agent's (sessions.py compiles both)

            session_kernel.main()
            status = 0
        finally:
            os._exit(status)
    for fd in (req_r, out_w, stdout_w, stderr_w):
        os.close(fd)
    return pid, req_w, out_r, stdout_r, stderr_r


_EARLY = _early_kernel() if os.environ.pop("HKS_SESSION_EARLY_KERNEL", "") == "1" else None
if _EARLY is not None:
    # The agent speaks plain HTTP on loopback: OpenSSL (ssl, _hashlib; http.client and hmac import them when
    # they can) is a fifth of its start-up. The kernel, forked above, and every later process import them.
    sys.modules.update(ssl=None, _hashlib=None)

import base64  # noqa: E402 - after the kernel's fork, which must not carry the agent's imports
import datetime as dt  # noqa: E402
import hmac  # noqa: E402
import json  # noqa: E402
import queue  # noqa: E402
import select  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import stat  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import parse_qs, urlparse  # noqa: E402

KERNEL = str(Path(__file__).with_name("session_kernel.py"))
NODE_KERNEL = str(Path(__file__).with_name("session_kernel.js"))
LANGUAGES = {None: "python", "": "python", "python": "python", "py": "python", "python3": "python"}
LANGUAGES.update(dict.fromkeys(("javascript", "js", "node", "nodejs"), "javascript"))
LANGUAGES.update(dict.fromkeys(("typescript", "ts"), "typescript"))
NODE_LANGUAGES = ("javascript", "typescript")  # run by session_kernel.js
MAX_CONTEXTS = 8  # kernels per session (each one a process)
_CONNECT_STATUS = {
    "invalid_argument": 400,
    "unauthenticated": 401,
    "not_found": 404,
    "already_exists": 409,
    "deadline_exceeded": 504,
    "internal": 500,
}


class RpcError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


# --- kernel --------------------------------------------------------------------------------------------


class _Forked:
    """The early-forked kernel, with what Kernel uses of a Popen: pid, stdout, stderr, poll, wait, kill."""

    def __init__(self, pid: int, stdout_fd: int, stderr_fd: int):
        self.pid = pid
        self.returncode: int | None = None
        self.stdout = os.fdopen(stdout_fd, "rb")
        self.stderr = os.fdopen(stderr_fd, "rb")
        self._lock = threading.Lock()

    def _reap(self, flags: int) -> int | None:
        with self._lock:
            if self.returncode is None:
                try:
                    pid, status = os.waitpid(self.pid, flags)
                except ChildProcessError:
                    pid, status = self.pid, 0
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode

    def poll(self) -> int | None:
        return self._reap(os.WNOHANG)

    def wait(self) -> int:
        return self._reap(0)

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)


class Kernel:
    """A kernel subprocess (Python, or JavaScript/TypeScript: session_kernel.js); one execution at a time.
    Restarted (state lost) when it dies."""

    def __init__(self, cwd: str = HOME, language: str = "python"):
        self.lock = threading.Lock()
        self.cwd = cwd
        self.language = language
        self.events: queue.Queue = queue.Queue()
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        global _EARLY
        if _EARLY is not None and self.language == "python" and self.cwd == HOME:
            pid, req_w, out_r, stdout_r, stderr_r = _EARLY
            _EARLY = None
            self.proc = _Forked(pid, stdout_r, stderr_r)
            self._attach(req_w, out_r)
            return
        req_r, req_w = os.pipe()
        out_r, out_w = os.pipe()
        env = {**ENV, "HKS_KERNEL_IN": str(req_r), "HKS_KERNEL_OUT": str(out_w)}
        if self.language in NODE_LANGUAGES:
            node = os.environ.get("HKS_SESSION_NODE", "")
            if not node or not os.path.exists(node):
                raise RuntimeError("Node.js is not available in this sandbox")
            argv = [node, "--max-old-space-size=192", NODE_KERNEL]
        else:
            argv = [sys.executable, "-u", KERNEL]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(req_r, out_w),
            env=env,
            cwd=self.cwd if os.path.isdir(self.cwd) else "/",
        )
        os.close(req_r)
        os.close(out_w)
        self._attach(req_w, out_r)

    def _attach(self, req_w: int, out_r: int) -> None:
        self.requests = os.fdopen(req_w, "w", buffering=1, encoding="utf-8")
        self.events = events = queue.Queue()
        threading.Thread(target=self._pump_events, args=(out_r, events), daemon=True).start()
        for name, pipe in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr)):
            threading.Thread(target=self._pump_fd, args=(name, pipe, events), daemon=True).start()
        ready = events.get(timeout=60)
        if ready.get("type") != "ready":
            raise RuntimeError(f"kernel did not start: {ready}")

    @staticmethod
    def _pump_events(fd: int, events: queue.Queue) -> None:
        with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as stream:
            for line in stream:
                try:
                    events.put(json.loads(line))
                except ValueError:
                    continue
        events.put({"type": "_exit"})

    @staticmethod
    def _pump_fd(name: str, pipe, events: queue.Queue) -> None:
        # Output written below print() (os.write, child processes) arrives here.
        for chunk in iter(lambda: pipe.read1(65536), b""):
            events.put({"type": name, "text": chunk.decode(errors="replace")})
        events.put({"type": "_eof"})  # (what a kernel that died printed last is in before this: _died)

    def interrupt(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def execute(self, code: str, env: dict | None, timeout: float | None, gone=None):
        """Yield the events of one execution; past ``timeout`` seconds interrupt it (then restart).

        ``gone()`` says whether the caller went away (E2B's SDK times a run out on its side, sending no
        timeout): checked every half second while no event comes; the run is then interrupted."""
        with self.lock:
            while not self.events.empty():  # stray output after the previous execution
                self.events.get_nowait()
            request = {"code": code, "env": env or {}}
            if self.language == "typescript":
                request["typescript"] = True  # session_kernel.js strips the cell's types first
            try:
                self.requests.write(json.dumps(request) + "\n")
            except OSError:
                self.restart()
                self.requests.write(json.dumps(request) + "\n")
            deadline = time.monotonic() + timeout if timeout else None
            interrupted_at = None
            heap_oom, eofs = False, 0
            while True:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                if gone is not None and interrupted_at is None:
                    wait = 0.5 if wait is None else min(wait, 0.5)
                try:
                    event = self.events.get(timeout=wait)
                except queue.Empty:
                    if deadline is None or time.monotonic() < deadline:  # only the caller check woke us
                        if gone():
                            self.interrupt()
                            interrupted_at = time.monotonic()
                            deadline = interrupted_at + 2.0
                        continue
                    if interrupted_at is None:
                        interrupted_at = time.monotonic()
                        self.interrupt()
                        deadline = time.monotonic() + 2.0
                        yield _timeout_error(timeout, restarted=False)
                        continue
                    self.restart()
                    yield _timeout_error(timeout, restarted=True)
                    yield {"type": "end_of_execution"}
                    return
                if event["type"] == "_exit":
                    yield from self._died(heap_oom, eofs)
                    yield {"type": "end_of_execution"}
                    return
                if interrupted_at is not None and event["type"] == "error":
                    continue  # the KeyboardInterrupt our own interrupt caused: the timeout was reported
                if event["type"] == "_eof":
                    eofs += 1
                    continue
                if event["type"] == "stderr" and JS_HEAP_OOM in event["text"]:
                    heap_oom = True
                yield event
                if event["type"] == "end_of_execution":
                    return

    def _died(self, heap_oom: bool, eofs: int):
        """The events after the kernel exited: the rest of its output, then why (restarted unless one-shot).
        Node out of heap (--max-old-space-size) is a MemoryError, as the sandbox's OOM kill is."""
        code = self.proc.wait()
        until = time.monotonic() + 1.0  # its last output (V8's fatal error) may still be on its way, until
        while eofs < 2 and (left := until - time.monotonic()) > 0:  # both pipes end (a child may hold them)
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                break
            eofs += event["type"] == "_eof"
            if event["type"] in ("stdout", "stderr"):
                heap_oom = heap_oom or (event["type"] == "stderr" and JS_HEAP_OOM in event["text"])
                yield event
        tail = "; restarted, its state lost"
        if heap_oom:
            value = f"out of memory: the JavaScript heap limit was reached{tail}"
            yield {"type": "error", "name": "MemoryError", "value": value, "traceback": ""}
        else:
            yield {
                "type": "error",
                "name": "KernelDied",
                "value": f"the kernel exited ({code}){tail}",
                "traceback": "",
            }
        self.start()


JS_HEAP_OOM = "JavaScript heap out of memory"  # what V8 prints when --max-old-space-size is reached
NODE_READY = "hks-node-ready"  # printed once a JavaScript kernel started ahead is up (sessions.py)


def _timeout_error(timeout, *, restarted: bool) -> dict:
    tail = "; the kernel was restarted and its state lost" if restarted else ""
    return {
        "type": "error",
        "name": "TimeoutError",
        "value": f"execution exceeded {timeout or 0:g} s and was interrupted{tail}",
        "traceback": "",
    }


# --- commands ------------------------------------------------------------------------------------------


class Commands:
    def __init__(self):
        self.running: dict[int, tuple[subprocess.Popen, str]] = {}
        self.lock = threading.Lock()

    def run(self, cmd: str, args: list[str], envs: dict, cwd: str | None, timeout: float | None, tag: str):
        """Yield ("start", pid), ("stdout"|"stderr", bytes)..., ("end", exit_code, status)."""
        proc = subprocess.Popen(
            [cmd, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**ENV, **{str(k): str(v) for k, v in envs.items()}},
            cwd=_resolve(cwd) if cwd else HOME,
            start_new_session=True,
        )
        with self.lock:
            self.running[proc.pid] = (proc, tag)
        events: queue.Queue = queue.Queue()
        readers = [
            threading.Thread(target=_pump_bytes, args=(name, pipe, events), daemon=True)
            for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr))
        ]
        for reader in readers:
            reader.start()
        yield ("start", proc.pid)
        deadline = time.monotonic() + timeout if timeout else None
        open_pipes = 2
        try:
            while open_pipes:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    name, data = events.get(timeout=wait)
                except queue.Empty:
                    _kill_group(proc)
                    deadline = None
                    continue
                if data is None:
                    open_pipes -= 1
                else:
                    yield (name, data)
            code = proc.wait()
        finally:
            if proc.poll() is None:
                _kill_group(proc)
                proc.wait()
            with self.lock:
                self.running.pop(proc.pid, None)
        status = f"exit status {code}" if code >= 0 else f"signal: {signal.Signals(-code).name}"
        yield ("end", code if code >= 0 else 128 - code, status)

    def signal(self, pid: int, sig: int) -> bool:
        with self.lock:
            entry = self.running.get(pid)
        if entry is None:
            return False
        with _suppress():
            os.killpg(entry[0].pid, sig)
        return True


def _pump_bytes(name: str, pipe, events: queue.Queue) -> None:
    for chunk in iter(lambda: pipe.read1(65536), b""):
        events.put((name, chunk))
    events.put((name, None))


def _kill_group(proc: subprocess.Popen) -> None:
    with _suppress():
        os.killpg(proc.pid, signal.SIGKILL)


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        return kind is not None and issubclass(kind, OSError)


# --- files ---------------------------------------------------------------------------------------------


def _resolve(path: str) -> str:
    if not path:
        raise RpcError("invalid_argument", "path is required")
    return os.path.normpath(path if path.startswith("/") else os.path.join(HOME, path))


def _entry(path: str) -> dict:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        kind = "FILE_TYPE_SYMLINK"
    elif stat.S_ISDIR(st.st_mode):
        kind = "FILE_TYPE_DIRECTORY"
    else:
        kind = "FILE_TYPE_FILE"
    modified = dt.datetime.fromtimestamp(st.st_mtime, dt.UTC).isoformat().replace("+00:00", "Z")
    entry = {
        "name": os.path.basename(path) or "/",
        "type": kind,
        "path": path,
        "size": str(st.st_size),
        "mode": stat.S_IMODE(st.st_mode),
        "permissions": stat.filemode(st.st_mode),
        "owner": "user" if st.st_uid == os.getuid() else str(st.st_uid),
        "group": "user" if st.st_gid == os.getgid() else str(st.st_gid),
        "modifiedTime": modified,
    }
    if kind == "FILE_TYPE_SYMLINK":
        entry["symlinkTarget"] = os.readlink(path)
        entry["isSymlink"] = True
    return entry


def _existing(path: str) -> str:
    path = _resolve(path)
    if not os.path.lexists(path):
        raise RpcError("not_found", f"path {path} does not exist")
    return path


def fs_list_dir(req: dict) -> dict:
    root = _existing(req.get("path", ""))
    if not os.path.isdir(root):
        raise RpcError("invalid_argument", f"path {root} is not a directory")
    depth = max(1, int(req.get("depth") or 1))
    entries = []
    todo = [(root, 1)]
    while todo:
        directory, level = todo.pop()
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            entries.append(_entry(path))
            if level < depth and os.path.isdir(path) and not os.path.islink(path):
                todo.append((path, level + 1))
    return {"entries": entries}


def fs_stat(req: dict) -> dict:
    return {"entry": _entry(_existing(req.get("path", "")))}


def fs_make_dir(req: dict) -> dict:
    path = _resolve(req.get("path", ""))
    if os.path.lexists(path):
        raise RpcError("already_exists", f"path {path} already exists")
    os.makedirs(path)
    return {"entry": _entry(path)}


def fs_remove(req: dict) -> dict:
    path = _existing(req.get("path", ""))
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)
    return {}


def fs_move(req: dict) -> dict:
    source, destination = _existing(req.get("source", "")), _resolve(req.get("destination", ""))
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    os.rename(source, destination)
    return {"entry": _entry(destination)}


def write_file(path: str, data: bytes) -> dict:
    path = _resolve(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    return {"name": os.path.basename(path), "type": "file", "path": path}


# --- HTTP ----------------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hks-session-agent"
    disable_nagle_algorithm = True  # streamed chunks leave at once (no 40 ms delayed-ACK stalls)

    def log_message(self, fmt, *args):  # no access log: the session's log is its own business
        pass

    # plumbing

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json") -> None:
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and status != 204:
            self.wfile.write(body)

    def _json(self, status: int, data) -> None:
        self._send(status, json.dumps(data).encode())

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"code": status, "message": message})

    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _gone(self) -> bool:
        """Has the caller closed its connection (readable with nothing to read)?"""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _authorised(self) -> bool:
        given = self.headers.get("X-HKS-Agent-Token", "")
        if hmac.compare_digest(given.encode(), self.server.token.encode()):
            return True
        self._error(401, "missing or wrong agent token")
        return False

    # dispatch

    def do_GET(self):
        if not self._authorised():
            return
        url = urlparse(self.path)
        if url.path in ("/health", "/hks/health"):
            self._send(204)
        elif url.path == "/files":
            self._read_file(parse_qs(url.query))
        elif url.path == "/contexts":
            self._json(200, [_context(cid, k) for cid, k in list(self.server.kernels.items())])
        elif url.path == "/hks/usage":
            self._json(200, {"cpu_seconds": cpu_seconds()})
        else:
            self._error(404, f"no route {url.path}")

    def do_POST(self):
        if not self._authorised():
            return
        url = urlparse(self.path)
        body = self._body()
        route = url.path
        try:
            if route == "/execute":
                self._execute(json.loads(body or b"{}"))
            elif route == "/hks/interrupt":
                kernel = self.server.kernels.get(parse_qs(url.query).get("context_id", ["default"])[0])
                if kernel is None:
                    return self._error(404, "no such context")
                kernel.interrupt()
                self._send(204)
            elif route == "/contexts":
                self._create_context(json.loads(body or b"{}"))
            elif route.startswith("/contexts/") and route.endswith("/restart"):
                kernel = self.server.kernels.get(route.split("/")[2])
                if kernel is None:
                    return self._error(404, "no such context")
                with kernel.lock:
                    kernel.restart()
                self._send(204)
            elif route == "/files":
                self._write_files(parse_qs(url.query), body)
            elif route == "/process.Process/Start":
                self._process_start(body)
            elif route == "/hks/commands":
                self._hks_command(json.loads(body or b"{}"))
            elif route.startswith(("/filesystem.Filesystem/", "/process.Process/")):
                self._unary(route, body)
            else:
                self._error(404, f"no route {route}")
        except ValueError as exc:
            self._error(400, f"bad request: {exc}")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_DELETE(self):
        if not self._authorised():
            return
        route = urlparse(self.path).path
        parts = route.split("/")
        if len(parts) != 3 or parts[1] != "contexts":
            return self._error(404, f"no route {route}")
        if parts[2] in ("default", "default-javascript", "default-typescript"):
            return self._error(400, "the default context cannot be removed (restart it instead)")
        kernel = self.server.kernels.pop(parts[2], None)
        if kernel is None:
            return self._error(404, "no such context")
        kernel.stop()
        self._send(204)

    # code

    def _create_context(self, req: dict) -> None:
        language = _language(req.get("language"))
        if language is None:
            return self._error(
                400,
                "contexts are Python, JavaScript or TypeScript (language python, javascript or typescript)",
            )
        if len(self.server.kernels) >= MAX_CONTEXTS:
            return self._error(400, f"at most {MAX_CONTEXTS} contexts per session")
        cwd = _resolve(req.get("cwd") or HOME)
        context_id = os.urandom(8).hex()
        try:
            kernel = Kernel(cwd, language)
        except RuntimeError as exc:
            return self._error(503, str(exc))
        self.server.kernels[context_id] = kernel
        self._json(200, _context(context_id, kernel))

    def _execute(self, req: dict) -> None:
        code = req.get("code")
        if not isinstance(code, str):
            return self._error(400, "code must be a string")
        language = _language(req.get("language"))
        if language is None:
            return self._error(
                404, f"language {req.get('language')!r}: only Python, JavaScript and TypeScript run here"
            )
        if req.get("context_id"):
            kernel = self.server.kernels.get(req["context_id"])
        else:
            try:
                kernel = self.server.default_kernel(language)
            except RuntimeError as exc:
                return self._error(503, str(exc))
        if kernel is None:
            return self._error(404, f"context {req.get('context_id')} not found")
        timeout = req.get("timeout")
        self._start_stream("application/x-ndjson")
        events = kernel.execute(code, req.get("env_vars"), float(timeout) if timeout else None, self._gone)
        try:
            for event in events:
                if event["type"] in ("stdout", "stderr"):
                    event["timestamp"] = dt.datetime.now(dt.UTC).isoformat()
                self._chunk(json.dumps(event).encode() + b"\n")
            self._end_stream()
        except (BrokenPipeError, ConnectionResetError):
            kernel.interrupt()  # the caller went away: stop its code, as E2B's server does
            for _ in events:
                pass

    # files

    def _read_file(self, query: dict) -> None:
        try:
            path = _resolve(query.get("path", [""])[0])
        except RpcError as exc:
            return self._error(400, str(exc))
        if not os.path.isfile(path):
            return self._error(404, f"file {path} does not exist")
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            return self._error(403 if isinstance(exc, PermissionError) else 400, str(exc))
        self._send(200, data, "application/octet-stream")

    def _write_files(self, query: dict, body: bytes) -> None:
        path = query.get("path", [""])[0]
        content_type = self.headers.get("Content-Type", "")
        try:
            if content_type.startswith("multipart/form-data"):
                header = f"Content-Type: {content_type}\r\n\r\n".encode()
                from email.parser import BytesParser  # only here: the email package is slow to import
                from email.policy import HTTP

                message = BytesParser(policy=HTTP).parsebytes(header + body)
                parts = [p for p in message.iter_parts() if p.get_param("name", header="content-disposition")]
                written = [
                    write_file(path or part.get_filename() or "", part.get_payload(decode=True) or b"")
                    for part in parts
                ]
            else:
                written = [write_file(path, body)]
        except RpcError as exc:
            return self._error(400, str(exc))
        except OSError as exc:
            return self._error(507 if exc.errno == 28 else 400, str(exc))
        self._json(200, written)

    # Connect-RPC

    def _unary(self, route: str, body: bytes) -> None:
        methods = {
            "/filesystem.Filesystem/ListDir": fs_list_dir,
            "/filesystem.Filesystem/Stat": fs_stat,
            "/filesystem.Filesystem/MakeDir": fs_make_dir,
            "/filesystem.Filesystem/Remove": fs_remove,
            "/filesystem.Filesystem/Move": fs_move,
            "/process.Process/SendSignal": self._send_signal,
            "/process.Process/List": self._list_processes,
        }
        method = methods.get(route)
        try:
            if method is None:
                raise RpcError("unimplemented", f"{route} is not supported by this sandbox")
            self._json(200, method(json.loads(body or b"{}")))
        except RpcError as exc:
            status = 501 if exc.code == "unimplemented" else _CONNECT_STATUS.get(exc.code, 500)
            self._json(status, {"code": exc.code, "message": str(exc)})
        except OSError as exc:
            self._json(400, {"code": "invalid_argument", "message": str(exc)})

    def _send_signal(self, req: dict) -> dict:
        pid = int((req.get("process") or {}).get("pid") or 0)
        sig = signal.SIGKILL if req.get("signal") in ("SIGNAL_SIGKILL", 9) else signal.SIGTERM
        if not self.server.commands.signal(pid, sig):
            raise RpcError("not_found", f"process {pid} not found")
        return {}

    def _list_processes(self, req: dict) -> dict:
        with self.server.commands.lock:
            running = list(self.server.commands.running.items())
        processes = [
            {"pid": pid, "tag": tag, "config": {"cmd": proc.args[0], "args": list(proc.args[1:])}}
            for pid, (proc, tag) in running
        ]
        return {"processes": processes}

    def _process_start(self, body: bytes) -> None:
        if self.headers.get("Content-Type", "").startswith("application/connect+"):
            if len(body) < 5:
                raise ValueError("missing Connect envelope")
            (length,) = struct.unpack(">I", body[1:5])
            body = body[5 : 5 + length]
        req = json.loads(body or b"{}")
        config = req.get("process") or {}
        timeout_ms = self.headers.get("Connect-Timeout-Ms")
        timeout = int(timeout_ms) / 1000 if timeout_ms and timeout_ms.isdigit() else None
        self._start_stream("application/connect+json")
        try:
            events = self.server.commands.run(
                config.get("cmd", ""),
                list(config.get("args") or []),
                dict(config.get("envs") or {}),
                config.get("cwd"),
                timeout,
                str(req.get("tag") or ""),
            )
            for event in events:
                self._chunk(_envelope(0, {"event": _process_event(event)}))
            self._chunk(_envelope(2, {}))
        except OSError as exc:
            error = {"error": {"code": "invalid_argument", "message": str(exc)}}
            self._chunk(_envelope(2, error))
        self._end_stream()

    def _hks_command(self, req: dict) -> None:
        cmd = req.get("cmd")
        if not isinstance(cmd, str) or not cmd:
            return self._error(400, "cmd must be a non-empty string")
        timeout = req.get("timeout")
        self._start_stream("application/x-ndjson")
        try:
            events = self.server.commands.run(
                "/bin/bash", ["-c", cmd], dict(req.get("envs") or {}), req.get("cwd"), timeout, ""
            )
            for event in events:
                if event[0] == "start":
                    line = {"type": "start", "pid": event[1]}
                elif event[0] == "end":
                    line = {"type": "end", "exit_code": event[1], "status": event[2]}
                else:
                    line = {"type": event[0], "text": event[1].decode(errors="replace")}
                self._chunk(json.dumps(line).encode() + b"\n")
        except OSError as exc:
            self._chunk(json.dumps({"type": "end", "exit_code": 127, "status": str(exc)}).encode() + b"\n")
        self._end_stream()


def _process_event(event: tuple) -> dict:
    if event[0] == "start":
        return {"start": {"pid": event[1]}}
    if event[0] == "end":
        return {"end": {"exitCode": event[1], "exited": True, "status": event[2]}}
    return {"data": {event[0]: base64.b64encode(event[1]).decode()}}


def _language(value) -> str | None:
    """The kernel ("python", "javascript" or "typescript") a language name asks for; None when it is not one
    we run."""
    if value is not None and not isinstance(value, str):
        return None
    return LANGUAGES.get(value.lower() if value else value)


def _context(context_id: str, kernel: Kernel) -> dict:
    return {"id": context_id, "language": kernel.language, "cwd": kernel.cwd}


def _envelope(flags: int, message: dict) -> bytes:
    data = json.dumps(message).encode()
    return struct.pack(">BI", flags, len(data)) + data


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, sock: socket.socket, token: str):
        super().__init__(sock.getsockname()[:2], Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.token = token
        self.kernels = {"default": Kernel()}
        self.commands = Commands()
        self._starting = threading.Lock()
        self._node_ahead: Kernel | None = None  # started before its first use (listed from then on)
        self._node_thread: threading.Thread | None = None

    def start_javascript(self) -> None:
        """Start the default JavaScript context ahead, in the background (once); a run asking for it
        meanwhile waits for it."""
        if self._node_thread is not None or self.kernels.keys() & {
            "default-javascript",
            "default-typescript",
        }:
            return
        ready = threading.Event()

        def start():
            with self._starting:
                ready.set()
                try:
                    self._node_ahead = Kernel(HOME, "javascript")
                except Exception as exc:  # noqa: BLE001 - no Node here, or it failed: its first use says so
                    print(f"no JavaScript kernel ahead: {exc}", file=sys.stderr)
                    return
                print(NODE_READY, flush=True)  # the runtime offers a Node-ready standby from then on

        self._node_thread = threading.Thread(target=start, daemon=True)
        self._node_thread.start()
        ready.wait()  # the lock is held before anyone can ask for the context

    def default_kernel(self, language: str) -> Kernel:
        """The default context of ``language``; the JavaScript and TypeScript ones are started at their first
        use, the first of them taking the Node kernel started ahead (one program serves both languages)."""
        if language == "python":
            return self.kernels["default"]
        with self._starting:
            kernel = self.kernels.get(f"default-{language}")
            if kernel is None:
                kernel, self._node_ahead = self._node_ahead or Kernel(HOME, language), None
                kernel.language = language  # (what its requests ask: the kernel's program is the same)
                self.kernels[f"default-{language}"] = kernel
            return kernel


def cpu_seconds() -> float | None:
    """CPU seconds this sandbox has used. As a container's init (pid 1: a session pod) its cgroup holds the
    container alone: cgroup v2's ``cpu.stat`` or v1's ``cpuacct.usage`` at the container's cgroup root.
    Otherwise (or without those files: gVisor without cgroupfs) the process tree's own clocks from here
    down, /proc/PID/stat ``utime``+``stime``+``cutime``+``cstime`` (the reaped children's included)."""
    if os.getpid() == 1:
        try:
            with open("/sys/fs/cgroup/cpu.stat") as handle:
                for line in handle:
                    key, _, value = line.partition(" ")
                    if key == "usage_usec":
                        return int(value) / 1e6
        except (OSError, ValueError):
            pass
        for path in ("/sys/fs/cgroup/cpuacct/cpuacct.usage", "/sys/fs/cgroup/cpu,cpuacct/cpuacct.usage"):
            try:
                with open(path) as handle:
                    return int(handle.read()) / 1e9
            except (OSError, ValueError):
                continue
    parents: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        stats[int(entry)] = fields
        parents.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, [os.getpid()]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += sum(int(v) for v in stats[pid][11:15])  # fields 14-17: utime stime cutime cstime
        todo.extend(parents.get(pid, []))
    return round(total / os.sysconf("SC_CLK_TCK"), 6)


def main() -> None:
    sock = socket.socket(fileno=int(os.environ["HKS_LISTEN_FD"]))
    os.makedirs(HOME, exist_ok=True)
    os.chdir(HOME)
    server = Server(sock, token="")
    sys.stdout.buffer.write(b"hks-agent-ready\n")  # the runtime bounds agents starting at once by it
    sys.stdout.flush()
    config = json.loads(sys.stdin.readline() or "{}")  # a pre-started agent waits here for its session
    while config.get("start") == "javascript" and not config.get("token"):  # made Node-ready meanwhile
        server.start_javascript()
        config = json.loads(sys.stdin.readline() or "{}")
    if not config.get("token"):
        sys.exit("no token given; exiting")
    server.token = config["token"]
    if config.get("start") == "javascript":
        server.start_javascript()
    server.serve_forever(poll_interval=3600)


if __name__ == "__main__":
    main()
