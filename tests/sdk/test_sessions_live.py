"""Agent sessions end to end on a running platform: E2B's own SDK (from PyPI, unmodified) and hks_sdk's
``functions.session()`` create a session, keep kernel state between calls, stream output, move files, run
commands, set a timeout and kill it; hostile code stays contained; nothing is left behind."""

from __future__ import annotations

import ast
import asyncio
import os
import time
from pathlib import Path

import httpx
import pytest

from hks_sdk import Client, functions
from tests.support.machine import host_targets, reach_py
from tests.support.needs import require_binary

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def secret(live_platform):  # noqa: F811
    require_binary("bwrap", hint="apt-get install bubblewrap")
    out = live_platform.manage(
        "shell",
        "-c",
        "from functions.models import AgentCredential, Project;"
        "p = Project.objects.get(slug='demo'); p.max_sessions = 20; p.save();"
        "print(AgentCredential.issue(project=p, name='session-tests')[1])",
        capture=True,
    )
    return out.strip().splitlines()[-1]


@pytest.fixture
def e2b_env(live_platform, secret, monkeypatch):  # noqa: F811
    """E2B's documented settings, pointed at the platform."""
    monkeypatch.setenv("E2B_API_KEY", secret)
    monkeypatch.setenv("E2B_API_URL", f"{live_platform.portal_url}/e2b")
    monkeypatch.setenv("E2B_SANDBOX_URL", f"{live_platform.portal_url}/e2b")


@pytest.fixture
def client(live_platform, secret):  # noqa: F811
    with Client(url=live_platform.portal_url, credential=secret) as c:
        yield c


