"""The tree stays as README.md's Layout table draws it (issue 14): no import cycle among the project's
modules, counting imports inside functions, except the one documented lazy edge (services enqueue tasks:
functions/services/enqueue.py); and no module imports another module's private (``_name``) names. The
layers themselves are import-linter contracts (.importlinter, run by .ci/run)."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("functions", "hks_portal", "hks_cli", "hks_sdk", "hks_runtime")
ALLOWED_EDGES = {("functions.services.enqueue", "functions.tasks")}


def _import_graph() -> dict[str, set[str]]:
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False, cache_dir=None)
    return {
        module: {
            imported
            for imported in graph.find_modules_directly_imported_by(module)
            # Importing an ancestor package of oneself (its __init__ has run by then) is no cycle of meaning.
            if not module.startswith(imported + ".") and (module, imported) not in ALLOWED_EDGES
        }
        for module in graph.modules
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_counting_imports_inside_functions():
    assert _cycles(_import_graph()) == []


def _project_modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts or "templates" in path.parts or "wrappers" in path.parts:
                continue
            yield path


def test_no_module_imports_a_private_name_of_another():
    private = []
    for path in _project_modules():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and (
                node.level > 0 or (node.module or "").startswith(PACKAGES)
            ):
                names = [alias.name for alias in node.names]
                private += [
                    f"{path.relative_to(ROOT)}: {node.module}.{name}"
                    for name in names
                    if name.startswith("_") and not name.startswith("__")
                ]
                if any(p.startswith("_") and not p.startswith("__") for p in (node.module or "").split(".")):
                    private.append(f"{path.relative_to(ROOT)}: {node.module}")
    assert private == []


def test_the_cli_checks_names_by_the_portals_rule():
    """hks_cli may not import the portal, so it keeps a copy of the one name rule: the same one."""
    from functions.validators import DNS_LABEL_RE
    from hks_cli.scaffold import DNS_LABEL

    assert DNS_LABEL.pattern == DNS_LABEL_RE.pattern
