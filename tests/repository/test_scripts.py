"""scripts/setup says in a few lines what it installs, how long it took and the result; pip's own output
(index warnings, the editable-install banner) goes to var/setup-pip.log, which a failure names."""

import os
import shutil
import subprocess
import tempfile
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


def _missing_everything(tmp_path: Path) -> Path:
    """A PATH where dpkg-query knows no package: the machine a fresh clone meets."""
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "dpkg-query").write_text("#!/bin/sh\nexit 1\n")
    (shims / "dpkg-query").chmod(0o755)
    return shims


def test_without_root_setup_prints_the_one_command_and_stops_before_anything():
    # pytest's tmp_path sits under a 0700 folder of root's: "nobody" needs one it can reach
    with tempfile.TemporaryDirectory(dir="/tmp") as where:
        _without_root(Path(where))


def _without_root(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    (tmp_path / "checkout").mkdir()
    project = _project(tmp_path / "checkout", "six==1.17.0\n")
    shims = _missing_everything(tmp_path)
    for path in (project, project / "scripts"):
        os.chown(path, 65534, 65534)
    env = {"PATH": f"{shims}:/usr/bin:/bin", "HOME": str(tmp_path)}
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    result = subprocess.run(
        [*nobody, "bash", "scripts/setup", "--tests"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    wanted = (
        "bubblewrap python3-seccomp haproxy prometheus python3-venv slirp4netns passt nftables iproute2"
        " chromium wrk"
    )
    assert lines == [
        f"HKS Functions needs these Debian packages: {wanted}",
        "Install them, then run this again:",
        f"  sudo apt-get update && sudo apt-get install -y {wanted}",
    ]
    assert not (project / ".venv").exists()  # stopped before the virtualenv: nothing half set up


def test_as_root_setup_installs_what_is_missing_with_apt_get(tmp_path):
    """As root, the missing packages go to apt-get (a shim here records the call: the real install was shown
    on a fresh machine, see the closing note of issue 10); a failure shows apt-get's own error."""
    (tmp_path / "checkout").mkdir()
    project = _project(tmp_path / "checkout", "six==1.17.0\n")
    shims = _missing_everything(tmp_path)
    calls = tmp_path / "apt-calls"
    (shims / "apt-get").write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\n'
        'case "$1" in install) echo "E: Unable to locate package wrk"; exit 100;; esac\n'
    )
    (shims / "apt-get").chmod(0o755)
    env = {"PATH": f"{shims}:/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        ["bash", "scripts/setup", "--tests"], cwd=project, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    recorded = calls.read_text().splitlines()
    assert recorded[0] == "update -q"
    assert recorded[1].startswith("install -y -q --no-install-recommends bubblewrap python3-seccomp haproxy")
    assert recorded[1].endswith("chromium wrk")
    assert result.stdout.startswith("Installing system packages: bubblewrap")
    assert "apt-get failed; its own error (the whole output is in var/setup-apt.log)" in result.stderr
    assert "E: Unable to locate package wrk" in result.stderr
    assert not (project / ".venv").exists()
