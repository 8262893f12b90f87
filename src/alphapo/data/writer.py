"""Atomic JSONL output: write to a temporary file next to the target, then rename over it.

A crash, an exception or a validation error half-way leaves the target untouched (the temporary file is
removed), so a reader never sees a partial file. ``os.replace`` is atomic on POSIX within one filesystem,
which is why the temporary file lives in the target's folder.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path


def write_jsonl(path: str | Path, records: Iterable[Mapping]) -> int:
    """Write ``records`` (one JSON object per line, UTF-8) to ``path`` atomically; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for record in records:  # may be a generator that raises mid-way: then nothing is renamed
                f.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
                n += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return n


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file we wrote (no validation; use ``load_preferences`` for user data)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
