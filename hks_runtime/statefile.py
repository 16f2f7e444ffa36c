"""The daemon's persisted desired state: every applied function and its last ready revision.

Written atomically (temp file + rename) after every change, read once at start, so a restarted daemon
brings every function back (at zero instances until its first request, or at its min-scale).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .spec import FunctionSpec, SpecError

log = logging.getLogger(__name__)


class StateFile:
    def __init__(self, path: Path):
        self.path = path

    def load(self) -> list[tuple[FunctionSpec, str]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        restored = []
        for item in data.get("functions", []):
            spec_data = item["spec"]
            try:
                spec = FunctionSpec(**spec_data)
                spec.validate()
            except (TypeError, SpecError) as exc:  # e.g. its artifact was removed meanwhile
                log.warning("not restoring %s/%s: %s", spec_data.get("namespace"), spec_data.get("name"), exc)
                continue
            restored.append((spec, item.get("latest_ready_revision", "")))
        return restored

    def save(self, functions) -> None:
        data = {
            "version": 1,
            "functions": [
                {"spec": fn.spec.to_json(), "latest_ready_revision": fn.latest_ready} for fn in functions
            ],
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        # Specs carry secret env values: readable by the runtime's user only, like a kubelet's Secrets.
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)
