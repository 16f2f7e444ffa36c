"""On a Knative project, ``hks-func`` hands build/deploy/invoke and unknown subcommands to ``func`` with
the project's kubeconfig (0600) and namespace; on a local project it never does. ``func`` here is a
stand-in script that records its arguments and environment."""

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from .conftest import HKS, HKS_FUNC, PASSWORD, login, run_cli

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: vc, cluster: {server: "https://vcluster.example:6443"}}]
users: [{name: dev, user: {token: "secret-token"}}]
contexts: [{name: vc, context: {cluster: vc, user: dev}}]
current-context: vc
"""

STAND_IN = """#!{python}
import json, os, sys
kubeconfig = os.environ.get("KUBECONFIG", "")
record = {{
    "argv": sys.argv[1:],
    "KUBECONFIG": kubeconfig,
    "FUNC_NAMESPACE": os.environ.get("FUNC_NAMESPACE"),
    "kubeconfig_text": open(kubeconfig).read() if kubeconfig else None,
    "kubeconfig_mode": oct(os.stat(kubeconfig).st_mode & 0o777) if kubeconfig else None,
}}
with open(os.environ["RECORD_FILE"], "w") as handle:
    json.dump(record, handle)
sys.exit(int(os.environ.get("STAND_IN_EXIT", "0")))
"""


@pytest.fixture(scope="module")
def knative_project(cli_users):
    cli_users.manage(
        "shell",
        "-c",
        (
            "from django.contrib.auth import get_user_model;"
            "from functions.models import Membership, Project;"
            "from functions.crypto import encrypt_text;"
            "p, _ = Project.objects.get_or_create(slug='kn-proj', defaults={'name': 'Knative'});"
            "p.backend = 'knative'; p.namespace = 'kn-ns';"
            f"p.kubeconfig_encrypted = encrypt_text({KUBECONFIG!r});"
            "p.save();"
            "dana = get_user_model().objects.get(username='dana');"
            "Membership.objects.update_or_create(project=p, user=dana, defaults={'role': 'developer'})"
        ),
        capture=True,
    )
    return "kn-proj"


@pytest.fixture
def func_on_path(tmp_path, cli_env):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "func"
    script.write_text(STAND_IN.format(python=sys.executable))
    script.chmod(0o755)
    record = tmp_path / "record.json"
    env = {**cli_env, "PATH": f"{bin_dir}{os.pathsep}{cli_env['PATH']}", "RECORD_FILE": str(record)}
    return env, record


def _as_dana(platform, env, project):
    env = login(platform, env, "dana")
    assert run_cli(HKS, "project", "select", project, env=env).returncode == 0
    return env


def test_deploy_passes_through_with_kubeconfig_and_namespace(cli_users, knative_project, func_on_path):
    env, record = func_on_path
    env = _as_dana(cli_users, env, knative_project)
    result = run_cli(HKS_FUNC, "deploy", "--path", "fn", "--build", env={**env, "STAND_IN_EXIT": "0"})
    assert result.returncode == 0, result.stderr
    seen = json.loads(record.read_text())
    assert seen["argv"] == ["deploy", "--path", "fn", "--build", "--namespace", "kn-ns"]
    assert seen["FUNC_NAMESPACE"] == "kn-ns"
    assert seen["kubeconfig_text"] == KUBECONFIG
    assert seen["kubeconfig_mode"] == "0o600"
    assert Path(seen["KUBECONFIG"]).is_relative_to(Path(env["XDG_CONFIG_HOME"]))


def test_build_and_unknown_subcommands_pass_through_and_keep_the_exit_code(
    cli_users, knative_project, func_on_path
):
    env, record = func_on_path
    env = _as_dana(cli_users, env, knative_project)
    built = run_cli(HKS_FUNC, "build", "--registry", "r.example", env=env)
    assert built.returncode == 0
    assert json.loads(record.read_text())["argv"] == ["build", "--registry", "r.example"]
    unknown = run_cli(HKS_FUNC, "subscribe", "--filter", "type=x", env={**env, "STAND_IN_EXIT": "3"})
    assert unknown.returncode == 3
    assert json.loads(record.read_text())["argv"] == [
        "subscribe",
        "--filter",
        "type=x",
        "--namespace",
        "kn-ns",
    ]


def test_an_explicit_namespace_is_not_doubled(cli_users, knative_project, func_on_path):
    env, record = func_on_path
    env = _as_dana(cli_users, env, knative_project)
    assert run_cli(HKS_FUNC, "invoke", "-n", "elsewhere", env=env).returncode == 0
    assert json.loads(record.read_text())["argv"] == ["invoke", "-n", "elsewhere"]


def test_own_commands_stay_ours_on_knative_projects(cli_users, knative_project, func_on_path):
    env, record = func_on_path
    env = _as_dana(cli_users, env, knative_project)
    result = run_cli(HKS_FUNC, "list", "-o", "json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert not record.exists()


def test_local_projects_never_pass_through(cli_users, func_on_path, tmp_path):
    env, record = func_on_path
    env = _as_dana(cli_users, env, "acme")
    result = run_cli(HKS_FUNC, "invoke", "nothing-here", env=env)
    assert result.returncode == 5
    unknown = run_cli(HKS_FUNC, "subscribe", env=env)
    assert unknown.returncode == 2
    assert not record.exists()


def test_project_kubeconfig_is_written_private(cli_users, knative_project, cli_env, tmp_path):
    env = _as_dana(cli_users, cli_env, knative_project)
    target = tmp_path / "kube" / "config.yaml"
    result = run_cli(HKS, "project", "kubeconfig", "-o", str(target), env=env)
    assert result.returncode == 0, result.stderr
    assert target.read_text() == KUBECONFIG
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "--namespace kn-ns" in result.stdout


def test_viewer_cannot_fetch_the_kubeconfig(cli_users, knative_project, cli_env):
    cli_users.create_user("vic", PASSWORD, project=knative_project, role="viewer")
    env = _as_dana(cli_users, cli_env, knative_project)
    env = login(cli_users, env, "vic")
    result = run_cli(HKS, "project", "kubeconfig", env={**env, "HKS_PROJECT": knative_project})
    assert result.returncode == 4
    assert "permission denied" in result.stderr
