"""Prompt files and atomic writers."""

from __future__ import annotations

import json

import pytest

from alphapo.errors import UserError
from alphapo.generation.io import read_prompts, write_json_atomic, write_jsonl_atomic


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


def test_atomic_writers_leave_nothing_behind_on_failure(tmp_path):
    out = tmp_path / "out.jsonl"
    write_jsonl_atomic(out, [{"a": 1}])

    def records():
        yield {"a": 2}
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(out, records())
    assert out.read_text() == '{"a": 1}\n'  # the old file is intact, not half-overwritten
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temporary file left
    # strict JSON: a NaN (which json.dumps writes as the non-standard token NaN) is refused, file intact
    with pytest.raises(ValueError):
        write_jsonl_atomic(out, [{"score": float("nan")}])
    assert out.read_text() == '{"a": 1}\n' and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
    write_json_atomic(tmp_path / "s.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "s.json").read_text()) == {"x": [1, 2]}
