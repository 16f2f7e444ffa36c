"""Handing ``hks-func`` subcommands to Knative's own ``func`` (or ``kn func``) for Knative projects.

The upstream tool then works with no configuration: ``KUBECONFIG`` points at the project's kubeconfig
(fetched from the portal and stored 0600 in the config dir) and the namespace is set, both as
``--namespace`` (for subcommands that take it) and as ``FUNC_NAMESPACE``.
"""

from __future__ import annotations

import os
import shutil

from .client import Api
from .common import fetch_kubeconfig

# Subcommands that go upstream even though hks-func has its own of the same name.
PASSED_THROUGH = {"build", "deploy", "invoke"}
# Upstream subcommands with no --namespace flag.
NO_NAMESPACE_FLAG = {
    "build",
    "create",
    "run",
    "config",
    "languages",
    "templates",
    "version",
    "completion",
    "help",
    "environment",
    "repository",
}


def upstream_tool() -> list[str] | None:
    """``[func]`` or ``[kn, func]`` when installed, else None."""
    func = shutil.which("func")
    if func:
        return [func]
    kn = shutil.which("kn")
    return [kn, "func"] if kn else None


def should_pass(command: str, own_commands: set[str]) -> bool:
    return command in PASSED_THROUGH or (command not in own_commands and not command.startswith("-"))


def upstream_argv(tool: list[str], argv: list[str], namespace: str) -> list[str]:
    command, rest = argv[0], argv[1:]
    has_namespace = any(a in ("-n", "--namespace") or a.startswith("--namespace=") for a in rest)
    extra = [] if has_namespace or command in NO_NAMESPACE_FLAG else ["--namespace", namespace]
    return [*tool, command, *rest, *extra]


def exec_upstream(api: Api, project: dict, tool: list[str], argv: list[str]) -> None:
    """Replace this process with the upstream tool (never returns)."""
    kubeconfig, namespace = fetch_kubeconfig(api, project["slug"])
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "FUNC_NAMESPACE": namespace}
    full = upstream_argv(tool, argv, namespace)
    os.execve(full[0], full, env)
