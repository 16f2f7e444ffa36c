"""``functions.execute(language="node")`` on the fast path, on a running platform (real sandbox, real limits):
a Node-ready standby takes the code and is torn down after the answer. The results have the deploy path's
shape; nothing is kept from one run to the next; hostile code is as contained as Python's; another project
cannot reach this project's agents; nothing is left behind."""

from __future__ import annotations

import json
import secrets
import threading
import time
from pathlib import Path

import pytest

from hks_sdk import Client, HksError, functions
from tests.support.machine import host_targets
from tests.support.sandboxes import processes_of, processes_running

from .test_sessions_live import _held, client, secret  # noqa: F401

pytestmark = pytest.mark.runtime


def _node(code: str, client: Client, **options):  # noqa: F811
    return functions.execute(code=code, language="node", client=client, **options)


def test_node_code_takes_the_fast_path_with_the_deploy_paths_results(client):  # noqa: F811
    code = "console.log('out', 1); console.error('err'); ({a: [1, 2], s: 'x'})"
    fast = _node(code, client)
    assert fast.function == ""  # no throwaway function was deployed
    assert (fast.stdout, fast.stderr, fast.result, fast.error, fast.exit_code) == (
        "out 1\n",
        "err\n",
        {"a": [1, 2], "s": "x"},
        None,
        0,
    )
    deployed = _node(code, client, files={"data.txt": "forces the deploy path"})
    assert deployed.function != ""
    assert (deployed.stdout, deployed.stderr, deployed.result, deployed.exit_code) == (
        fast.stdout,
        fast.stderr,
        fast.result,
        fast.exit_code,
    )

    failed = _node("console.log('before'); null.boom", client)
    assert (failed.stdout, failed.error.name, failed.exit_code) == ("before\n", "TypeError", 1)
    assert "null" in failed.error.value and "<cell>" in failed.error.traceback
    thrown = _node("throw new RangeError('too far')", client)
    assert (thrown.error.name, thrown.error.value) == ("RangeError", "too far")

    assert _node("await new Promise((r) => setTimeout(() => r(6 * 7), 20))", client).result == 42
    assert _node("process.env.GREETING", client, env={"GREETING": "hey"}).result == "hey"
    exited = _node("console.log('bye'); process.exit(3)", client)
    assert (exited.stdout, exited.error, exited.exit_code) == ("bye\n", None, 3)  # as sys.exit(3) in Python


def test_typescript_takes_the_node_fast_path_with_its_types_stripped(client):  # noqa: F811
    code = (
        "import { join } from 'node:path'\n"
        "interface Named { name: string }\n"
        "const greet = (who: Named): string => `hi ${who.name}`\n"
        "console.log(greet({ name: 'ts' }))\n"
        "await new Promise((r) => setTimeout(r, 20))\n"  # (Node's experimental warning would come meanwhile)
        "join('a', 'b')"
    )
    typed = functions.execute(code=code, language="typescript", client=client)
    assert typed.function == ""  # the fast path
    assert (typed.stdout, typed.stderr, typed.result, typed.error) == ("hi ts\n", "", "a/b", None)
    failed = functions.execute(code="let x: = 1", language="ts", client=client)
    assert (failed.error.name, failed.exit_code) == ("SyntaxError", 1)


def test_nothing_is_kept_from_one_node_execution_to_the_next(client):  # noqa: F811
    first = _node(
        "globalThis.leak = 'secret'; require('fs').writeFileSync('left.txt', 'x'); process.getuid()", client
    )
    assert first.ok, first.error
    assert first.result not in (0, 65534)  # a uid of its own, as every session's
    second = _node("[typeof leak, require('fs').existsSync('/home/user/left.txt')]", client)
    assert second.result == ["undefined", False]


def test_a_node_run_past_its_timeout_is_a_timeout_error(client):  # noqa: F811
    for code in ("while (true) {}", "await new Promise(() => {})"):
        execution = _node(code, client, timeout=2)
        assert execution.error is not None and execution.error.name == "TimeoutError", execution.error
        assert "2 s" in execution.error.value


@pytest.mark.parametrize(
    "code",
    [
        "const kept = []; for (;;) kept.push(new Array(1e6).fill(1.5))",  # the JavaScript heap
        "const b = Buffer.alloc(1 << 30); b.fill(1); b.length",  # outside the heap: the sandbox's limit
    ],
)
def test_node_code_past_the_memory_limit_is_a_memory_error(client, code):  # noqa: F811
    execution = _node(code, client, timeout=30)
    assert execution.error is not None and execution.error.name == "MemoryError", execution.error
    assert "out of memory" in execution.error.value
    assert _node("1 + 1", client).result == 2


# reach(port): what connecting to 127.0.0.1:port gives ('connected', or the error's code)
REACH = """
const net = require('net');
const reach = (port) => new Promise((resolve) => {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('connect', () => { socket.destroy(); resolve('connected'); });
  socket.on('error', (e) => resolve(e.code));
  setTimeout(() => { socket.destroy(); resolve('timeout'); }, 3000);
});
"""
OUTSIDE = (
    "fetch('http://1.1.1.1/', { signal: AbortSignal.timeout(3000) }).then(() => 'connected', (e) => e.name)"
)


def test_node_code_has_no_network(client, live_platform):  # noqa: F811
    targets = list(host_targets(live_platform.ports).values())
    code = REACH + f"await Promise.all([...{json.dumps(targets)}.map(reach), {OUTSIDE}])"
    execution = _node(code, client, timeout=30)
    assert execution.ok, execution.error
    assert len(execution.result) == len(targets) + 1
    assert "connected" not in execution.result, execution.result


