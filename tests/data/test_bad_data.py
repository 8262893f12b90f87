"""Data that used to be accepted and train the wrong thing: each is now an error, a counted skip or a warning."""

from __future__ import annotations

import csv
import json

import pytest

from alphapo.cli import main
from alphapo.data import DataValidationError, load_preferences, tokenize_preferences, validate
from alphapo.errors import UserError
from alphapo.tiny_models import build_tokenizer

U = lambda text: {"role": "user", "content": text}  # noqa: E731
A = lambda text: {"role": "assistant", "content": text}  # noqa: E731


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _issues(path):
    return [(i.row, i.field, i.reason, i.detail) for i in validate(path).issues]


def test_multi_response_row_with_all_scores_equal(tmp_path):
    """Best and worst of [5, 5, 5] are the same response: as a pair it would be chosen == rejected."""
    src = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "Q", "responses": ["a", "b", "c"], "scores": [5, 5, 5]},
                                             {"prompt": "Q", "responses": ["a", "b", "c"], "scores": [5, 5, 1]}])
    assert _issues(src) == [(1, "scores", "tied_scores", "all 3 responses have score 5; the row states no "
                             "preference (as a pair it would be chosen == rejected)")]
    with pytest.raises(DataValidationError, match="m.jsonl line 1, field 'scores': all responses scored equally"):
        load_preferences(src)
    recs = load_preferences(src, skip_invalid=True)
    assert [r["scores"] for r in recs] == [[5.0, 5.0, 1.0]] and recs.report.counts() == {"tied_scores": 1}


TRIM_TEMPLATE = ("{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] | trim }}<|end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def test_pairs_that_tokenise_identically(tmp_path):
    """"a b" and "a b " are different texts, but a template that trims content renders them the same."""
    tok = build_tokenizer()
    tok.chat_template = TRIM_TEMPLATE
    src = write_jsonl(tmp_path / "p.jsonl", [{"id": "same", "prompt": [U("Q")], "chosen": [A("a b")],
                                              "rejected": [A("a b ")]},
                                             {"id": "ok", "prompt": [U("Q")], "chosen": [A("a b")], "rejected": [A("c")]}])
    records = load_preferences(src)  # valid rows: the texts differ
    with pytest.raises(UserError, match=r"^1 pair\(s\) have chosen and rejected that tokenise to the same ids "
                                        r"\(e.g. ids \['same'\]\)"):
        tokenize_preferences(records, tok)
    examples, report = tokenize_preferences(records, tok, on_identical="skip")
    assert [e["id"] for e in examples] == ["ok"] and report.identical_skipped == 1
    # truncation can do it too: "a b" and "a c" cut to their first token are the same
    cut = [{"id": "cut", "prompt": [U("Q")], "chosen": [A("a b")], "rejected": [A("a c")], "conversational": False}]
    prompt_len = len(tok("Q")["input_ids"])
    with pytest.raises(UserError, match=r"ids \['cut'\]"):
        tokenize_preferences(cut, tok, max_length=prompt_len + 1)
    # the trainer's loader skips and counts them under skip_invalid, and names them otherwise
    from alphapo.training.data import load_examples

    lines = []
    kw = dict(split="train", columns=None, max_length=None, max_prompt_length=None, prompt_truncation="keep_end")
    out = load_examples(str(src), tok, skip_invalid=True, log=lines.append, **kw)
    assert [e["id"] for e in out] == ["ok"]
    assert lines == [f"{src}: skipped 1 pair(s) whose chosen and rejected tokenise identically (e.g. ids ['same'])"]
    with pytest.raises(UserError, match="tokenise to the same ids"):
        load_examples(str(src), tok, skip_invalid=False, **kw)


def test_empty_user_message_inside_a_conversation(tmp_path):
    conv = [U("Q"), A("x"), U("  ")]
    src = write_jsonl(tmp_path / "c.jsonl", [{"chosen": conv + [A("y")], "rejected": conv + [A("z")]}])
    assert _issues(src) == [(1, side, "empty_field", "item 2 is a user turn with empty content")
                            for side in ("chosen", "rejected")]


def test_truncated_json_cell_in_csv_is_an_issue_not_text(tmp_path):
    full = json.dumps([U("Hi"), A("a")])
    path = tmp_path / "x.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "chosen", "rejected"])
        w.writerow(["", full[:30], json.dumps([U("Hi"), A("b")])])  # cut off mid-cell
        w.writerow(["[INST] Say hi", "{name} is here", "[1] first"])  # text that starts with a bracket
    issues = _issues(path)
    assert [(row, field, reason) for row, field, reason, _ in issues] == [(1, "chosen", "malformed_json")]
    assert issues[0][3].startswith("cell starts like JSON but does not parse (")
    (rec,) = load_preferences(path, skip_invalid=True)
    assert rec["prompt"] == [U("[INST] Say hi")] and rec["chosen"] == [A("{name} is here")]


def test_misspelled_score_column_names_the_nearest(tmp_path, capsys):
    src = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b", "score_chosn": 9,
                                              "score_rejected": 1, "source": "web"}])
    assert _issues(src) == [
        (1, "score_chosn", "unknown_column", "is not a column this layout reads; did you mean 'score_chosen'? "
         "(rename it, or map it with columns={'chosen_score': 'score_chosn'})"),
        (1, "score_chosen", "missing_field", "is missing while 'score_rejected' is given; give both scores or neither")]
    assert main(["data", "validate", str(src)]) == 1
    assert "misspelled column" in capsys.readouterr().out
    # the mapping the message suggests works ("source", close to no expected column, is left alone)
    (rec,) = load_preferences(src, columns={"chosen_score": "score_chosn"})
    assert (rec["chosen_score"], rec["rejected_score"]) == (9.0, 1.0)


