"""What both commands share: building the API client from config, the selected project, the kubeconfig
of Knative projects, and running a command with errors turned into messages and exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from . import config as cfg
from .client import Api
from .errors import NOT_LOGGED_IN, CliError


def add_output_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=["text", "json"],
        default="text",
        help="json prints machine-readable output on stdout",
    )


def api_from(args) -> Api:
    config = cfg.load()
    if getattr(args, "url", None):
        config.url = args.url.rstrip("/")
    return Api(config)


def require_project(api: Api) -> str:
    if not api.config.token:
        raise CliError("not logged in: run `hks login` first (or set HKS_TOKEN)", NOT_LOGGED_IN)
    if not api.config.project:
        raise CliError(
            "no project selected: run `hks project select NAME` (or set HKS_PROJECT)", NOT_LOGGED_IN
        )
    return api.config.project


def kubeconfig_path(slug: str) -> Path:
    return cfg.config_dir() / "kubeconfigs" / f"{slug}.yaml"


def fetch_kubeconfig(api: Api, slug: str, path: Path | None = None) -> tuple[Path, str]:
    """Download a Knative project's kubeconfig to ``path`` (mode 0600); returns (path, namespace)."""
    data = api.get(f"/projects/{slug}/kubeconfig")
    path = path or kubeconfig_path(slug)
    cfg.write_private(path, data["kubeconfig"])
    return path, data.get("namespace") or slug


def run(prog: str, handler: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    try:
        return handler(args) or 0
    except CliError as exc:
        print(f"{prog}: error: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