def test_node_code_cannot_read_the_hosts_files(client, live_platform):  # noqa: F811
    code = (
        "const fs = require('fs');\n"
        "const read = (p) => { try { fs.readFileSync(p); return 'read' } catch (e) { return e.code } };\n"
        f"[fs.readdirSync('/').sort(), fs.existsSync({str(live_platform.data_dir)!r}),\n"
        f" read('/etc/shadow'), read('/root/.bashrc'), read({str(live_platform.data_dir / 'db.sqlite3')!r})]"
    )
    execution = _node(code, client)
    assert execution.ok, execution.error
    listing, data_dir, *reads = execution.result
    assert "root" not in listing and "work" not in listing and "tmp" in listing
    assert data_dir is False  # the platform's files (database, runtime state, other sandboxes) are not there
    assert "read" not in reads
    written = _node(
        "try { require('fs').writeFileSync('/usr/bin/evil', 'x'); 'written' } catch (e) { e.code }", client
    )
    assert written.result in ("EROFS", "EACCES", "EPERM")


def test_a_node_fork_bomb_is_contained(client):  # noqa: F811
    marker = f"bomb{secrets.token_hex(6)}"
    code = (
        "try {\n"
        f"  require('child_process').execSync('{marker}() {{ {marker} | {marker} & }}; {marker}; sleep 3',\n"
        "    { shell: '/bin/bash', timeout: 5000, stdio: 'ignore' }); 'finished'\n"
        "} catch (e) { e.code || e.name }"
    )
    execution = _node(code, client, timeout=20)  # an Execution, whatever the bomb did: never an exception
    print("fork bomb:", execution)
    assert execution.exit_code in (0, 1)
    _eventually_none(lambda: processes_running(marker))  # its sandbox, and every process in it, are gone
    assert _node("1 + 1", client).result == 2


def test_a_node_execution_leaves_nothing_behind(client, live_platform):  # noqa: F811
    marker = f"{secrets.token_hex(8)}"
    seconds = f"86400.{int(marker, 16) % 10**9}"  # a command line of its own, to look for afterwards
    code = (
        "const options = { detached: true, stdio: 'ignore' };\n"
        f"const child = require('child_process').spawn('sleep', ['{seconds}'], options);\n"
        "await new Promise((resolve, reject) => { child.on('spawn', resolve); child.on('error', reject) });\n"
        "child.unref();\n"
        "process.getuid()"
    )
    execution = _node(code, client)
    uid = execution.result
    assert isinstance(uid, int), execution
    runtime = live_platform.data_dir / "runtime"

    def identities() -> dict[str, int]:  # the sandboxes' uids the runtime holds (identities.py)
        table = runtime / "layers" / "sandbox-ids.json"
        return json.loads(table.read_text()) if table.exists() else {}

    _eventually_none(lambda: processes_running(f"sleep\0{seconds}"))  # the process it left running
    _eventually_none(lambda: processes_of(uid))  # anything else of its sandbox
    _eventually_none(lambda: [name for name, held in identities().items() if held == uid])  # its uid
    # every slot directory left is a live agent's (a standby's, a session's): the run's went with it
    slots = runtime / "sessions"
    assert slots.is_dir()
    _eventually_none(lambda: [d.name for d in slots.iterdir() if f"session:{d.name}" not in identities()])


def _eventually_none(found, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (left := found()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"left behind: {left}"


def _set_quota(platform, field: str, value: int) -> None:
    platform.manage(
        "shell",
        "-c",
        f"from functions.models import Project; Project.objects.filter(slug='demo').update({field}={value})",
    )


def test_the_node_fast_path_answers_429_past_the_quota_and_the_sdk_can_wait(client, live_platform):  # noqa: F811
    _set_quota(live_platform, "max_agent_functions", 1)
    try:
        slow = threading.Thread(target=_node, args=("await new Promise((r) => setTimeout(r, 4000))", client))
        slow.start()
        time.sleep(1.5)
        with pytest.raises(HksError) as refused:
            _node("1", client)
        assert refused.value.status == 429
        assert _node("2 + 2", client, wait_for_quota=30).result == 4
        slow.join()
    finally:
        _set_quota(live_platform, "max_agent_functions", 5)


def test_another_project_cannot_reach_this_projects_agents(client, live_platform):  # noqa: F811
    live_platform.create_user("node-outsider", "node-outsider-password", project="node-outsiders")
    intruder = live_platform.agent_secret("node-intruder", project="node-outsiders")
    with functions.session(language="node", client=client) as s:
        s.files.write("secret.txt", "only for demo")
        held = _held(live_platform, s.id)
        home = str(Path(held["slot"]) / "home" / "secret.txt")
        with Client(url=live_platform.portal_url, credential=intruder) as other:
            with pytest.raises(HksError) as hidden:
                other._call("GET", f"/sessions/{s.id}")
            assert hidden.value.status == 404
            probe = REACH + f"[require('fs').existsSync({home!r}), await reach({held['port']})]"
            seen = _node(probe, other, timeout=30)
            assert seen.ok, seen.error
            assert seen.result[0] is False  # the session's files
            assert seen.result[1] != "connected"  # its agent's port
        assert s.run("require('fs').readFileSync('secret.txt', 'utf8')").result == "only for demo"
