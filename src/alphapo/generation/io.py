"""File edges of generation and evaluation: read prompt files, write JSONL / JSON / figures atomically.

Every writer goes to a temporary file in the destination folder and renames it into place
(``os.replace`` is atomic on one file system), so an interrupted run never leaves a partial output.

Prompt files (``read_prompts``) are JSONL, one object per line with a ``prompt`` field that is either a
string (one user turn) or a list of ``{"role", "content"}`` messages, and an optional ``id``. Preference
files in our schema are valid prompt files (their other fields are ignored).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from alphapo.errors import UserError

__all__ = ["read_prompts", "write_jsonl_atomic", "write_json_atomic", "atomic_path", "as_messages"]

_ROLES = {"system", "user", "assistant"}


def as_messages(prompt: Any, *, where: str) -> list[dict[str, str]]:
    """A prompt field as a message list; a string becomes one user turn. ``where`` names it in errors."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if not isinstance(prompt, list) or not prompt:
        raise UserError(f"{where}: 'prompt' must be a string or a non-empty list of messages, "
                        f"got {type(prompt).__name__}")
    out = []
    for j, m in enumerate(prompt):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in _ROLES:
            raise UserError(f"{where}: prompt message {j} must be {{'role': system|user|assistant, "
                            f"'content': str}}, got {m!r}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def read_prompts(path: str | Path, *, limit: int | None = None) -> tuple[list[str], list[list[dict[str, str]]]]:
    """Read a JSONL prompt file; returns ``(ids, prompts)`` with prompts as message lists.

    Missing ids become ``"<file stem>-<line number>"``. Bad lines raise ``UserError`` naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prompt file {str(path)!r} does not exist")
    ids, prompts = [], []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{where}: not valid JSON ({err.msg})") from err
            if not isinstance(row, dict) or "prompt" not in row:
                raise UserError(f"{where}: each line must be an object with a 'prompt' field")
            prompts.append(as_messages(row["prompt"], where=where))
            ids.append(str(row.get("id", f"{path.stem}-{lineno}")))
            if limit is not None and len(prompts) >= limit:
                break
    if not prompts:
        raise UserError(f"prompt file {str(path)!r} has no prompts")
    return ids, prompts


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same suffix); rename it to ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_jsonl_atomic(path: str | Path, records: Iterable[dict]) -> Path:
    """Write one JSON object per line, atomically: ``alphapo.data.writer.write_jsonl`` (the one JSONL
    writer: strict JSON, so a NaN/inf is a ``ValueError`` rather than a ``NaN`` token other readers reject)."""
    from alphapo.data.writer import write_jsonl

    write_jsonl(path, records)
    return Path(path)


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write an indented JSON document, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return Path(path)
