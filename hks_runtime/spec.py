"""The service spec the control API accepts (the JSON form of ``functions.backends.base.ServiceSpec``)."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field

# Names are DNS-1035 labels, the rule Knative applies to a Service's name and the portal to every name it
# makes: a letter first, then letters, digits and dashes, no dash last, at most 63 characters.
DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
RUNTIMES = ("node", "python")
KINDS = ("http", "cloudevents")
PROFILES = ("standard", "restricted")
RESERVED_ENV = (
    "PORT",
    "K_SERVICE",
    "K_REVISION",
    "K_CONFIGURATION",
    "LISTEN_ADDRESS",
    "LISTEN_FD",
    "FUNC_PORT",
)


class SpecError(ValueError):
    """A spec the daemon cannot run; retrying the same spec cannot help."""


@dataclass(frozen=True)
class FunctionSpec:
    namespace: str
    name: str
    revision: str
    runtime: str
    kind: str
    artifact: str
    env: dict[str, str] = field(default_factory=dict)
    min_scale: int = 0
    max_scale: int = 10
    target_concurrency: int = 100
    container_concurrency: int = 0  # 0 = no hard limit, as on Knative
    cpu_millicores: int = 500
    memory_mb: int = 256
    timeout_seconds: int = 300
    profile: str = "standard"
    visibility: str = "public"
    labels: dict[str, str] = field(default_factory=dict)
    # The project's cap on instances of all its functions at once (quotas.py); 0 = none. Not the function's
    # own: the most recent spec of a namespace sets it for the whole namespace.
    project_max_instances: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, namespace: str, name: str, data: dict) -> FunctionSpec:
        if not isinstance(data, dict):
            raise SpecError("the spec must be a JSON object")
        scale = data.get("scale") or {}
        resources = data.get("resources") or {}
        spec = cls(
            namespace=namespace,
            name=name,
            revision=_str(data, "revision"),
            runtime=_str(data, "runtime"),
            kind=_str(data, "kind", "http"),
            artifact=_str(data, "artifact"),
            env=_str_map(data.get("env"), "env"),
            min_scale=_int(scale, "min", 0),
            max_scale=_int(scale, "max", 10),
            target_concurrency=_int(scale, "target_concurrency", 100),
            container_concurrency=_int(scale, "container_concurrency", 0),
            cpu_millicores=_int(resources, "cpu_millicores", 500),
            memory_mb=_int(resources, "memory_mb", 256),
            timeout_seconds=_int(data, "timeout_seconds", 300),
            profile=_str(data, "profile", "standard"),
            visibility=_str(data, "visibility", "public"),
            labels=_str_map(data.get("labels"), "labels"),
            project_max_instances=_int(data, "project_max_instances", 0),
        )
        spec.validate()
        return spec

    def validate(self) -> None:
        for what, value in (("namespace", self.namespace), ("function name", self.name)):
            if not DNS_LABEL.fullmatch(value):
                raise SpecError(f"{what} {value!r} is not a DNS-1035 label")
        if not DNS_LABEL.fullmatch(self.revision):
            raise SpecError(f"revision {self.revision!r} is not a DNS-1035 label")
        _choice("runtime", self.runtime, RUNTIMES)
        _choice("kind", self.kind, KINDS)
        _choice("profile", self.profile, PROFILES)
        if not os.path.isabs(self.artifact) or not os.path.isdir(self.artifact):
            raise SpecError(f"artifact {self.artifact!r} is not a built artifact directory")
        if self.max_scale < 1 or self.min_scale > self.max_scale:
            raise SpecError(
                f"scale must satisfy 0 <= min ({self.min_scale}) <= max ({self.max_scale}), max >= 1"
            )
        if self.target_concurrency < 1:
            raise SpecError("target concurrency must be at least 1")
        if not 1 <= self.timeout_seconds <= 3600:
            raise SpecError("timeout must be between 1 and 3600 seconds")
        if self.memory_mb < 16 or self.cpu_millicores < 1:
            raise SpecError("resources: memory must be at least 16 MB and cpu at least 1 millicore")
        reserved = sorted(set(self.env) & set(RESERVED_ENV))
        if reserved:
            raise SpecError(f"env vars reserved by the runtime: {', '.join(reserved)}")

    def template(self) -> tuple:
        """What defines the running code: a change here needs new instances, the rest is applied in place."""
        return (
            self.runtime,
            self.kind,
            self.artifact,
            tuple(sorted(self.env.items())),
            self.cpu_millicores,
            self.memory_mb,
            self.profile,
        )


def _str(data: dict, key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or not value:
        raise SpecError(f"{key} is required and must be a string")
    return value


def _int(data: dict, key: str, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecError(f"{key} must be a non-negative integer")
    return value


def _str_map(value, what: str) -> dict[str, str]:
    value = value or {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise SpecError(f"{what} must map strings to strings")
    return dict(value)


def _choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SpecError(f"{what} must be one of {', '.join(choices)}, not {value!r}")
