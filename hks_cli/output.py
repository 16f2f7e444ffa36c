"""Printing for people (aligned tables, short lines) or for scripts (``--output json``)."""

from __future__ import annotations

import json
import sys


def emit_json(data) -> None:
    print(json.dumps(data, indent=2, default=str))


def table(rows: list[dict], columns: list[str], *, empty: str = "nothing to show") -> None:
    if not rows:
        print(empty)
        return
    cells = [[str(_blank(row.get(col))) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    print("  ".join(col.upper().ljust(w) for col, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(value.ljust(w) for value, w in zip(row, widths, strict=True)).rstrip())


def _blank(value):
    return "-" if value in (None, "") else value


def info(message: str) -> None:
    """Progress for people: on stderr, so stdout stays clean for ``--output json`` and pipes."""
    print(message, file=sys.stderr, flush=True)
