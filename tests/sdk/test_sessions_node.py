"""Node sessions end to end on a running platform: E2B's own SDK (``run_code(language="js")``, a
"javascript" context) and ``functions.session(language="node")`` run JavaScript in a Node kernel that keeps
its node:vm context between calls, streams output, reports errors, times out, and stays as contained as
the Python kernel (same sandbox, uid, no network). Cells take ES import declarations, and TypeScript
(``language="ts"``) runs in the same kernel with its types stripped."""

from __future__ import annotations

import time

import pytest

from hks_sdk import functions
from tests.support.sandboxes import kernels_in

from .test_sessions_live import _assert_nothing_left, _held, client, e2b_env, secret  # noqa: F401

pytestmark = pytest.mark.runtime


def test_e2b_javascript_context_keeps_state_streams_and_reports_errors(e2b_env, live_platform):  # noqa: F811
    from e2b_code_interpreter import Sandbox

    sandbox = Sandbox.create(timeout=120)
    held = _held(live_platform, sandbox.sandbox_id)
    try:
        context = sandbox.create_code_context(language="javascript")
        assert context.language == "javascript"
        assert sandbox.run_code("const x = 41", context=context).error is None
        streamed = []
        execution = sandbox.run_code(
            "console.log('step', x)\nx + 1", context=context, on_stdout=lambda m: streamed.append(m.line)
        )
        assert execution.error is None
        assert execution.text == "42"
        assert "".join(execution.logs.stdout) == "step 41\n"
        assert "".join(streamed) == "step 41\n"
        later = "await new Promise((r) => setTimeout(() => r(x * 2), 20))"
        awaited = sandbox.run_code(later, context=context)
        assert awaited.text == "82"
        slow = "await new Promise((r) => setTimeout(() => r('slept'), 1500))"
        assert sandbox.run_code(slow, context=context).text == "slept"  # a quiet run is not cut short

        failed = sandbox.run_code("null.property", context=context)
        assert failed.error.name == "TypeError"
        assert "null" in failed.error.value and "<cell>" in failed.error.traceback
        assert sandbox.run_code("x", context=context).text == "41"  # an error keeps the context

        # language="js" without a context: the session's default JavaScript context, not Python's.
        sandbox.run_code("var y = 'from js'", language="js")
        assert sandbox.run_code("y", language="javascript").text == "from js"
        assert sandbox.run_code("'y' in globals()").text == "False"
        ids = {c.id: c.language for c in sandbox.list_code_contexts()}
        assert ids == {"default": "python", "default-javascript": "javascript", context.id: "javascript"}
    finally:
        sandbox.kill()
    _assert_nothing_left(live_platform, held)


def test_e2b_typescript_runs_with_its_types_stripped_in_its_own_default_context(e2b_env, live_platform):  # noqa: F811
    from e2b_code_interpreter import Sandbox

    sandbox = Sandbox.create(timeout=120)
    held = _held(live_platform, sandbox.sandbox_id)
    try:
        # (awaiting a timer: Node's "stripTypeScriptTypes is experimental" warning would come meanwhile)
        first = "const m: number = await new Promise((r) => setTimeout(() => r(20), 20))\nm + 1"
        awaited = sandbox.run_code(first, language="ts")
        assert (awaited.text, awaited.error, awaited.logs.stderr) == ("21", None, [])
        assert sandbox.run_code("const n: number = 41; n + 1", language="ts").text == "42"
        typed = (
            "interface Point { x: number; y: number }\n"
            "function norm(p: Point): number { return Math.hypot(p.x, p.y) }\n"
            "norm({ x: 3, y: 4 } as Point)"
        )
        assert sandbox.run_code(typed, language="typescript").text == "5"
        enum = "enum Color { Red = 'r', Green = 'g' }\nconst c: Color = Color.Green\nc"  # (transformed)
        assert sandbox.run_code(enum, language="ts").text == "g"
        imported = "import { join } from 'node:path'\nconst p: string = join('a', 'b')\np"
        assert sandbox.run_code(imported, language="ts").text == "a/b"
        failed = sandbox.run_code("const a = 1\nconst bad: = 2", language="ts")
        assert failed.error.name == "SyntaxError"
        assert "<cell>:2" in failed.error.traceback and "bad" in failed.error.traceback
        assert sandbox.run_code("n", language="ts").text == "41"  # an error keeps the context
        # as in E2B, TypeScript's default context is its own: not JavaScript's, not Python's
        assert sandbox.run_code("typeof n", language="js").text == "undefined"
        context = sandbox.create_code_context(language="typescript")
        assert context.language == "typescript"
        assert sandbox.run_code("const s: string = 'own'; s", context=context).text == "own"
        ids = {c.id: c.language for c in sandbox.list_code_contexts()}
        assert ids == {
            "default": "python",
            "default-typescript": "typescript",
            "default-javascript": "javascript",
            context.id: "typescript",
        }
    finally:
        sandbox.kill()
    _assert_nothing_left(live_platform, held)


