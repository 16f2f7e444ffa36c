"""Every command line people are shown is run here, as shown, against the live platform: the dashboard's
empty-project help (read from the rendered page), the README's CLI block and docs/cli.md (its code blocks
and the command column of its tables, read from the files).

docs/cli.md writes synopses (``[NAME]``, ``-l node|python``): each is mapped below to the concrete command
lines that run it, and a synopsis without such lines fails ``test_every_documented_command_has_a_run``.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.needs import require_binary

from .conftest import BIN, PASSWORD

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.runtime

# docs/cli.md synopsis -> the command lines that run it ({fn}: a deployed function, {tmp}: a scratch dir).
SYNOPSES = {
    "hks login": ["DEVICE hks login"],
    "hks login --username U": ["PASSWORD hks login --username {user}"],
    "hks login --username U --password-stdin": ['echo "$PW" | hks login --username {user} --password-stdin'],
    "hks login --token T": ['hks login --token "$TOKEN"'],
    "hks logout": ["hks logout", 'hks login --token "$TOKEN"'],
    "hks whoami": ["hks whoami"],
    "hks project list": ["hks project list"],
    "hks project select NAME": ["hks project select {project}"],
    "hks project current": ["hks project current"],
    "hks project kubeconfig [-o FILE]": ["EXIT5 hks project kubeconfig -o {tmp}/kube.yaml"],
    "hks project invite USERNAME [--role viewer|developer|owner]": [
        "hks project invite newcomer --role viewer; test $? = 4"  # the session's user is a developer
    ],
    "hks invitation list|accept PROJECT|decline PROJECT": [
        "hks invitation list",
        "hks invitation accept nowhere; test $? = 5",
        "hks invitation decline nowhere; test $? = 5",
    ],
    "hks-func create -l node|python [-t http|cloudevents] NAME [--path DIR]": [
        "hks-func create -l python -t cloudevents events --path {tmp}/events",
        "hks-func create -l node {fn} --path {tmp}/{fn}",
    ],
    "hks-func deploy [--path DIR] [--no-wait] [--timeout S]": [
        "hks-func deploy --path {tmp}/{fn} --timeout 300",
        "hks-func deploy --path {tmp}/{fn} --no-wait",
    ],
    "hks-func invoke [NAME] [--data D] [-H 'K: V']... [-X METHOD] [--route /path?q=1]": [
        "hks-func invoke {fn} --data '{{\"a\": 1}}' -H 'X-Doc: 1' -X POST --route '/path?q=1'"
    ],
    "hks-func logs [NAME] [-f] [--since 10m|2h|1d|ISO] [--tail N]": [
        "hks-func logs {fn} --since 10m --tail 5",
        "timeout 3 hks-func logs {fn} -f --tail 1; test $? = 124",
    ],
    "hks-func list": ["hks-func list"],
    "hks-func describe [NAME]": ["hks-func describe {fn}"],
    "hks-func revisions [NAME]": ["hks-func revisions {fn}"],
    "hks-func rollback N [NAME]": ["hks-func rollback 1 {fn}"],
    "hks-func env list|set [--secret] K=V...|unset K... [--name NAME]": [
        "hks-func env set GREETING=hi --name {fn}",
        "hks-func env set --secret API_TOKEN=s3cret-value --name {fn}",
        "hks-func env list --name {fn}",
        "hks-func env unset GREETING API_TOKEN --name {fn}",
    ],
    "hks-func schedule ...": [
        "hks-func schedule set nightly --name {fn} --cron '0 3 * * *'",
        "hks-func schedule list --name {fn}",
        "hks-func schedule remove nightly --name {fn}",
    ],
    "hks-func delete [NAME] --yes": ["hks-func delete {fn} --yes"],
}


def _code_blocks(markdown: str) -> list[str]:
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", markdown, re.S):
        lines += [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return lines


def _table_commands(markdown: str) -> list[str]:
    cells = re.findall(r"^\| `((?:hks|hks-func) [^`]*)` \|", markdown, re.M)
    return [cell.replace("\\|", "|") for cell in cells]


def _cli_blocks(markdown: str) -> list[str]:
    """The code-block lines that are CLI sessions (the README also shows `bash scripts/...`)."""
    return [line for line in _code_blocks(markdown) if re.match(r"(hks|hks-func|cd) ", line)]


def test_every_documented_command_has_a_run():
    documented = set(_table_commands((ROOT / "docs" / "cli.md").read_text()))
    assert documented == set(SYNOPSES)


class Session:
    """Runs command lines with bash, as a person would type them, with the venv's ``hks`` on PATH."""

    def __init__(self, platform, env: dict, cwd: Path, user: str):
        self.platform, self.cwd, self.user = platform, cwd, user
        self.env = {**env, "PATH": f"{BIN}:{os.environ['PATH']}", "PW": PASSWORD}
        self.last_token = ""

    def run(self, command: str, mode: str = "") -> subprocess.CompletedProcess:
        """``mode``: DEVICE (approve the browser login as the user), PASSWORD (type it), EXIT5 (expected)."""
        if command.startswith("cd ") and "&&" not in command:
            self.cwd = (self.cwd / command[3:].strip()).resolve()
            return subprocess.CompletedProcess(command, 0, "", "")
        env = {**self.env, "TOKEN": self.token()}
        if mode == "DEVICE":
            return self._device_login(command, env)
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=self.cwd,
            env=env,
            input=PASSWORD + "\n" if mode == "PASSWORD" else None,
            capture_output=True,
            text=True,
            timeout=600,
            start_new_session=True,  # no terminal: getpass reads the password from stdin
        )
        want = 5 if mode == "EXIT5" else 0
        assert result.returncode == want, (
            f"{command}\nexit {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
        return result

    def token(self) -> str:
        """The token saved by the last login (also after ``hks logout`` forgot it)."""
        path = Path(self.env["XDG_CONFIG_HOME"]) / "hks" / "config.json"
        saved = json.loads(path.read_text()).get("token", "") if path.exists() else ""
        self.last_token = saved or self.last_token
        return self.last_token

    def _device_login(self, command: str, env: dict) -> subprocess.CompletedProcess:
        proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=self.cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            url = None
            while url is None:
                line = proc.stderr.readline()
                assert line, f"{command} ended without printing a URL"
                match = re.search(r"(http://\S+/cli/approve\?code=[A-Z0-9-]+)", line)
                url = match and match.group(1)
            approve(self.platform, self.user, url)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, f"{command}\nexit {proc.returncode}\n{out}\n{err}"
        assert f"as {self.user}" in out
        return subprocess.CompletedProcess(command, 0, out, err)


def browser(platform, username: str) -> httpx.Client:
    client = httpx.Client(base_url=platform.portal_url, follow_redirects=True)
    page = client.get("/accounts/login/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    client.post(
        "/accounts/login/", data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": csrf}
    )
    assert "sessionid" in client.cookies
    return client


def approve(platform, username: str, url: str) -> None:
    client = browser(platform, username)
    page = client.get(url)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    code = url.rsplit("=", 1)[1]
    approved = client.post("/cli/approve", data={"code": code, "csrfmiddlewaretoken": csrf})
    client.close()
    assert approved.status_code == 200 and "cli-approve-done" in approved.text


@pytest.fixture
def sandbox():
    require_binary("bwrap", hint="apt-get install bubblewrap")


def test_the_empty_project_help_runs_as_shown(cli_platform, cli_env, tmp_path, sandbox):
    cli_platform.create_user("erin", PASSWORD, project="first-steps", role="owner")
    page = browser(cli_platform, "erin").get("/p/first-steps/")
    block = re.search(r'id="getting-started">.*?<pre><code>(.*?)</code></pre>', page.text, re.S)
    lines = html.unescape(block.group(1)).splitlines()
    assert lines[0] == f"hks login {cli_platform.portal_url}"  # the portal's own address, nothing to edit
    session = Session(cli_platform, cli_env, tmp_path, "erin")  # no HKS_URL: the line says where
    for line in lines:
        session.run(line, "DEVICE" if line.startswith("hks login") else "")
    listed = session.run("hks-func list -o json")
    assert [(f["name"], f["status"]) for f in json.loads(listed.stdout)] == [("my-function", "ready")]


def test_the_readme_cli_block_runs_as_shown(cli_platform, cli_env, tmp_path, sandbox):
    cli_platform.create_user("rita", PASSWORD, project="demo", role="owner")
    lines = _cli_blocks((ROOT / "README.md").read_text())
    assert lines[0] == "hks login" and len(lines) >= 4
    session = Session(cli_platform, {**cli_env, "HKS_URL": cli_platform.portal_url}, tmp_path, "rita")
    for line in lines:
        session.run(line, "DEVICE" if line == "hks login" else "")
    described = session.run("hks-func describe my-function -o json")
    assert json.loads(described.stdout)["status"] == "ready"


def test_docs_cli_md_runs_as_shown(cli_platform, cli_env, tmp_path, sandbox):
    project = "my-serverless-project"
    cli_platform.create_user("dale", PASSWORD, project=project, role="developer")
    session = Session(cli_platform, {**cli_env, "HKS_URL": cli_platform.portal_url}, tmp_path, "dale")
    for line in _cli_blocks((ROOT / "docs" / "cli.md").read_text()):  # the sample workflow
        session.run(line, "DEVICE" if line == "hks login" else "")
    session.cwd = tmp_path
    for lines in SYNOPSES.values():
        for line in lines:
            mode, _, rest = line.partition(" ")
            if mode not in ("DEVICE", "PASSWORD", "EXIT5"):
                mode, rest = "", line
            session.run(rest.format(user="dale", fn="hello", tmp=tmp_path, project=project), mode)
    assert "hello" not in session.run("hks-func list").stdout


@pytest.fixture(scope="module")
def nora(cli_platform):
    cli_platform.create_user("nora", PASSWORD, project="acme", role="viewer")


@pytest.mark.parametrize(
    "line",
    [
        "hks login {url} --token $TOKEN",
        "hks login --url {url} --token $TOKEN",
        "hks --url {url} login --token $TOKEN",
        "HKS_URL={url} HKS_TOKEN=$TOKEN hks login",
    ],
)
def test_each_way_to_name_the_portal_logs_in_there_and_saves_it(cli_platform, nora, cli_env, tmp_path, line):
    session = Session(cli_platform, cli_env, tmp_path, "nora")
    session.run(f'echo "$PW" | hks --url {cli_platform.portal_url} login -u nora --password-stdin')
    fresh = Session(cli_platform, {**cli_env, "XDG_CONFIG_HOME": str(tmp_path / "fresh")}, tmp_path, "nora")
    fresh.last_token = session.token()
    assert "Logged in to" in fresh.run(line.format(url=cli_platform.portal_url)).stdout
    saved = json.loads((tmp_path / "fresh" / "hks" / "config.json").read_text())
    assert saved["url"] == cli_platform.portal_url and saved["username"] == "nora"


def test_two_different_portals_on_one_login_line_are_refused(cli_env):
    result = subprocess.run(
        [str(BIN / "hks"), "--url", "http://127.0.0.1:9", "login", "http://127.0.0.1:10", "--token", "x"],
        env=cli_env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "two different portal URLs" in result.stderr
