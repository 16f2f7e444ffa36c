"""Time from ``hks-func deploy`` to a ready URL, with the real CLI against a platform started here.

Measures a new Node function, a new Python function, and an unchanged redeploy of each (the portal reuses
the built artifact when the content hash matches), splitting each into build (upload + build), start
(apply until the revision answers as ready) and the CLI's own time (process start, packing). The first
deploy of each language on a fresh platform also builds the shared runtime layer, so it is reported
separately from a second new function. Then a function with one dependency (npm ``ms``, PyPI ``six``):
its first deploy installs it, a code change with unchanged dependencies reuses the dependency cache, and
an unchanged redeploy reuses the whole build.

    .venv/bin/python benchmarks/bench_deploy.py [--keep]

Prints a table, then one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hks_portal.platform import Platform, Ports  # noqa: E402

BIN = Path(sys.executable).parent
PASSWORD = "bench-password"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(*args: str, env: dict, cwd: Path | None = None, stdin: str | None = None) -> str:
    result = subprocess.run([*args], env=env, cwd=cwd, input=stdin, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout


def deploy(env: dict, directory: Path) -> dict:
    started = time.perf_counter()
    summary = json.loads(cli(str(BIN / "hks-func"), "deploy", "-o", "json", env=env, cwd=directory))
    summary["total_seconds"] = round(time.perf_counter() - started, 3)
    return summary


def start_platform(data_dir: Path) -> Platform:
    ports = Ports(portal=free_port(), runtime=free_port(), gateway=free_port(), prometheus=free_port())
    env = {
        "HKS_CELERY_QUEUE": f"hks-bench-{uuid.uuid4().hex[:8]}",
        "DATABASE_URL": f"sqlite:///{data_dir / 'db.sqlite3'}",
    }
    platform = Platform(data_dir=data_dir, ports=ports, env=env, quiet=True, with_prometheus=False)
    platform.start()
    platform.manage(
        "shell",
        "-c",
        (
            "from django.contrib.auth import get_user_model;"
            "from functions.models import Project, Membership;"
            "u, _ = get_user_model().objects.get_or_create(username='bench');"
            f"u.set_password({PASSWORD!r}); u.save();"
            "p, _ = Project.objects.get_or_create(slug='bench', defaults={'name': 'Bench'});"
            "Membership.objects.get_or_create(project=p, user=u, defaults={'role': 'developer'})"
        ),
        capture=True,
    )
    return platform


DEPENDENCY = {
    "node": ("package.json", '"dependencies": {}', '"dependencies": {"ms": "2.1.3"}'),
    "python": ("pyproject.toml", "dependencies = []", 'dependencies = ["six==1.16.0"]'),
}
ENTRY = {"node": "index.js", "python": "function/func.py"}


def _edit(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


def run(work: Path, platform: Platform) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HKS_")}
    env.update(XDG_CONFIG_HOME=str(work / "xdg"), HKS_URL=platform.portal_url, HKS_PROJECT="bench")
    cli(str(BIN / "hks"), "login", "-u", "bench", "--password-stdin", env=env, stdin=PASSWORD + "\n")
    results = {}
    for language in ("node", "python"):
        for label in ("first", "new"):
            name = f"bench-{language}-{label}"
            cli(str(BIN / "hks-func"), "create", "-l", language, name, env=env, cwd=work)
            results[f"{language}_{label}"] = deploy(env, work / name)
        results[f"{language}_unchanged"] = deploy(env, work / f"bench-{language}-new")
        # With a dependency: the first deploy installs it; a code change keeps the dependency cache.
        name = f"bench-{language}-deps"
        cli(str(BIN / "hks-func"), "create", "-l", language, name, env=env, cwd=work)
        _edit(work / name / DEPENDENCY[language][0], *DEPENDENCY[language][1:])
        results[f"{language}_deps_new"] = deploy(env, work / name)
        _edit(work / name / ENTRY[language], "Hello, ", "Hi, ")
        results[f"{language}_deps_code_changed"] = deploy(env, work / name)
        results[f"{language}_deps_unchanged"] = deploy(env, work / name)
    return results


def report(results: dict) -> None:
    print(f"{'case':<28}{'total s':>9}{'build s':>9}{'start s':>9}{'cli s':>7}  reused build")
    figures = {}
    for case, r in results.items():
        cli_s = max(0.0, r["total_seconds"] - r["build_seconds"] - r["start_seconds"])
        print(
            f"{case:<28}{r['total_seconds']:>9.2f}{r['build_seconds']:>9.2f}{r['start_seconds']:>9.2f}"
            f"{cli_s:>7.2f}  {r['reused_build']}"
        )
        figures[case] = {k: r[k] for k in ("total_seconds", "build_seconds", "start_seconds", "reused_build")}
        figures[case]["cli_seconds"] = round(cli_s, 3)
    for language in ("node", "python"):
        new, changed = results[f"{language}_deps_new"], results[f"{language}_deps_code_changed"]
        figures[f"{language}_deps_build_ratio_new_vs_code_changed"] = round(
            new["build_seconds"] / max(changed["build_seconds"], 1e-6), 2
        )
    print(json.dumps({"benchmark": "deploy", **figures}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hks-bench-deploy-"))
    work.chmod(0o711)  # sandboxed dependency installs run as "nobody" and must traverse to their build dir
    platform = start_platform(work / "platform")
    try:
        report(run(work, platform))
    finally:
        platform.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
