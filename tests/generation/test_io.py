"""Prompt files (the atomic writers are tested in tests/test_atomic_io.py)."""

from __future__ import annotations

import pytest

from alphapo.errors import UserError
from alphapo.generation.io import read_prompts


def test_read_prompts_strings_messages_and_ids(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "hi"}\n\n{"id": 7, "prompt": [{"role": "system", "content": "s"}, '
                 '{"role": "user", "content": "u"}], "chosen": "ignored"}\n')
    ids, prompts = read_prompts(f)
    assert ids == ["p-1", "7"]
    assert prompts == [[{"role": "user", "content": "hi"}],
                       [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]]
    assert read_prompts(f, limit=1)[0] == ["p-1"]


@pytest.mark.parametrize("line, match", [
    ("not json", r"p.jsonl:1: not valid JSON"),
    ('{"text": "hi"}', r"p.jsonl:1: each line must be an object with a 'prompt' field"),
    ('{"prompt": [{"role": "bot", "content": "x"}]}', r"p.jsonl:1: prompt message 0"),
    ('{"prompt": []}', r"p.jsonl:1: 'prompt' must be a string or a non-empty list"),
])
def test_read_prompts_errors_name_the_line(tmp_path, line, match):
    f = tmp_path / "p.jsonl"
    f.write_text(line + "\n")
    with pytest.raises(UserError, match=match):
        read_prompts(f)


def test_missing_or_empty_prompt_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_prompts(tmp_path / "nope.jsonl")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(UserError, match="no prompts"):
        read_prompts(tmp_path / "e.jsonl")
