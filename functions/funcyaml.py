"""Reading the fields of Knative Functions' ``func.yaml`` that the platform acts on."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .validators import DNS_LABEL_RE

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
    pass


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


def _envs(raw) -> dict[str, str]:
    envs: dict[str, str] = {}
    for item in raw or []:
        if not isinstance(item, dict) or "name" not in item:
            raise FuncYamlError("run.envs entries need a name and a value")
        value = item.get("value", "")
        if isinstance(value, str) and value.startswith("{{"):
            continue  # secret/configmap references are resolved on a cluster only
        envs[str(item["name"])] = "" if value is None else str(value)
    return envs


def parse_func_yaml(data: dict) -> FuncConfig:
    name = str(data.get("name") or "")
    runtime = str(data.get("runtime") or "")
    if runtime not in RUNTIMES:
        raise FuncYamlError(f"func.yaml runtime {runtime!r} is not supported (use node or python)")
    if name and not DNS_LABEL_RE.match(name):
        raise FuncYamlError(f"func.yaml name {name!r} is not a DNS label")
    invoke = str(data.get("invoke") or "http")
    deploy_options = ((data.get("deploy") or {}).get("options")) or {}
    scale = deploy_options.get("scale") or {}
    resources = deploy_options.get("resources") or {}
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    config = FuncConfig(
        name=name,
        runtime=runtime,
        kind="cloudevents" if invoke.startswith("cloudevent") else "http",
        envs=_envs((data.get("run") or {}).get("envs")),
    )
    for key in ("min", "max", "target"):
        if scale.get(key) is not None:
            try:
                config.scale[key] = int(scale[key])
            except (TypeError, ValueError) as exc:
                raise FuncYamlError(f"deploy.options.scale.{key} must be a number") from exc
    cpu = limits.get("cpu") or requests.get("cpu")
    memory = limits.get("memory") or requests.get("memory")
    config.cpu_millicores = parse_cpu(cpu) if cpu else None
    config.memory_mb = parse_memory(memory) if memory else None
    if limits.get("concurrency") is not None:
        config.container_concurrency = int(limits["concurrency"])
    return config
