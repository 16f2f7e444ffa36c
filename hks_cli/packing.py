"""Packing a function directory for upload: a deterministic tar.gz honouring ``.funcignore``.

``.funcignore`` uses gitignore syntax (``#`` comments, ``!`` negation, ``/`` anchoring, trailing ``/``
for directories, ``*``, ``?``, ``**``). ``.git``, ``node_modules``, ``__pycache__`` and ``.venv`` are
always left out: the platform installs dependencies itself.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .errors import USAGE, CliError

ALWAYS_SKIPPED = {".git", "node_modules", "__pycache__", ".venv"}


@dataclass(frozen=True)
class Rule:
    regex: re.Pattern
    negate: bool
    directory_only: bool


def _glob_to_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def parse_ignore(text: str) -> list[Rule]:
    rules = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line[1:] if negate else line
        directory_only = line.endswith("/")
        line = line.rstrip("/")
        anchored = "/" in line
        body = _glob_to_regex(line.lstrip("/"))
        regex = re.compile(("^" if anchored else "^(?:.*/)?") + body + "$")
        rules.append(Rule(regex, negate, directory_only))
    return rules


def is_ignored(relpath: str, *, is_dir: bool, rules: list[Rule]) -> bool:
    ignored = False
    for rule in rules:
        if rule.directory_only and not is_dir:
            continue
        if rule.regex.match(relpath):
            ignored = not rule.negate
    return ignored


def collect(root: Path) -> dict[str, bytes]:
    """The files to upload, by relative POSIX path."""
    ignore_file = root / ".funcignore"
    rules = parse_ignore(ignore_file.read_text()) if ignore_file.exists() else []
    files: dict[str, bytes] = {}

    def walk(directory: Path) -> None:
        for entry in sorted(directory.iterdir()):
            rel = entry.relative_to(root).as_posix()
            if entry.name in ALWAYS_SKIPPED or entry.is_symlink():
                continue  # links are refused by the portal; leaving them out is what the user wants
            if entry.is_dir():
                if not is_ignored(rel, is_dir=True, rules=rules):
                    walk(entry)
            elif entry.is_file() and not is_ignored(rel, is_dir=False, rules=rules):
                files[rel] = entry.read_bytes()

    walk(root)
    return files


def pack(root: Path) -> tuple[bytes, str]:
    """tar.gz bytes of the directory and a content hash (same files give the same bytes and hash)."""
    if not (root / "func.yaml").is_file():
        raise CliError(f"no func.yaml in {root}: run this in a function directory or pass --path", USAGE)
    files = collect(root)
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return buffer.getvalue(), digest.hexdigest()
