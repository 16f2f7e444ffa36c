"""The agent runtime layer: a read-only venv of pinned libraries that sessions and execute() import offline.

``agent_requirements.txt`` pins the whole set (numpy, pandas, matplotlib, pyyaml, requests and their
dependencies), installed as wheels only with ``--no-deps``, so nothing runs a build script and the layer is
the same on every machine with the same Python. It is built once per runtime data dir (about a minute or
two: ~290 MB) on a background thread when the daemon starts; until then agents start without it, and
``status()`` says so. Like the function runtime layers it is made from the system interpreter under /usr,
which the sandbox sees, and mounted read-only at ``/layer``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

REQUIREMENTS = Path(__file__).with_name("agent_requirements.txt")
TOP_LEVEL = ("numpy", "pandas", "matplotlib", "PyYAML", "requests")
PYTHON = "/usr/bin/python3"
_PATH = "/usr/local/bin:/usr/bin:/bin"


def pins() -> dict[str, str]:
    found = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            found[name] = version
    return found


def libraries() -> dict[str, str]:
    """The documented libraries and their versions (dependencies left out)."""
    everything = pins()
    return {name: everything[name] for name in TOP_LEVEL if name in everything}


def layer_path(layers_dir: Path) -> Path:
    version = subprocess.run(
        [PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    return layers_dir / f"agent-python-{version}-{digest}"


def ready(layers_dir: Path) -> Path | None:
    path = layer_path(layers_dir)
    return path if (path / "layer.json").exists() else None


def build(layers_dir: Path, log=lambda line: None) -> Path:
    """Build the layer (idempotent: an existing one is returned as is). Blocking; minutes on a slow link."""
    existing = ready(layers_dir)
    if existing is not None:
        return existing
    final = layer_path(layers_dir)
    layers_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".agent-layer-", dir=layers_dir))
    env = {"PATH": _PATH, "HOME": str(tmp), **{k: v for k, v in os.environ.items() if k.startswith("PIP_")}}
    try:
        _run([PYTHON, "-m", "venv", str(tmp)], env, log)
        pip = [str(tmp / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--no-input"]
        install = ["install", "--no-cache-dir", "--only-binary=:all:", "--no-deps", "-r", str(REQUIREMENTS)]
        _run(pip + install, env, log)
        info = {"python": "/layer/bin/python", "libraries": libraries()}
        (tmp / "layer.json").write_text(json.dumps(info))
        tmp.chmod(0o755)
        try:
            tmp.rename(final)
        except OSError:  # another builder won
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _run(argv: list[str], env: dict[str, str], log) -> None:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    for line in (result.stdout + result.stderr).splitlines()[-20:]:
        log(line)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... failed ({result.returncode}): {result.stderr[-500:]}")
