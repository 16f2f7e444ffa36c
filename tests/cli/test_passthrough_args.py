"""Which upstream tool runs and with which arguments (the live exec is in test_live_passthrough)."""

from hks_cli import passthrough


def _exe(directory, name):
    path = directory / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


def test_kn_is_used_as_kn_func_when_func_is_missing(tmp_path, monkeypatch):
    kn = _exe(tmp_path, "kn")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert passthrough.upstream_tool() == [kn, "func"]


def test_func_is_preferred_over_kn(tmp_path, monkeypatch):
    _exe(tmp_path, "kn")
    func = _exe(tmp_path, "func")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert passthrough.upstream_tool() == [func]


def test_no_tool_means_no_passthrough(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert passthrough.upstream_tool() is None


def test_namespace_is_appended_only_where_upstream_takes_it():
    assert passthrough.upstream_argv(["kn", "func"], ["deploy", "-v"], "ns") == [
        "kn",
        "func",
        "deploy",
        "-v",
        "--namespace",
        "ns",
    ]
    assert passthrough.upstream_argv(["func"], ["build"], "ns") == ["func", "build"]
    assert passthrough.upstream_argv(["func"], ["describe", "--namespace=x"], "ns") == [
        "func",
        "describe",
        "--namespace=x",
    ]


def test_own_commands_other_than_build_deploy_invoke_stay_local():
    own = {"create", "deploy", "invoke", "logs", "list"}
    assert passthrough.should_pass("deploy", own) and passthrough.should_pass("build", own)
    assert passthrough.should_pass("subscribe", own)
    assert not passthrough.should_pass("logs", own) and not passthrough.should_pass("--help", own)