def _runtime(platform, method: str, path: str) -> httpx.Response:
    token = (platform.data_dir / "runtime-token").read_text().strip()
    return httpx.request(
        method, platform.runtime_url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def _held(platform, sandbox_id: str) -> dict:
    response = _runtime(platform, "GET", f"/v1/sessions/{sandbox_id}")
    assert response.status_code == 200, response.text
    return response.json()


def _assert_nothing_left(platform, held: dict, timeout: float = 30) -> None:
    """No runtime session, no process of its sandbox, no home directory."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        gone = _runtime(platform, "GET", f"/v1/sessions/{held['id']}").status_code == 404
        dir_gone = not Path(held["slot"]).exists()
        procs = [pid for pid in os.listdir("/proc") if pid.isdigit() and held["slot"] in _cmdline(pid)]
        if gone and dir_gone and not procs and not Path(f"/proc/{held['sandbox_pid']}").exists():
            return
        time.sleep(0.2)
    raise AssertionError(f"session {held['id']} left something behind: {procs=} {dir_gone=} {gone=}")


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


# --- E2B's SDK --------------------------------------------------------------------------------------------


def test_e2b_code_interpreter_sdk_drives_a_session(e2b_env, live_platform):  # noqa: F811
    from e2b_code_interpreter import Sandbox

    sandbox = Sandbox.create(timeout=120, metadata={"suite": "sessions"})
    held = _held(live_platform, sandbox.sandbox_id)
    try:
        assert sandbox.run_code("x = 41").error is None
        streamed = []
        execution = sandbox.run_code("print('step', x)\nx + 1", on_stdout=lambda m: streamed.append(m.line))
        assert execution.text == "42"
        assert "".join(execution.logs.stdout) == "step 41\n"
        assert "".join(streamed) == "step 41\n"
        failed = sandbox.run_code("1 / 0")
        assert failed.error.name == "ZeroDivisionError"
        assert "ZeroDivisionError" in failed.error.traceback

        sandbox.files.write("notes/hello.txt", "written by the SDK")
        assert sandbox.files.read("notes/hello.txt") == "written by the SDK"
        assert sandbox.run_code("open('/home/user/notes/hello.txt').read()").text == "written by the SDK"
        assert [e.name for e in sandbox.files.list("notes")] == ["hello.txt"]

        command = sandbox.commands.run("echo out; echo err >&2; cat notes/hello.txt")
        assert command.exit_code == 0
        assert command.stdout == "out\nwritten by the SDK"
        assert command.stderr == "err\n"

        listed = [s.sandbox_id for s in Sandbox.list().next_items()]
        assert sandbox.sandbox_id in listed
        sandbox.set_timeout(200)
        assert sandbox.get_info().metadata == {"suite": "sessions"}
    finally:
        assert sandbox.kill() is True
    assert sandbox.is_running() is False
    _assert_nothing_left(live_platform, held)
    assert Sandbox.kill(sandbox.sandbox_id) is False  # already gone


def test_e2b_command_failure_and_streaming(e2b_env):
    from e2b import CommandExitException
    from e2b_code_interpreter import Sandbox

    with Sandbox.create(timeout=60) as sandbox:
        lines = []
        sandbox.commands.run("for i in 1 2 3; do echo $i; done", on_stdout=lines.append)
        assert "".join(lines) == "1\n2\n3\n"
        with pytest.raises(CommandExitException) as info:
            sandbox.commands.run("exit 3")
        assert info.value.exit_code == 3


def test_e2b_files_processes_and_connect(e2b_env):
    from e2b_code_interpreter import Sandbox

    with Sandbox.create(timeout=60) as sandbox:
        assert sandbox.files.make_dir("work") is True
        assert sandbox.files.exists("work") is True
        sandbox.files.write("work/a.txt", b"bytes")
        assert sandbox.files.get_info("work/a.txt").size == 5
        sandbox.files.rename("work/a.txt", "work/b.txt")
        assert sandbox.files.read("work/b.txt", format="bytes") == b"bytes"
        sandbox.files.remove("work")
        assert sandbox.files.exists("work") is False

        handle = sandbox.commands.run("sleep 30", background=True)
        assert handle.pid in [p.pid for p in sandbox.commands.list()]
        assert sandbox.commands.kill(handle.pid) is True
        assert sandbox.commands.run("echo $GREETING", envs={"GREETING": "hey"}).stdout == "hey\n"

        assert sandbox.run_code("import os\nos.environ['V']", envs={"V": "from envs"}).text == "from envs"
        again = Sandbox.connect(sandbox.sandbox_id)
        assert again.run_code("21 * 2").text == "42"
        assert [c.id for c in sandbox.list_code_contexts()] == ["default"]


def test_e2b_code_contexts_keep_separate_state(e2b_env):
    from e2b_code_interpreter import Sandbox

    with Sandbox.create(timeout=60) as sandbox:
        sandbox.run_code("x = 'default'")
        context = sandbox.create_code_context(cwd="/tmp")
        assert sandbox.run_code("x = 'other'\nimport os; os.getcwd()", context=context).text == "/tmp"
        assert sandbox.run_code("x").text == "default"
        assert sandbox.run_code("x", context=context).text == "other"
        assert {c.id for c in sandbox.list_code_contexts()} == {"default", context.id}
        sandbox.restart_code_context(context)
        assert sandbox.run_code("'x' in globals()", context=context).text == "False"
        sandbox.remove_code_context(context)
        assert [c.id for c in sandbox.list_code_contexts()] == ["default"]


def test_an_expired_sandbox_is_reaped_and_leaves_nothing(e2b_env, live_platform):  # noqa: F811
    from e2b_code_interpreter import Sandbox

    sandbox = Sandbox.create(timeout=2)
    held = _held(live_platform, sandbox.sandbox_id)
    sandbox.run_code("open('/home/user/left.txt', 'w').write('x')")
    _assert_nothing_left(live_platform, held)
    assert sandbox.is_running() is False
    status = (
        "from functions.models import AgentSession as S;"
        f"print(S.objects.get(sandbox_id={held['id']!r}).status)"
    )
    deadline = time.monotonic() + 60
    while live_platform.manage("shell", "-c", status, capture=True).strip().splitlines()[-1] != "expired":
        assert time.monotonic() < deadline, "beat did not record the session as expired"
        time.sleep(2)


def test_a_sandbox_is_invisible_to_another_project(e2b_env, live_platform, monkeypatch):  # noqa: F811
    from e2b import AuthenticationException
    from e2b_code_interpreter import Sandbox

    out = live_platform.manage(
        "shell",
        "-c",
        "from functions.models import AgentCredential, Project;"
        "p, _ = Project.objects.get_or_create(slug='other-sessions', defaults={'name': 'o'});"
        "print(AgentCredential.issue(project=p, name='intruder')[1])",
        capture=True,
    )
    intruder = out.strip().splitlines()[-1]
    with Sandbox.create(timeout=60) as sandbox:
        assert Sandbox.kill(sandbox.sandbox_id, api_key=intruder) is False
        assert sandbox.sandbox_id not in [s.sandbox_id for s in Sandbox.list(api_key=intruder).next_items()]
        # The data plane without the sandbox's access token is refused.
        response = httpx.post(
            f"{live_platform.portal_url}/e2b/execute",
            json={"code": "1"},
            headers={
                "E2b-Sandbox-Id": sandbox.sandbox_id,
                "E2b-Sandbox-Port": "49999",
                "X-Access-Token": "x",
            },
        )
        assert response.status_code == 401
        assert sandbox.run_code("2 + 2").text == "4"
    with pytest.raises(AuthenticationException):
        Sandbox.create(api_key="hksa_not-a-credential")


def test_an_outsider_cannot_reach_a_sandbox_through_the_wire_protocols(e2b_env, live_platform):  # noqa: F811
    """As an attacker with a project of their own would try it, on the wire: the victim's sandbox id with
    the attacker's API key on every control-plane route, and the attacker's own sandbox's tokens (valid
    ones, for the wrong sandbox) on both daemons of the data plane. Nothing answers but 404 and 401, and
    the victim's sandbox goes on as before."""
    from e2b_code_interpreter import Sandbox

    out = live_platform.manage(
        "shell",
        "-c",
        "from functions.models import AgentCredential, Project;"
        "p, _ = Project.objects.get_or_create(slug='wire-intruder', defaults={'name': 'w'});"
        "print(AgentCredential.issue(project=p, name='intruder')[1])",
        capture=True,
    )
    api = f"{live_platform.portal_url}/e2b"
    intruder = {"X-API-Key": out.strip().splitlines()[-1]}
    with httpx.Client(base_url=api, timeout=30) as http, Sandbox.create(timeout=120) as victim:
        mine = http.post(
            "/sandboxes", json={"templateID": "code-interpreter-v1", "timeout": 60}, headers=intruder
        )
        assert mine.status_code == 201, mine.text
        mine = mine.json()
        try:
            theirs = victim.sandbox_id
            attempts = {
                "get": http.get(f"/sandboxes/{theirs}", headers=intruder),
                "connect": http.post(
                    f"/sandboxes/{theirs}/connect", json={"timeout": 3600}, headers=intruder
                ),
                "connect v2": http.post(f"/v2/sandboxes/{theirs}/connect", json={}, headers=intruder),
                "timeout": http.post(f"/sandboxes/{theirs}/timeout", json={"timeout": 1}, headers=intruder),
                "kill": http.delete(f"/sandboxes/{theirs}", headers=intruder),
            }
            assert {what: r.status_code for what, r in attempts.items()} == dict.fromkeys(attempts, 404)
            assert all("envdAccessToken" not in r.text for r in attempts.values())
            listed = http.get("/v2/sandboxes", headers=intruder).json()
            assert [s["sandboxID"] for s in listed] == [mine["sandboxID"]]

            def data_plane(port: str, path: str, token_header: str, token: str, **kwargs):
                headers = {"E2b-Sandbox-Id": theirs, "E2b-Sandbox-Port": port, token_header: token}
                return http.request(kwargs.pop("method", "GET"), path, headers=headers, **kwargs)

            wrong = [
                data_plane(
                    "49999",
                    "/execute",
                    "X-Access-Token",
                    mine["envdAccessToken"],
                    method="POST",
                    json={"code": "open('/etc/hostname').read()"},
                ),
                data_plane(
                    "49999",
                    "/contexts",
                    "E2B-Traffic-Access-Token",
                    mine["trafficAccessToken"],
                    method="POST",
                    json={"language": "python"},
                ),
                data_plane(
                    "49983",
                    "/files",
                    "X-Access-Token",
                    mine["envdAccessToken"],
                    params={"path": "/home/user/secret.txt"},
                ),
                data_plane("49983", "/health", "X-Access-Token", ""),
            ]
            assert [r.status_code for r in wrong] == [401, 401, 401, 401]
        finally:
            http.delete(f"/sandboxes/{mine['sandboxID']}", headers=intruder)
        victim.files.write("secret.txt", "the victim's")
        assert victim.run_code("6 * 7").text == "42"
        assert victim.files.read("secret.txt") == "the victim's"
        assert victim.get_info().end_at.timestamp() > time.time() + 60  # the intruder's timeout did nothing


