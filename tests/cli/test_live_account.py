"""``hks`` against a live portal: every way to log in, projects, and the error messages and exit codes
people and scripts rely on."""

import json
import re
import stat
from pathlib import Path

import httpx
import pytest

from .conftest import HKS, HKS_FUNC, PASSWORD, login, run_cli

pytestmark = pytest.mark.usefixtures("cli_users")


def _config(env) -> Path:
    return Path(env["XDG_CONFIG_HOME"]) / "hks" / "config.json"


def test_password_stdin_login_saves_a_private_config_and_selects_the_only_project(cli_users, cli_env):
    env = login(cli_users, cli_env, "dana")
    path = _config(env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert saved["token"].startswith("hks_") and saved["project"] == "acme" and saved["username"] == "dana"
    whoami = run_cli(HKS, "whoami", env={**cli_env})
    assert whoami.returncode == 0
    assert whoami.stdout.startswith(f"dana at {cli_users.portal_url}")


def test_wrong_password_exits_3_and_saves_nothing(cli_users, cli_env):
    env = {**cli_env, "HKS_URL": cli_users.portal_url}
    result = run_cli(HKS, "login", "-u", "dana", "--password-stdin", env=env, input="wrong\n")
    assert result.returncode == 3
    assert "wrong user name or password" in result.stderr
    assert not _config(env).exists()


def _browser_session(platform, username: str) -> httpx.Client:
    client = httpx.Client(base_url=platform.portal_url, follow_redirects=True)
    page = client.get("/accounts/login/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    signed_in = client.post(
        "/accounts/login/", data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": csrf}
    )
    assert signed_in.status_code == 200 and "sessionid" in client.cookies
    return client


def _migrated(platform) -> bool:
    out = platform.manage(
        "shell",
        "-c",
        (
            "from django.db import connection;"
            "print('functions_cliloginrequest' in connection.introspection.table_names())"
        ),
        capture=True,
    )
    return out.strip().endswith("True")


def test_device_login_is_approved_in_the_portal(cli_users, cli_env):
    if not _migrated(cli_users):
        pytest.skip("CliLoginRequest has no migration yet (functions/migrations needs regenerating)")
    env = {**cli_env, "HKS_URL": cli_users.portal_url}
    import subprocess

    proc = subprocess.Popen(
        [HKS, "login", "--no-browser"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        url = None
        while url is None:
            line = proc.stderr.readline()
            assert line, "hks login ended without printing a URL"
            match = re.search(r"(http://\S+/cli/approve\?code=([A-Z0-9-]+))", line)
            url = match and match.group(1)
        code = url.rsplit("=", 1)[1]
        browser = _browser_session(cli_users, "dana")
        page = browser.get(url)
        assert code in page.text
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        approved = browser.post("/cli/approve", data={"code": code, "csrfmiddlewaretoken": csrf})
        assert approved.status_code == 200 and "cli-approve-done" in approved.text
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0, err
    assert "as dana" in out
    assert json.loads(_config(env).read_text())["username"] == "dana"


def test_token_login_from_hks_token(cli_users, cli_env):
    token = json.loads(_config(login(cli_users, cli_env, "vic")).read_text())["token"]
    fresh = {**cli_env, "XDG_CONFIG_HOME": cli_env["XDG_CONFIG_HOME"] + "-2", "HKS_URL": cli_users.portal_url}
    result = run_cli(HKS, "login", env={**fresh, "HKS_TOKEN": token})
    assert result.returncode == 0, result.stderr
    assert "as vic" in result.stdout
    assert json.loads(_config(fresh).read_text())["token"] == token


def test_project_list_select_and_current(cli_users, cli_env):
    env = login(cli_users, cli_env, "oscar")
    listed = run_cli(HKS, "project", "list", "-o", "json", env=env)
    assert [p["slug"] for p in json.loads(listed.stdout)] == ["globex"]
    assert run_cli(HKS, "project", "current", env=env).stdout.strip() == "globex"
    outsider = run_cli(HKS, "project", "select", "acme", env=env)
    assert outsider.returncode == 5
    assert "no project named 'acme'" in outsider.stderr
    assert json.loads(_config(env).read_text())["project"] == "globex"
    override = run_cli(HKS, "project", "current", env={**env, "HKS_PROJECT": "other"})
    assert override.stdout.strip() == "other"


def test_an_owner_invites_and_the_user_accepts(cli_users, cli_env):
    cli_users.create_user("ivy", PASSWORD, project="ivy-own", role="owner")  # in no project of oscar's
    owner = login(cli_users, cli_env, "oscar")
    invited = run_cli(HKS, "project", "invite", "ivy", "--role", "viewer", env=owner)
    unknown = run_cli(HKS, "project", "invite", "no-such-user", "--role", "viewer", env=owner)
    assert invited.returncode == unknown.returncode == 0, invited.stderr
    assert invited.stdout.replace("ivy", "X") == unknown.stdout.replace("no-such-user", "X")  # no enumeration
    ivy = login(cli_users, {**cli_env, "XDG_CONFIG_HOME": cli_env["XDG_CONFIG_HOME"] + "-ivy"}, "ivy")
    assert "globex" not in run_cli(HKS, "project", "list", env=ivy).stdout  # not before accepting
    pending = json.loads(run_cli(HKS, "invitation", "list", "-o", "json", env=ivy).stdout)
    assert [(i["project"], i["role"]) for i in pending] == [("globex", "viewer")]
    accepted = run_cli(HKS, "invitation", "accept", "globex", env=ivy)
    assert accepted.returncode == 0 and "Joined globex as viewer" in accepted.stdout
    assert "globex" in run_cli(HKS, "project", "list", env=ivy).stdout


def test_outsider_gets_not_found_for_another_projects_functions(cli_users, cli_env):
    env = {**login(cli_users, cli_env, "oscar"), "HKS_PROJECT": "acme"}
    result = run_cli(HKS_FUNC, "list", env=env)
    assert result.returncode == 5
    assert "No such project" in result.stderr


def test_not_logged_in_exits_3_with_a_hint(cli_env, cli_users):
    result = run_cli(HKS_FUNC, "list", env={**cli_env, "HKS_URL": cli_users.portal_url})
    assert result.returncode == 3
    assert "not logged in: run `hks login`" in result.stderr


def test_no_project_selected_exits_3(cli_users, cli_env):
    env = login(cli_users, cli_env, "dana")
    run_cli(HKS, "project", "select", "acme", env=env)
    config = _config(env)
    config.write_text(json.dumps({**json.loads(config.read_text()), "project": ""}))
    result = run_cli(HKS_FUNC, "list", env=env)
    assert result.returncode == 3
    assert "no project selected" in result.stderr


def test_unreachable_portal_exits_7(cli_env):
    result = run_cli(
        HKS_FUNC,
        "list",
        env={**cli_env, "HKS_URL": "http://127.0.0.1:9", "HKS_TOKEN": "hks_x", "HKS_PROJECT": "acme"},
    )
    assert result.returncode == 7
    assert "cannot reach the portal at http://127.0.0.1:9" in result.stderr


def test_revoked_or_bad_token_exits_3(cli_users, cli_env):
    env = {**cli_env, "HKS_URL": cli_users.portal_url, "HKS_TOKEN": "hks_not-a-token", "HKS_PROJECT": "acme"}
    result = run_cli(HKS_FUNC, "list", env=env)
    assert result.returncode == 3
    assert "run `hks login`" in result.stderr


def test_viewer_deploy_is_permission_denied_with_the_servers_reason(cli_users, cli_env, tmp_path):
    env = login(cli_users, cli_env, "vic")
    assert run_cli(HKS_FUNC, "create", "-l", "node", "viewed", env=env, cwd=tmp_path).returncode == 0
    result = run_cli(HKS_FUNC, "deploy", env=env, cwd=tmp_path / "viewed")
    assert result.returncode == 4
    assert "permission denied: This needs the developer role in project acme" in result.stderr


def test_kubeconfig_of_a_local_project_is_not_found_with_the_reason(cli_users, cli_env):
    env = login(cli_users, cli_env, "dana")
    result = run_cli(HKS, "project", "kubeconfig", env=env)
    assert result.returncode == 5
    assert "runs on the local runtime" in result.stderr


def test_logout_forgets_the_token(cli_users, cli_env):
    env = login(cli_users, cli_env, "dana")
    assert run_cli(HKS, "logout", env=env).returncode == 0
    assert json.loads(_config(env).read_text())["token"] == ""
    assert run_cli(HKS, "whoami", env=env).returncode == 3


@pytest.mark.parametrize(
    "argv",
    [
        [HKS, "--help"],
        [HKS, "project", "kubeconfig", "--help"],
        [HKS_FUNC, "deploy", "--help"],
        [HKS_FUNC, "env", "set", "--help"],
    ],
)
def test_help_everywhere(argv, cli_env):
    result = run_cli(argv[0], *argv[1:], env=cli_env)
    assert result.returncode == 0 and "usage:" in result.stdout
