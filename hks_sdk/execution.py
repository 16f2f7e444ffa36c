from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ExecutionError:
    """An exception the code raised (or the platform's reason it could not run)."""

    name: str
    value: str
    traceback: str = ""


@dataclass(frozen=True)
class Execution:
    """What running the code produced, in the shape of E2B's ``Execution``."""

    stdout: str = ""
    stderr: str = ""
    result: Any = None
    error: ExecutionError | None = None
    exit_code: int = 0
    duration_ms: float = 0.0
    function: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_code == 0

    @classmethod
    def from_response(cls, data: dict[str, Any], *, function: str, timings: dict[str, float]) -> Execution:
        error = data.get("error")
        return cls(
            stdout=data.get("stdout", ""),
            stderr=data.get("stderr", ""),
            result=data.get("result"),
            error=ExecutionError(**error) if error else None,
            exit_code=int(data.get("exit_code", 0)),
            duration_ms=float(data.get("duration_ms", 0.0)),
            function=function,
            timings=timings,
        )
