"""Loading: every schema and file format gives the same canonical records."""

from __future__ import annotations

import json

import pytest

from alphapo.data import DataValidationError, load_preferences
from alphapo.errors import UserError

U = lambda text: {"role": "user", "content": text}  # noqa: E731
A = lambda text: {"role": "assistant", "content": text}  # noqa: E731

EXPECTED_PAIR = {"id": "1", "prompt": [U("What is 12 plus 7?")], "chosen": [A("19")], "rejected": [A("20")],
                 "chosen_score": 9.0, "rejected_score": 2.0, "conversational": False}  # from strings
EXPECTED_CONV = {**EXPECTED_PAIR, "conversational": True}  # from message lists


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
    assert load_preferences(src) == [EXPECTED_CONV]


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


UF_ROW = {  # the HuggingFaceH4/ultrafeedback_binarized layout
    "prompt": "What is 12 plus 7?", "prompt_id": "abc123",
    "chosen": [U("What is 12 plus 7?"), A("19")], "rejected": [U("What is 12 plus 7?"), A("20")],
    "messages": [U("What is 12 plus 7?"), A("19")], "score_chosen": 9.0, "score_rejected": 2.0,
}
EXPECTED_UF = {**EXPECTED_CONV, "id": "abc123"}


def test_schema_c_ultrafeedback_binarized(tmp_path):
    src = write_jsonl(tmp_path / "uf.jsonl", [UF_ROW])
    assert load_preferences(src) == [EXPECTED_UF]


def test_schema_d_multi_response(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [
        {"prompt": "Q", "responses": ["x", "y", "z"], "scores": [1, 2.5, 3]},
        {"id": 7, "prompt": [U("Q")], "responses": [[A("x")], [A("y")]], "scores": [0, -1]},
    ])
    assert load_preferences(src) == [
        {"id": "1", "prompt": [U("Q")], "responses": [[A("x")], [A("y")], [A("z")]], "scores": [1.0, 2.5, 3.0],
         "conversational": False},
        {"id": "7", "prompt": [U("Q")], "responses": [[A("x")], [A("y")]], "scores": [0.0, -1.0],
         "conversational": True},
    ]


def test_column_mapping(tmp_path):
    src = write_jsonl(tmp_path / "m.jsonl", [{"question": "What is 12 plus 7?", "good": "19", "bad": "20",
                                              "r_good": 9, "r_bad": 2}])
    cols = {"prompt": "question", "chosen": "good", "rejected": "bad", "chosen_score": "r_good",
            "rejected_score": "r_bad"}
    assert load_preferences(src, columns=cols) == [EXPECTED_PAIR]


def test_attributes_columns_and_canonical_round_trip(tmp_path):
    from alphapo.data.writer import write_jsonl as atomic

    src = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b",
                                              "chosen_attributes": {"honesty": 9}, "rejected_attributes": {"honesty": 2}}])
    recs = load_preferences(src)
    assert recs[0]["attributes"] == {"chosen": {"honesty": 9.0}, "rejected": {"honesty": 2.0}}
    atomic(tmp_path / "canon.jsonl", recs)
    assert load_preferences(tmp_path / "canon.jsonl") == recs  # our own output is valid input


def test_json_list_and_split_object(tmp_path):
    row = {"prompt": "What is 12 plus 7?", "chosen": "19", "rejected": "20", "score_chosen": 9, "score_rejected": 2}
    (tmp_path / "l.json").write_text(json.dumps([row]))
    (tmp_path / "s.json").write_text(json.dumps({"train": [row], "test": []}))
    (tmp_path / "lines.json").write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    assert load_preferences(tmp_path / "l.json") == [EXPECTED_PAIR]
    assert load_preferences(tmp_path / "s.json") == [EXPECTED_PAIR]
    with pytest.raises(UserError, match="s.json: no rows \\(an empty file or split"):  # nothing to train on
        load_preferences(tmp_path / "s.json", split="test")
    assert len(load_preferences(tmp_path / "lines.json")) == 2
    # one list under a split name: another split is an error (it used to return the train rows silently)
    (tmp_path / "train_only.json").write_text(json.dumps({"train": [row]}))
    with pytest.raises(UserError, match="no split 'test'.*only split 'train'"):
        load_preferences(tmp_path / "train_only.json", split="test")
    (tmp_path / "data.json").write_text(json.dumps({"data": [row]}))  # not a split name: the rows
    assert load_preferences(tmp_path / "data.json", split="test") == [EXPECTED_PAIR]


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([UF_ROW]), tmp_path / "uf.parquet")
    assert load_preferences(tmp_path / "uf.parquet") == [EXPECTED_UF]


def test_csv_and_tsv_with_json_cells(tmp_path):
    import csv

    for name, delim in (("x.csv", ","), ("x.tsv", "\t")):
        with open(tmp_path / name, "w", newline="") as f:
            w = csv.writer(f, delimiter=delim)
            w.writerow(["prompt", "chosen", "rejected", "score_chosen", "score_rejected"])
            w.writerow(["What is 12 plus 7?", "19", "20", "9", "2"])
            w.writerow(["", json.dumps([U("Hi"), A("a")]), json.dumps([U("Hi"), A("b")]), "", ""])
        first, second = load_preferences(tmp_path / name)
        assert first == EXPECTED_PAIR
        assert second["prompt"] == [U("Hi")] and second["chosen_score"] is None


def test_save_to_disk_dataset_and_dict(tmp_path):
    from datasets import Dataset, DatasetDict

    ds = Dataset.from_list([UF_ROW])
    ds.save_to_disk(str(tmp_path / "ds"))
    DatasetDict({"train_prefs": ds}).save_to_disk(str(tmp_path / "dd"))
    assert load_preferences(tmp_path / "ds") == [EXPECTED_UF]
    assert load_preferences(tmp_path / "dd", split="train_prefs") == [EXPECTED_UF]
    with pytest.raises(UserError, match="no split 'train'; available: train_prefs"):
        load_preferences(tmp_path / "dd")


def test_source_detection_errors_and_hub_names(tmp_path):
    from alphapo.data.readers import detect_format

    assert detect_format("HuggingFaceH4/ultrafeedback_binarized") == "hub"  # detected, not downloaded
    with pytest.raises(UserError, match="no such file"):
        load_preferences(tmp_path / "missing.jsonl")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(UserError, match="unknown file type"):
        load_preferences(tmp_path / "x.txt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="not a datasets save_to_disk folder"):
        load_preferences(tmp_path / "folder")


def test_hub_name_goes_to_datasets_and_fails_cleanly_offline():
    """Tests run with HF_HUB_OFFLINE=1: the hub path is exercised up to the (refused) download."""
    with pytest.raises(UserError, match="could not load hub dataset 'someone/nonexistent-ds'"):
        load_preferences("someone/nonexistent-ds")


def test_prompt_given_with_one_full_conversation_and_one_reply(tmp_path):
    src = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "What is 12 plus 7?", "chosen": [U("What is 12 plus 7?"), A("19")],
                                              "rejected": [A("20")], "score_chosen": 9, "score_rejected": 2}])
    assert load_preferences(src) == [EXPECTED_CONV]