# --- hks_sdk --------------------------------------------------------------------------------------------


def test_hks_sdk_session_keeps_state_streams_and_cleans_up(client, live_platform):  # noqa: F811
    streamed = []
    with functions.session(timeout=120, client=client) as s:
        held = _held(live_platform, s.id)
        assert s.run("x = 41").ok
        execution = s.run("print('step', x)\nx + 1", on_stdout=streamed.append)
        assert execution.result == 42
        assert execution.stdout == "step 41\n"
        assert "".join(streamed) == "step 41\n"
        s.files.write("data.csv", "a,b\n1,2\n")
        assert s.files.read("data.csv") == "a,b\n1,2\n"
        assert "data.csv" in [e["name"] for e in s.files.list(".")]
        lines = []
        command = s.commands.run("wc -l < data.csv; echo oops >&2; exit 4", on_stdout=lines.append)
        assert (command.stdout, command.stderr, command.exit_code) == ("2\n", "oops\n", 4)
        assert "".join(lines) == "2\n"
        timed = s.run("while True: pass", timeout=1)
        assert timed.error.name == "TimeoutError"
        assert s.run("x").result == 41  # the interrupt kept the kernel and its state
        rich = s.run("class Dot:\n    def _repr_png_(self): return b'\\x89PNG'\nDot()")
        assert rich.results[0]["png"] == "iVBORw==", rich.results  # bytes of a rich repr, base64
        failed = s.run("def f(): 1 / 0\nf()")
        assert failed.error.name == "ZeroDivisionError" and "in f" in failed.error.traceback
        s.set_timeout(300)
    _assert_nothing_left(live_platform, held)
    assert s.id not in [item["id"] for item in client._call("GET", "/sessions")]


