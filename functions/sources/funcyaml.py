"""Reading Knative Functions' ``func.yaml``: the YAML itself (bounded), then the fields the platform acts on.

``func.yaml`` comes from tenants, so loading it is bounded before anything is built from it: the document's
size, the number of aliases, and the size of what the aliases expand to (a "billion laughs" document of a
few hundred bytes would otherwise become gigabytes once stored as JSON). Every field is type-checked; a
wrong one is a ``FuncYamlError`` naming the field, never a crash.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field

import yaml

from functions.validators import DNS_LABEL_RE, check_env

MAX_DOCUMENT_BYTES = 64 * 1024
MAX_ALIASES = 100
MAX_NODES = 10_000  # scalars, sequences and mappings after alias expansion
MAX_DEPTH = 32

RUNTIMES = {"node", "python"}
_CPU_RE = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
_MEM_RE = re.compile(r"^(\d+)(Ki|Mi|Gi|K|M|G)?$")
_MEM_FACTOR = {
    None: 1 / 2**20,
    "Ki": 1 / 1024,
    "Mi": 1,
    "Gi": 1024,
    "K": 1000 / 2**20,
    "M": 10**6 / 2**20,
    "G": 10**9 / 2**20,
}


class FuncYamlError(ValueError):
    """func.yaml was refused; the message says which field and why."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing documents with more than ``MAX_ALIASES`` aliases or nesting deeper
    than ``MAX_DEPTH`` (its composer recurses once per level)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise FuncYamlError(f"func.yaml uses more than {MAX_ALIASES} aliases")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise FuncYamlError(f"func.yaml is nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _count_nodes(node: yaml.Node, budget: list[int]) -> None:
    """Walk the composed node graph as its JSON would be written - aliases expanded - within a budget."""
    budget[0] -= 1
    if budget[0] < 0:
        raise FuncYamlError(f"func.yaml expands to more than {MAX_NODES} values (through its aliases)")
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            _count_nodes(child, budget)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            _count_nodes(key, budget)
            _count_nodes(value, budget)


def _json_default(value):
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not allowed in func.yaml")


def load_func_yaml(text: bytes | str) -> dict:
    """Parse a ``func.yaml`` document into plain JSON-able data, refusing oversized or explosive ones."""
    size = len(text.encode() if isinstance(text, str) else text)
    if size > MAX_DOCUMENT_BYTES:
        raise FuncYamlError(f"func.yaml is {size} bytes; the limit is {MAX_DOCUMENT_BYTES}")
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}
        _count_nodes(node, [MAX_NODES])
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise FuncYamlError(f"func.yaml is not valid YAML: {exc}") from exc
    except RecursionError as exc:
        raise FuncYamlError("func.yaml refers to itself") from exc
    finally:
        loader.dispose()
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FuncYamlError("func.yaml must be a mapping")
    try:  # stored as JSON: YAML timestamps (kn func writes `created:`) become ISO strings
        return json.loads(json.dumps(data, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise FuncYamlError(f"func.yaml has values that cannot be stored: {exc}") from exc


@dataclass
class FuncConfig:
    name: str
    runtime: str
    kind: str = "http"
    envs: dict[str, str] = field(default_factory=dict)
    scale: dict[str, int] = field(default_factory=dict)  # min, max, target
    cpu_millicores: int | None = None
    memory_mb: int | None = None
    container_concurrency: int | None = None


def parse_cpu(value) -> int:
    match = _CPU_RE.match(str(value).strip())
    if not match:
        raise FuncYamlError(f"invalid CPU quantity {value!r} (use e.g. 500m or 1)")
    number = float(match.group(1))
    return int(number if match.group(2) else number * 1000)


def parse_memory(value) -> int:
    match = _MEM_RE.match(str(value).strip())
    if not match:
        raise FuncYamlError(f"invalid memory quantity {value!r} (use e.g. 256Mi or 1Gi)")
    return max(1, int(int(match.group(1)) * _MEM_FACTOR[match.group(2)]))


def _mapping(data: dict, path: str) -> dict:
    """The mapping at dotted ``path`` under ``data``; missing or null is empty, anything else refused."""
    value = data
    keys = path.split(".")
    for depth, key in enumerate(keys, start=1):
        value = value.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            where = ".".join(keys[:depth])
            raise FuncYamlError(f"func.yaml {where} must be a mapping, not {type(value).__name__}")
    return value


def _int(value, path: str, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise FuncYamlError(f"func.yaml {path} must be a whole number")
    try:
        number = int(value)
    except ValueError as exc:
        raise FuncYamlError(f"func.yaml {path} must be a whole number, not {value!r}") from exc
    if not minimum <= number <= maximum:
        raise FuncYamlError(f"func.yaml {path} must be between {minimum} and {maximum}, not {number}")
    return number


def _envs(raw) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise FuncYamlError("func.yaml run.envs must be a list of {name, value} entries")
    envs: dict[str, str] = {}
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise FuncYamlError("func.yaml run.envs entries need a name and a value")
        value = item.get("value", "")
        if isinstance(value, str) and value.startswith("{{"):
            continue  # secret/configmap references are resolved on a cluster only
        if isinstance(value, dict | list):
            raise FuncYamlError(f"func.yaml run.envs {item['name']!r} must have a text value")
        envs[item["name"]] = "" if value is None else str(value)
    try:
        return check_env(envs)
    except ValueError as exc:
        raise FuncYamlError(f"func.yaml run.envs: {exc}") from exc


SCALE_BOUNDS = {"min": (0, 1000), "max": (1, 1000), "target": (1, 10_000)}


def parse_func_yaml(data: dict) -> FuncConfig:
    if not isinstance(data, dict):
        raise FuncYamlError("func.yaml must be a mapping")
    name = data.get("name") or ""
    runtime = data.get("runtime") or ""
    if not isinstance(name, str) or not isinstance(runtime, str):
        raise FuncYamlError("func.yaml name and runtime must be text")
    if runtime not in RUNTIMES:
        raise FuncYamlError(f"func.yaml runtime {runtime!r} is not supported (use node or python)")
    if name and not DNS_LABEL_RE.match(name):
        raise FuncYamlError(f"func.yaml name {name!r} is not a DNS label")
    invoke = data.get("invoke") or "http"
    if not isinstance(invoke, str):
        raise FuncYamlError("func.yaml invoke must be text (http or cloudevent)")
    scale = _mapping(data, "deploy.options.scale")
    limits = _mapping(data, "deploy.options.resources.limits")
    requests = _mapping(data, "deploy.options.resources.requests")
    config = FuncConfig(
        name=name,
        runtime=runtime,
        kind="cloudevents" if invoke.startswith("cloudevent") else "http",
        envs=_envs(_mapping(data, "run").get("envs")),
    )
    for key, (low, high) in SCALE_BOUNDS.items():
        if scale.get(key) is not None:
            config.scale[key] = _int(scale[key], f"deploy.options.scale.{key}", minimum=low, maximum=high)
    if config.scale.get("min", 0) > config.scale.get("max", SCALE_BOUNDS["max"][1]):
        raise FuncYamlError("func.yaml deploy.options.scale.min cannot be above max")
    cpu = limits.get("cpu") or requests.get("cpu")
    memory = limits.get("memory") or requests.get("memory")
    config.cpu_millicores = parse_cpu(cpu) if cpu else None
    config.memory_mb = parse_memory(memory) if memory else None
    if limits.get("concurrency") is not None:
        config.container_concurrency = _int(
            limits["concurrency"], "deploy.options.resources.limits.concurrency", minimum=0, maximum=10_000
        )
    return config
