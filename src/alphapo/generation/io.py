"""Prompt files: the input edge of generation and evaluation (outputs go through ``alphapo.io``).

Prompt files (``read_prompts``) are JSONL, one object per line with a ``prompt`` field that is either a
string (one user turn) or a list of ``{"role", "content"}`` messages, and an optional ``id``. Preference
files in our schema are valid prompt files (their other fields are ignored).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alphapo.errors import UserError

__all__ = ["read_prompts", "as_messages"]

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