def test_e2b_javascript_timeout_interrupts_and_keeps_the_context(e2b_env):  # noqa: F811
    from e2b.exceptions import TimeoutException
    from e2b_code_interpreter import Sandbox

    with Sandbox.create(timeout=60) as sandbox:
        sandbox.run_code("let kept = 'still here'", language="js")
        started = time.monotonic()
        with pytest.raises(TimeoutException):
            sandbox.run_code("while (true) {}", language="js", timeout=2)
        # The agent sees the caller go and interrupts the loop, so the context answers again.
        assert sandbox.run_code("kept", language="js", timeout=30).text == "still here"
        assert time.monotonic() - started < 30


def test_hks_sdk_node_session_keeps_state_streams_and_times_out(client, live_platform):  # noqa: F811
    streamed = []
    with functions.session(language="node", timeout=120, client=client) as s:
        held = _held(live_platform, s.id)
        assert s.run("const x = 41").ok
        execution = s.run("console.log('step', x)\nawait Promise.resolve(x + 1)", on_stdout=streamed.append)
        assert (execution.result, execution.stdout) == (42, "step 41\n")
        assert s.run("await new Promise((r) => setTimeout(() => r('slept'), 1500))").result == "slept"
        assert "".join(streamed) == "step 41\n"
        assert s.run("process.stderr.write('warn\\n'); ({a: [1, 2]})").result == {"a": [1, 2]}
        assert s.run("console.error('bad')").stderr == "bad\n"
        failed = s.run("throw new RangeError('too far')")
        assert (failed.error.name, failed.error.value, failed.exit_code) == ("RangeError", "too far", 1)
        timed = s.run("while (true) {}", timeout=1)
        assert timed.error.name == "TimeoutError"
        pending = s.run("await new Promise(() => {})", timeout=1)
        assert pending.error.name == "TimeoutError"
        assert s.run("x").result == 41  # interrupts kept the kernel and its state
        assert s.run("process.env.GREETING", env={"GREETING": "hey"}).result == "hey"
        assert s.run("process.env.GREETING").result is None
        s.files.write("data.json", '{"n": 3}')
        assert s.run("JSON.parse(require('fs').readFileSync('data.json', 'utf8')).n").result == 3
    _assert_nothing_left(live_platform, held)


