"""Faults a test puts the portal in, with real parts: a Redis that cannot be reached."""

from __future__ import annotations

from pathlib import Path


def unreachable_caches(tmp_path: Path) -> dict:
    """A ``CACHES`` setting whose Redis is a socket nobody listens on: every call fails at once."""
    return {
        "default": {
            "BACKEND": "hks_portal.cache.PrefixedRedisCache",
            "LOCATION": f"unix://{tmp_path / 'nothing.sock'}",
            "OPTIONS": {"socket_connect_timeout": 1},
        }
    }
