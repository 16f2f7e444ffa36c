"""Skip a test when a machine lacks a tool - unless HKS_REQUIRE_ALL=1 (CI), where it is a failure."""

import os
import shutil

import pytest


def require_binary(name: str, *, hint: str = "") -> str:
    path = shutil.which(name) or (name if os.path.isabs(name) and os.path.exists(name) else None)
    if path:
        return path
    require(False, f"{name} is not installed{': ' + hint if hint else ''}")


def require(available: bool, message: str) -> None:
    """Skip (or under HKS_REQUIRE_ALL=1 fail) with ``message`` unless ``available``."""
    if available:
        return
    if os.environ.get("HKS_REQUIRE_ALL") == "1":
        pytest.fail(message + " (HKS_REQUIRE_ALL=1)")
    pytest.skip(message)