def test_hks_sdk_async_session(client, live_platform):  # noqa: F811
    async def scenario():
        async with functions.session(client=client) as s:
            await s.run("import math\nr = math.sqrt(16)")
            assert (await s.run("r * 2")).result == 8.0
            await s.files.write("a.txt", "A")
            assert await s.files.read("a.txt") == "A"
            assert (await s.commands.run("cat a.txt")).stdout == "A"
            return _held(live_platform, s.id)

    _assert_nothing_left(live_platform, asyncio.run(scenario()))


def test_session_quota_is_enforced(client, live_platform):  # noqa: F811
    live_platform.manage(
        "shell",
        "-c",
        "from functions.models import Project; Project.objects.filter(slug='demo').update(max_sessions=1)",
    )
    try:
        with functions.session(client=client):
            with pytest.raises(Exception) as info:
                functions.Session.create(client=client)
            assert getattr(info.value, "status", None) == 429
    finally:
        live_platform.manage(
            "shell",
            "-c",
            "from functions.models import Project;"
            "Project.objects.filter(slug='demo').update(max_sessions=20)",
        )


def test_execute_takes_the_fast_path(client):
    execution = functions.execute(code="print('fast')\nsum(range(10))", client=client)
    assert (execution.stdout, execution.result, execution.ok) == ("fast\n", 45, True)
    assert execution.function == ""  # no throwaway function was deployed
    failed = functions.execute(code="raise ValueError('bad')", client=client)
    assert failed.error.name == "ValueError" and failed.exit_code == 1


