"""``hks-func create``: a new function directory in the layout and ``func.yaml`` of ``kn func``'s
templates (node: index.js + package.json + test/; python: function/func.py + pyproject.toml + tests/),
with our own template code whose tests need nothing installed."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from .errors import CONFLICT, USAGE, CliError

TEMPLATES = Path(__file__).resolve().parent / "templates"
LANGUAGES = ("node", "python")
KINDS = ("http", "cloudevents")
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")  # the portal's rule (functions/validators.py)
SPEC_VERSION = "0.36.0"
TEST_COMMAND = {"node": "node --test", "python": "python -m pytest  (or: python -m unittest discover tests)"}


def check_name(name: str) -> None:
    if not DNS_LABEL.match(name or ""):
        raise CliError(
            f"{name!r} is not a valid function name: use lowercase letters, digits and '-', "
            "start with a letter, at most 63 characters",
            USAGE,
        )


def func_yaml(*, name: str, language: str, kind: str, now: dt.datetime | None = None) -> str:
    created = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    lines = [
        "# Knative Functions configuration; `hks-func deploy` reads it (and so does `kn func`).",
        f"specVersion: {SPEC_VERSION}",
        f"name: {name}",
        f"runtime: {language}",
        f"created: {created}",
    ]
    if kind == "cloudevents":
        lines.append("invoke: cloudevent")
    lines += [
        "run:",
        "  envs: []  # e.g. - {name: GREETING, value: hello}",
        "deploy:",
        "  options:",
        "    scale:",
        "      min: 0",
        "      max: 10",
    ]
    return "\n".join(lines) + "\n"


def readme(*, name: str, language: str, kind: str) -> str:
    entry = "index.js" if language == "node" else "function/func.py"
    return (
        f"# {name}\n\nA {kind} function ({language}) for HKS Functions, in the Knative Functions layout.\n\n"
        f"- Code: `{entry}`\n"
        "- Configuration: `func.yaml` (env vars in `run.envs`, scale in `deploy.options`)\n"
        f"- Tests: `{TEST_COMMAND[language]}`\n- Files left out of deploys: `.funcignore`\n\n"
        'Deploy and call it:\n\n    hks-func deploy\n    hks-func invoke --data \'{"hello": "world"}\'\n'
        "    hks-func logs\n"
    )


def _copy_tree(source: Path, target: Path, name: str) -> None:
    for path in sorted(source.rglob("*")):
        if path.is_dir() or "__pycache__" in path.parts:
            continue
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(path.read_text().replace("__NAME__", name))


def create(*, name: str, language: str, kind: str = "http", directory: Path | None = None) -> Path:
    """Write the new function's files; refuses to touch a directory that is not empty."""
    check_name(name)
    if language not in LANGUAGES:
        raise CliError(f"language {language!r} is not supported (use node or python)", USAGE)
    if kind not in KINDS:
        raise CliError(f"template {kind!r} is not supported (use http or cloudevents)", USAGE)
    target = directory or Path(name)
    if target.exists() and any(target.iterdir()):
        raise CliError(f"{target} already exists and is not empty; choose another name or --path", CONFLICT)
    target.mkdir(parents=True, exist_ok=True)
    _copy_tree(TEMPLATES / language / kind, target, name)
    _copy_tree(TEMPLATES / "common", target, name)
    (target / "func.yaml").write_text(func_yaml(name=name, language=language, kind=kind))
    (target / "README.md").write_text(readme(name=name, language=language, kind=kind))
    return target