def test_deeply_nested_json_is_an_issue_not_a_traceback(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "d.json").write_text(f'[{{"prompt": {deep}, "chosen": "a", "rejected": "b"}}]')
    assert _issues(tmp_path / "d.json") == [(None, None, "malformed_json", "nested too deeply to parse")]
    with open(tmp_path / "d.csv", "w", newline="") as f:
        csv.writer(f).writerows([["prompt", "chosen", "rejected"], ["Q", deep, "b"]])
    assert _issues(tmp_path / "d.csv") == [(1, "chosen", "malformed_json", "cell holds JSON nested too deeply to parse")]


def test_bom_in_json_is_accepted_like_jsonl_and_csv(tmp_path):
    rows = [{"prompt": "Q", "chosen": "a", "rejected": "b"}]
    (tmp_path / "plain.json").write_text(json.dumps(rows), encoding="utf-8")
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(rows).encode())
    assert load_preferences(tmp_path / "bom.json") == load_preferences(tmp_path / "plain.json")
    assert len(load_preferences(tmp_path / "bom.json")) == 1


@pytest.mark.parametrize("name, content", [("empty.jsonl", ""), ("blank.jsonl", "\n  \n\n"), ("empty.json", "[]"),
                                           ("header.csv", "prompt,chosen,rejected\n")])
def test_empty_or_blank_file_is_an_error(tmp_path, capsys, name, content):
    (tmp_path / name).write_text(content)
    assert main(["data", "validate", str(tmp_path / name)]) == 2
    assert f"{tmp_path / name}: no rows (an empty file" in capsys.readouterr().err
    with pytest.raises(UserError, match="no rows"):
        load_preferences(tmp_path / name, skip_invalid=True)


def test_skip_invalid_in_training_prints_the_count_per_reason(tmp_path, tiny_tokenizer):
    from alphapo.training.data import load_examples

    src = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b"},
                                             {"prompt": "Q", "chosen": "", "rejected": "b"},
                                             {"prompt": "Q", "chosen": "a", "rejected": "b", "score_chosn": 1}])
    lines = []
    out = load_examples(str(src), tiny_tokenizer, split="train", columns=None, skip_invalid=True, max_length=None,
                        max_prompt_length=None, prompt_truncation="keep_end", log=lines.append)
    assert len(out) == 1
    assert lines == [f"{src}: skipped 2 invalid row(s) of 3: 1 empty field, 1 misspelled column"]


def test_inverted_scores_and_duplicate_ids_warn_with_counts(tmp_path, capsys):
    src = write_jsonl(tmp_path / "w.jsonl", [
        {"id": "a", "prompt": "Q", "chosen": "x", "rejected": "y", "score_chosen": 1, "score_rejected": 9},
        {"id": "a", "prompt": "R", "chosen": "x", "rejected": "y", "score_chosen": 2, "score_rejected": 8},
        {"id": "b", "prompt": "S", "chosen": "x", "rejected": "y", "score_chosen": 5, "score_rejected": 5},
        {"id": "a", "prompt": "T", "chosen": "x", "rejected": "y", "score_chosen": 9, "score_rejected": 1}])
    records = load_preferences(src)
    assert len(records) == 4  # kept: they are valid, only suspicious
    assert records.report.warnings == [
        "2 pair(s) score the rejected response above the chosen one (e.g. ids ['a', 'a']); training prefers "
        "'chosen' whatever the scores say: check the columns (score_chosen / score_rejected) or swap the pairs",
        "2 row(s) repeat an id of an earlier row; ids name records in truncation reports, caches and relabeled "
        "copies, so make them unique"]
    assert main(["data", "validate", str(src)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{src}: 4 rows, 4 valid (4 pair)" and out[1].startswith("warning: 2 pair(s) score the rejected")
    assert main(["data", "convert", str(src), str(tmp_path / "c.jsonl")]) == 0
    assert "warning: 2 row(s) repeat an id" in capsys.readouterr().err