def _set_quota(platform, field: str, value: int) -> None:
    platform.manage(
        "shell",
        "-c",
        f"from functions.models import Project; Project.objects.filter(slug='demo').update({field}={value})",
    )


def _answers(client: Client, path: str) -> list[tuple[int, str | None]]:
    """(status, Retry-After) of every answer ``client`` gets for ``path``, from now on."""
    seen: list[tuple[int, str | None]] = []

    def hook(response: httpx.Response) -> None:
        if response.request.url.path.endswith(path):
            seen.append((response.status_code, response.headers.get("Retry-After")))

    client._http.event_hooks["response"].append(hook)
    return seen


def test_the_fast_path_answers_429_with_retry_after_and_the_sdk_waits_for_it(client, live_platform):  # noqa: F811
    import threading

    from hks_sdk import HksError

    _set_quota(live_platform, "max_agent_functions", 1)
    try:
        slow = threading.Thread(
            target=functions.execute, kwargs={"code": "import time; time.sleep(4)", "client": client}
        )
        slow.start()
        time.sleep(1.5)
        answers = _answers(client, "/operations/execute")
        with pytest.raises(HksError) as refused:  # no wait asked for: the 429 itself
            functions.execute(code="1", client=client)
        assert refused.value.status == 429 and refused.value.retry_after == 1
        # A wait shorter than the Retry-After: raised at once, as HksError 429, without a second try.
        with pytest.raises(HksError) as short:
            functions.execute(code="1", client=client, wait_for_quota=0.5)
        assert short.value.status == 429
        assert answers == [(429, "1"), (429, "1")]
        del answers[:]
        assert functions.execute(code="2 + 2", client=client, wait_for_quota=30).result == 4
        # refused (with the server's Retry-After) at least once, and the retry after it succeeded (the
        # slow thread's own answer, on the same client, is a 200 too)
        assert answers[0] == (429, "1") and set(answers) == {(429, "1"), (200, None)}, answers
        slow.join()
    finally:
        _set_quota(live_platform, "max_agent_functions", 5)


def test_the_deploy_path_waits_for_retry_after_past_the_agent_function_quota(client, live_platform):  # noqa: F811
    import threading

    from hks_sdk import DeployError

    _set_quota(live_platform, "max_agent_functions", 1)
    try:
        files = {"data.txt": "x"}  # with files: the deploy path
        slow = threading.Thread(
            target=functions.execute,
            kwargs={"code": "import time; time.sleep(3)", "files": files, "client": client},
        )
        answers = _answers(client, "/operations/deploy-function")
        slow.start()
        deadline = time.monotonic() + 60
        while not answers and time.monotonic() < deadline:  # its function is deployed (and counts)
            time.sleep(0.05)
        with pytest.raises(DeployError) as refused:
            functions.execute(code="1", files=files, client=client)
        assert refused.value.status == 429 and refused.value.retry_after == 1
        execution = functions.execute(code="print(6 * 7)", files=files, client=client, wait_for_quota=120)
        assert execution.stdout == "42\n", execution
        slow.join()
        # the slow one's 202, the refusals with their Retry-After, and the retry's 202
        assert (429, "1") in answers and answers[-1][0] == 202
        assert set(answers) <= {(429, "1"), (202, None)}
    finally:
        _set_quota(live_platform, "max_agent_functions", 5)


def test_a_session_create_over_the_quota_waits_for_retry_after_then_surfaces_429(client, live_platform):  # noqa: F811
    import threading

    from hks_sdk import HksError

    _set_quota(live_platform, "max_sessions", 1)
    try:
        first = functions.Session.create(client=client, timeout=5)  # Retry-After: its deadline, <= 5 s
        answers = _answers(client, "/sessions")
        with pytest.raises(HksError) as refused:  # past the wait: the 429, with how long to wait
            functions.Session.create(client=client, wait_for_quota=0.2)
        assert refused.value.status == 429 and 1 <= refused.value.retry_after <= 5
        assert [status for status, _ in answers] == [429]
        del answers[:]
        killer = threading.Timer(1.0, first.kill)
        killer.start()
        with functions.session(client=client, wait_for_quota=60) as second:
            assert second.run("6 * 7").result == 42
        killer.join()
        # refused with a Retry-After at least once, then the retry after it created the session
        assert answers[0][0] == 429 and answers[0][1] is not None and answers[-1][0] == 201
        assert all(status == 429 for status, _ in answers[:-1])

        async def waits_too() -> int:  # the async session waits the same way
            held = functions.Session.create(client=client, timeout=5)
            del answers[:]
            threading.Timer(1.0, held.kill).start()
            async with functions.session(client=client, wait_for_quota=60) as third:
                return (await third.run("6 * 7")).result

        assert asyncio.run(waits_too()) == 42
        assert answers[0][0] == 429 and answers[-1][0] == 201
    finally:
        _set_quota(live_platform, "max_sessions", 20)


