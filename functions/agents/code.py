"""Turns an agent's code into the source archive of a throwaway function.

The wrappers in ``wrappers/`` are ordinary Knative-style functions (``func-python``,
``faas-js-runtime``)
that run the code on each request and answer with stdout, stderr, the last expression's value, the error
(name, value, traceback), an exit code and the duration - the shape E2B's ``run_code`` returns.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from functions.sources.archives import pack_files

TEMPLATES = Path(__file__).with_name("wrappers")
MAX_CODE_BYTES = 512 * 1024


def agent_archive(*, name: str, runtime: str, code: str, files: dict[str, str] | None = None) -> bytes:
    """A tar.gz for function ``name`` running ``code``; ``files`` are extra files beside it."""
    if runtime not in ("python", "node"):
        raise ValueError(f"runtime {runtime!r} is not supported for agent code (use python or node)")
    if len(code.encode()) > MAX_CODE_BYTES:
        raise ValueError(f"code is larger than {MAX_CODE_BYTES} bytes")
    contents: dict[str, bytes] = {}
    root = TEMPLATES / runtime
    for path in root.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            contents[path.relative_to(root).as_posix()] = path.read_bytes()
    code_path = "function/agent_code.py" if runtime == "python" else "agent_code.js"
    contents[code_path] = code.encode()
    for extra_name, text in (files or {}).items():
        contents[extra_name] = text.encode()
    func_yaml = {"specVersion": "0.36.0", "name": name, "runtime": runtime, "invoke": "http"}
    contents["func.yaml"] = yaml.safe_dump(func_yaml).encode()
    return pack_files(contents)
