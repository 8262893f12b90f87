"""JSONL output for the data tools: ``write_jsonl`` is ``alphapo.io.write_jsonl_atomic`` (a temporary file
next to the target, renamed over it), so a crash, an exception or a validation error half-way leaves the
target untouched and a reader never sees a partial file.
"""

from __future__ import annotations

import json
from pathlib import Path

from alphapo.io import write_jsonl_atomic as write_jsonl

__all__ = ["write_jsonl", "read_jsonl"]


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file we wrote (no validation; use ``load_preferences`` for user data)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