# --- hostile code inside sessions ------------------------------------------------------------------------

HOSTILE_CODE = {
    "network": (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', {portal}), timeout=3); r = 'connected'\n"
        "except OSError as e:\n"
        "    r = 'refused: ' + str(e)\n"
        "r"
    ),
    "host_files": "import os\nsorted(os.listdir('/'))",
    "processes": "import os\nsorted(int(p) for p in os.listdir('/proc') if p.isdigit())",
    "write_system": (
        "try:\n    open('/usr/bin/evil', 'w'); r = 'written'\n"
        "except OSError as e:\n    r = type(e).__name__\nr"
    ),
}


def test_hostile_code_in_a_session_is_contained(client, live_platform):  # noqa: F811
    with functions.session(client=client) as s:
        portal = live_platform.ports.portal
        assert s.run(HOSTILE_CODE["network"].format(portal=portal)).result.startswith("refused")
        root = s.run(HOSTILE_CODE["host_files"]).result
        assert "root" not in root and "work" not in root
        assert max(s.run(HOSTILE_CODE["processes"]).result) < 50  # its own pid namespace only
        assert s.run(HOSTILE_CODE["write_system"]).result in ("OSError", "PermissionError")
        reach = f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {portal}), timeout=3)\""
        assert s.commands.run(reach).exit_code != 0  # commands have no network either
        assert s.commands.run("cat /etc/shadow").exit_code != 0
        held = _held(live_platform, s.id)
        # A fork bomb through a command meets the sandbox's process limit and dies with the command.
        try:
            s.commands.run("bomb() { bomb | bomb & }; bomb", timeout=5)
        except Exception:  # noqa: BLE001 - the session may be too busy to answer: only containment counts
            pass
        try:  # killing everything it can see kills only its own sandbox
            s.commands.run("kill -9 -1", timeout=10)
        except Exception:  # noqa: BLE001 - the agent itself is among the victims
            pass
        assert functions.execute(code="1 + 1", client=client).result == 2
    _assert_nothing_left(live_platform, held)


def test_nothing_on_the_host_answers_a_session_kernel_or_its_commands(client, live_platform):  # noqa: F811
    """The session's network is the one-shot executions' (tests/sdk/test_execute_live.py): neither its kernel
    nor a command it runs reaches the platform's ports, the machine's other services or the internet."""
    targets = host_targets(live_platform.ports)
    with functions.session(client=client) as s:
        from_kernel = s.run(reach_py(targets), timeout=60)
        assert from_kernel.error is None, from_kernel.error
        s.files.write("reach.py", reach_py(targets, print_it=True))
        from_command = s.commands.run("python3 reach.py", timeout=60)
    assert set(from_kernel.result) == {*targets, "internet"}
    assert "connected" not in from_kernel.result.values(), from_kernel.result
    assert from_command.exit_code == 0, from_command.stderr
    reached = ast.literal_eval(from_command.stdout)
    assert set(reached) == {*targets, "internet"}
    assert "connected" not in reached.values(), reached


def test_a_session_cannot_see_another_sessions_files(client, live_platform):  # noqa: F811
    with functions.session(client=client) as a, functions.session(client=client) as b:
        a.files.write("secret.txt", "only for a")
        a_home = _held(live_platform, a.id)["slot"] + "/home/secret.txt"
        probe = f"import os\n[os.path.exists({a_home!r}), sorted(os.listdir('/home/user'))]"
        assert b.run(probe).result == [False, []]
        assert b.commands.run(f"cat {a_home}").exit_code != 0


