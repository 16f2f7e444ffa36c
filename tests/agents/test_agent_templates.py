"""The wrappers that run agent code report stdout, stderr, result, error and exit code like E2B."""

import importlib.util
import json
import shutil
import subprocess

from functions.agents.code import TEMPLATES
from tests.support.needs import require_binary


def _python_run(tmp_path, code):
    target = tmp_path / "function"
    shutil.copytree(TEMPLATES / "python" / "function", target)
    (target / "agent_code.py").write_text(code)
    spec = importlib.util.spec_from_file_location("agent_func", target / "func.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run(code)


def test_python_wrapper_returns_output_and_last_expression(tmp_path):
    out = _python_run(tmp_path, "import sys\nprint('hello')\nprint('oops', file=sys.stderr)\n6 * 7")
    assert out["stdout"] == "hello\n"
    assert out["stderr"] == "oops\n"
    assert out["result"] == 42
    assert out["error"] is None and out["exit_code"] == 0


def test_python_wrapper_reports_the_exception_with_its_traceback(tmp_path):
    out = _python_run(tmp_path, "x = 1\nraise ValueError('bad value')")
    assert out["error"]["name"] == "ValueError"
    assert out["error"]["value"] == "bad value"
    assert "line 2" in out["error"]["traceback"]
    assert out["exit_code"] == 1


def test_python_wrapper_keeps_sys_exit_codes(tmp_path):
    assert _python_run(tmp_path, "import sys\nsys.exit(3)")["exit_code"] == 3


def test_node_wrapper_returns_output_result_and_error(tmp_path):
    node = require_binary("node")
    shutil.copytree(TEMPLATES / "node", tmp_path / "fn")
    results = {}
    for key, code in {
        "ok": "console.log('hi', 1); [1, 2].map(x => x * 2)",
        "err": "throw new TypeError('nope')",
    }.items():
        (tmp_path / "fn" / "agent_code.js").write_text(code)
        script = "require('./index.js').handle().then(r => process.stderr.write(JSON.stringify(r)))"
        proc = subprocess.run(
            [node, "-e", script], cwd=tmp_path / "fn", capture_output=True, text=True, check=True
        )
        results[key] = json.loads(proc.stderr.strip().splitlines()[-1])
    assert results["ok"]["stdout"] == "hi 1\n" and results["ok"]["result"] == [2, 4]
    assert results["err"]["error"]["name"] == "TypeError" and results["err"]["exit_code"] == 1