def test_hks_sdk_node_session_takes_es_imports(client, live_platform):  # noqa: F811
    with functions.session(language="node", timeout=120, client=client) as s:
        held = _held(live_platform, s.id)
        s.files.write("greeting.txt", "hi")
        cell = (
            "import fs from 'fs'; import { join } from 'node:path'; import * as os from 'os'\n"
            "fs.readFileSync(join(os.homedir(), 'greeting.txt'), 'utf8')"
        )
        assert s.run(cell).result == "hi"
        assert s.run(cell).result == "hi"  # run again: its bindings are vars
        s.files.write("m.mjs", "export default 41; export const one = 1")
        s.files.write("c.cjs", "module.exports = { two: 2 }")
        modules = (
            "import answer, { one } from './m.mjs'\n"
            "import * as m from './m.mjs'\n"
            "import c, {\n  two,\n  two as deux,\n} from './c.cjs'\n"
            "[answer + one, m.default, m.one, c.two, two, deux]"
        )
        assert s.run(modules).result == [42, 41, 1, 2, 2, 2]
        assert s.run("(await import('./m.mjs')).default + (await import('node:os')).EOL.length").result == 42
        # with a top-level await too, the bindings are the session's globals
        assert s.run(
            "import { readFile } from 'fs/promises'\nconst text = await readFile('c.cjs', 'utf8')"
        ).ok
        assert s.run("[typeof readFile, text.length, one]").result == [
            "function",
            len("module.exports = { two: 2 }"),
            1,
        ]
        assert s.run("export const shared = 5\nshared * 2").result == 10
        missing = s.run("import nothing from 'no-such-module'")
        assert missing.error.name == "Error"
        assert "Cannot find module 'no-such-module'" in missing.error.value
        code = s.run("try { require('no-such-module') } catch (e) { e.code }").result
        assert code == "MODULE_NOT_FOUND"  # (what the import's error is: require's)
        refused = s.run("export default 1")
        assert refused.error.name == "SyntaxError" and "export default" in refused.error.value
        assert s.run("[answer, shared]").result == [41, 5]  # the errors left the state as it was
    _assert_nothing_left(live_platform, held)


def test_a_node_session_is_contained_like_a_python_one(client, live_platform):  # noqa: F811
    portal = live_platform.ports.portal
    reach = (
        "await new Promise((resolve) => {\n"
        f"  const socket = require('net').connect({portal}, '127.0.0.1');\n"
        "  socket.on('connect', () => { socket.destroy(); resolve('connected') });\n"
        "  socket.on('error', (e) => resolve('refused ' + e.code));\n"
        "  setTimeout(() => resolve('refused timeout'), 3000);\n"
        "})"
    )
    with functions.session(language="node", client=client) as s:
        assert s.run(reach).result.startswith("refused")
        assert s.run("require('fs').existsSync('/work')").result is False
        uid = s.run("process.getuid()").result
        assert uid not in (0, 65534)
        with functions.session(client=client) as python:
            assert python.run("import os\nos.getuid()").result != uid  # a uid per session
        held = _held(live_platform, s.id)
        died = s.run("process.exit(3)")
        assert died.error.name == "KernelDied"
        assert s.run("typeof x").result == "undefined"  # restarted, its state lost
    _assert_nothing_left(live_platform, held)


def _kernels_soon(sandbox_pid: int, wanted: list[str]) -> list[str]:
    """The sandbox's kernels once they are ``wanted`` (a Node-ready sandbox has them at once; one given a
    Python standby starts Node at its create), or as they are after 15 s."""
    deadline = time.monotonic() + 15
    while (found := kernels_in(sandbox_pid)) != wanted and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


BOTH = ["session_kernel.js", "session_kernel.py"]


def test_new_node_sessions_have_node_started_before_their_first_run(e2b_env, client, live_platform):  # noqa: F811
    from e2b_code_interpreter import Sandbox

    with functions.session(language="node", client=client) as s:
        assert _kernels_soon(_held(live_platform, s.id)["sandbox_pid"], BOTH) == BOTH
        assert s.run("[process.version, 1 + 1]").result[1] == 2
    with functions.session(client=client) as python:  # a Python session starts no Node
        assert kernels_in(_held(live_platform, python.id)["sandbox_pid"]) == ["session_kernel.py"]
    # E2B's code interpreter may run JavaScript (run_code(language="js")) in any sandbox it creates
    with Sandbox.create(timeout=60) as sandbox:
        assert _kernels_soon(_held(live_platform, sandbox.sandbox_id)["sandbox_pid"], BOTH) == BOTH
        assert [c.id for c in sandbox.list_code_contexts()] == ["default"]  # listed from its first use
        assert sandbox.run_code("[1, 2].map((n) => n * 21).at(-1)", language="js").text == "42"
        assert {c.id for c in sandbox.list_code_contexts()} == {"default", "default-javascript"}
        assert sandbox.run_code("6 * 7").text == "42"


def test_hks_sdk_refuses_an_unknown_session_language():
    with pytest.raises(ValueError, match="language"):
        functions.session(language="ruby")