def test_a_session_cannot_fill_the_hosts_disk(client, live_platform):  # noqa: F811
    """Its home and /tmp live in memory, capped at half the memory limit each: writing without end ends in
    ENOSPC, the host's data dir does not grow, and the session (and the next one) keep working."""
    fill = (
        "import errno\n"
        "written = 0\n"
        "try:\n"
        "    for i in range(1000):\n"
        "        open(f'{where}/fill{i}', 'wb').write(b'x' * (8 << 20)); written += 8\n"
        "except OSError as e:\n"
        "    outcome = (errno.errorcode[e.errno], written)\n"
        "outcome"
    )
    before = _disk_use(live_platform.data_dir)
    with functions.session(client=client) as s:
        for where in ("/home/user", "/tmp"):
            name, written = s.run(f"where = {where!r}\n" + fill).result
            assert name == "ENOSPC" and 0 < written <= 128, (where, name, written)
            assert _disk_use(live_platform.data_dir) - before < 64 << 20  # not on the host's disk
            s.run(f"import glob, os\n[os.remove(p) for p in glob.glob({where!r} + '/fill*')]")
        assert s.commands.run("echo still here").stdout == "still here\n"
        with pytest.raises(Exception):  # noqa: B017 - a file past the cap is refused, whichever way
            s.files.write("big.bin", b"x" * (200 << 20))
        assert s.run("1 + 1").result == 2


def _disk_use(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def test_a_memory_bomb_in_a_session_is_contained(client, live_platform):  # noqa: F811
    with functions.session(client=client) as s:
        held = _held(live_platform, s.id)
        try:
            bomb = s.run("hog = bytearray(1024 ** 3)")
            assert bomb.error is not None and bomb.error.name in ("MemoryError", "KernelDied")
        except Exception:  # noqa: BLE001 - the OOM killer may take the whole sandbox (cgroup v2 oom.group)
            pass
        assert functions.execute(code="1 + 1", client=client).result == 2
    _assert_nothing_left(live_platform, held)


def test_a_kernel_that_exits_is_restarted(client):
    with functions.session(client=client) as s:
        s.run("x = 1")
        died = s.run("import os; os._exit(3)")
        assert died.error.name == "KernelDied"
        assert s.run("1 + 1").result == 2
        assert s.run("'x' in globals()").result is False


# --- available libraries ---------------------------------------------------------------------------------


def test_sessions_get_the_pinned_libraries(client):
    """The first session starts the library layer's build (minutes on a slow link); later ones import it."""
    with functions.session(client=client):
        pass
    deadline = time.monotonic() + 900
    while (status := client._call("GET", "/session-libraries"))["state"] != "ready":
        assert status["state"] == "building", status
        assert time.monotonic() < deadline, "the library layer was not built in time"
        time.sleep(3)
    assert set(status["libraries"]) == {"numpy", "pandas", "matplotlib", "PyYAML", "requests"}
    time.sleep(3)  # the standbys started before the layer make way for ones with it
    with functions.session(client=client) as s:
        versions = s.run("import numpy, pandas, yaml, requests\n[numpy.__version__, pandas.__version__]")
        assert versions.ok, versions.error
        assert versions.result == [status["libraries"]["numpy"], status["libraries"]["pandas"]]
        chart = s.run("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nprint('plotted')")
        assert chart.ok, chart.error
        assert any(r.get("png") for r in chart.results)
        frame = s.run("pandas.DataFrame({'a': [1, 2]})")
        assert "html" in frame.results[0]


def test_sessions_run_as_uids_of_their_own(client, live_platform):  # noqa: F811
    """Not the host's nobody every sandbox without an identity shares: one uid per session (identities.py)."""
    with functions.session(client=client) as a, functions.session(client=client) as b:
        uids = [s.run("import os\nos.getuid()").result for s in (a, b)]
    assert uids[0] != uids[1] and 65534 not in uids
