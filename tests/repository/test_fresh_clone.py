"""A fresh clone stands on its own: cloned into an empty directory, with nothing beside it, no
HKS_KNATIVE_SCHEMAS and nothing configured, the Knative manifest tests pass there.

It clones the committed state (HEAD) of this checkout; changes not yet committed are not in the clone.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KNATIVE_TESTS = [
    "tests/backends/test_k8s_manifests.py",
    "tests/backends/test_knative_schemas.py",
    "tests/backends/test_k8s_fake.py",
    "tests/backends/test_knative.py",
]


def _clean_env(clone: Path) -> dict:
    drop = ("HKS_", "DATABASE_URL", "REDIS_URL", "PYTEST_", "DJANGO_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["HKS_DATA_DIR"] = str(clone / "var" / "test")  # what scripts/test sets, inside the clone
    return env


def test_the_knative_tests_pass_in_a_clone_with_nothing_beside_it(tmp_path):
    assert shutil.which("git"), "git is needed to clone"
    empty = tmp_path / "empty"
    empty.mkdir()
    clone = empty / "hks"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    assert [p.name for p in empty.iterdir()] == ["hks"]
    env = _clean_env(clone)
    (clone / "var" / "test").mkdir(parents=True)
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import functions, tests.support.knative_schemas as k; print(functions.__file__, k.source())",
        ],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(clone)), where.stdout  # the clone's code, not this checkout's
    assert "cloudcoil-models-knative-serving" in where.stdout  # the schemas come from the package
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *KNATIVE_TESTS],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    tail = result.stdout[-3000:] + result.stderr[-2000:]
    assert result.returncode == 0, tail
    assert " passed" in result.stdout and " skipped" not in result.stdout and " error" not in result.stdout, (
        tail
    )
