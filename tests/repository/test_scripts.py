"""scripts/setup says in a few lines what it installs, how long it took and the result; pip's own output
(index warnings, the editable-install banner) goes to var/setup-pip.log, which a failure names."""

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = """\
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "hks-setup-probe"
version = "0"

[tool.setuptools]
py-modules = []
"""


def _project(tmp_path: Path, requirements: str) -> Path:
    """A checkout with the real scripts/setup and a small requirements.txt of its own."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup", tmp_path / "scripts" / "setup")
    (tmp_path / "requirements.txt").write_text(requirements)
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    return tmp_path


def _setup(project: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/setup"], cwd=project, capture_output=True, text=True, timeout=600)


def test_setup_prints_a_few_lines_and_keeps_pips_output_in_a_log(tmp_path):
    project = _project(tmp_path, "six==1.17.0\n")
    result = _setup(project)
    assert result.returncode == 0, result.stdout + result.stderr
    screen = (result.stdout + result.stderr).splitlines()
    assert screen[0].startswith("Installing Python packages into .venv")
    assert screen[1].startswith("  installed 1 packages in ") and "var/setup-pip.log" in screen[1]
    assert len(screen) == 2, screen
    log = (project / "var" / "setup-pip.log").read_text()
    assert "Successfully installed" in log and "six" in log
    assert subprocess.run([project / ".venv" / "bin" / "python", "-c", "import six"]).returncode == 0
    again = _setup(project)
    assert again.returncode == 0 and again.stdout == again.stderr == ""  # nothing changed: nothing to say


def test_a_failed_pip_install_shows_pips_error_and_names_the_log(tmp_path):
    project = _project(tmp_path, "./no-such-directory\n")
    result = _setup(project)
    assert result.returncode == 1
    assert "pip failed; its own error (the whole output is in var/setup-pip.log)" in result.stderr
    assert "ERROR" in result.stderr and "no-such-directory" in result.stderr
    assert "WARNING" not in result.stderr
    assert not (project / ".venv" / ".requirements.sha256").exists()  # the next run tries again
