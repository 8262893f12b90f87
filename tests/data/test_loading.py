"""Loading: every schema and file format gives the same canonical records."""

from __future__ import annotations

import json

import pytest

from alphapo.data import DataValidationError, load_preferences
from alphapo.errors import UserError

U = lambda text: {"role": "user", "content": text}  # noqa: E731
A = lambda text: {"role": "assistant", "content": text}  # noqa: E731

EXPECTED_PAIR = {"id": "1", "prompt": [U("What is 12 plus 7?")], "chosen": [A("19")], "rejected": [A("20")],
                 "chosen_score": 9.0, "rejected_score": 2.0}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_schema_a_strings(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "What is 12 plus 7?", "chosen": "19", "rejected": "20",
                                              "score_chosen": 9, "score_rejected": 2}])
    assert load_preferences(src) == [EXPECTED_PAIR]


def test_schema_a_without_scores(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "Q", "chosen": "yes", "rejected": "no"}])
    (rec,) = load_preferences(src)
    assert rec["chosen_score"] is None and rec["rejected_score"] is None


def test_schema_b_prompt_from_common_prefix(tmp_path):
    conv = [U("Hi"), A("Hello!"), U("What is 12 plus 7?")]
    src = write_jsonl(tmp_path / "b.jsonl", [{"chosen": conv + [A("19")], "rejected": conv + [A("20")]}])
    (rec,) = load_preferences(src)
    assert rec["prompt"] == conv and rec["chosen"] == [A("19")] and rec["rejected"] == [A("20")]


def test_schema_b_explicit_prompt_list(tmp_path):
    src = write_jsonl(tmp_path / "b.jsonl", [{"prompt": [U("What is 12 plus 7?")], "chosen": [A("19")],
                                              "rejected": [A("20")], "chosen_score": 9, "rejected_score": 2}])
    assert load_preferences(src) == [EXPECTED_PAIR]


def test_strict_mode_raises_and_lists_row(tmp_path):
    src = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "Q", "chosen": "x", "rejected": "y"},
                                               {"prompt": "Q", "chosen": "", "rejected": "y"}])
    with pytest.raises(DataValidationError, match=r"bad.jsonl line 2, field 'chosen': empty field"):
        load_preferences(src)
    recs = load_preferences(src, skip_invalid=True)
    assert len(recs) == 1 and recs.report.counts() == {"empty_field": 1}


def test_unknown_column_key_names_nearest(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "Q", "chosen": "x", "rejected": "y"}])
    with pytest.raises(UserError, match="did you mean 'chosen'"):
        load_preferences(src, columns={"chosen_": "x"})
