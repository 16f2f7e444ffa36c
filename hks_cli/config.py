"""The CLI's settings file: ``$XDG_CONFIG_HOME/hks/config.json`` (default ``~/.config/hks``), mode 0600.

It holds the portal URL, the API token and the selected project. ``HKS_URL``, ``HKS_TOKEN`` and
``HKS_PROJECT`` override what the file says, without changing it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hks"


def config_path() -> Path:
    return config_dir() / "config.json"


@dataclass
class Config:
    url: str = DEFAULT_URL
    token: str = ""
    project: str = ""
    username: str = ""


def load_stored() -> Config:
    """What the file says, without environment overrides (what ``save`` writes back)."""
    try:
        data = json.loads(config_path().read_text())
    except FileNotFoundError:
        return Config()
    except (OSError, ValueError):
        return Config()  # a damaged file behaves like no file; the next save replaces it
    known = {k: str(v) for k, v in data.items() if k in Config.__dataclass_fields__ and v is not None}
    return Config(**known)


def load() -> Config:
    config = load_stored()
    config.url = os.environ.get("HKS_URL") or config.url
    config.token = os.environ.get("HKS_TOKEN") or config.token
    config.project = os.environ.get("HKS_PROJECT") or config.project
    config.url = config.url.rstrip("/")
    return config


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only, never briefly readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def save(config: Config) -> None:
    write_private(config_path(), json.dumps(asdict(config), indent=2) + "\n")


def update(**changes) -> Config:
    stored = load_stored()
    for key, value in changes.items():
        setattr(stored, key, value)
    save(stored)
    return stored
