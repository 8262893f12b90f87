"""Every validation message: which file, row/line, field, and what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alphapo.cli import main
from alphapo.data import REASONS, DataValidationError, load_preferences, validate

FIXTURE = Path(__file__).parent / "fixtures" / "broken.jsonl"

# line -> (reason, field) of every broken row in fixtures/broken.jsonl (line 1 is valid, line 2 blank)
BROKEN = {
    3: ("malformed_json", None),
    4: ("non_utf8", None),
    5: ("not_an_object", None),
    6: ("missing_field", "rejected"),
    7: ("empty_field", "prompt"),
    8: ("wrong_type", "chosen"),
    9: ("bad_message", "chosen"),
    10: ("non_finite_score", "score_chosen"),
    11: ("score_length", "scores"),
    12: ("identical_pair", "chosen"),
    13: ("no_assistant_end", "chosen"),
    14: ("no_prompt", "prompt"),
    15: ("tied_scores", "scores"),
    16: ("unknown_column", "score_chosn"),
}


def test_fixture_names_every_broken_row_with_line_numbers(capsys):
    """`alphapo data validate` on fourteen kinds of broken rows: exit 1, one line per row, all kinds named."""
    assert main(["data", "validate", str(FIXTURE)]) == 1
    out = capsys.readouterr().out.splitlines()
    issue_lines = out[:-1]
    assert len(issue_lines) == len(BROKEN)
    for text, (line, (reason, field)) in zip(issue_lines, sorted(BROKEN.items())):
        where = f"{FIXTURE} line {line}" + (f", field '{field}'" if field else "")
        assert text.startswith(f"{where}: {REASONS[reason]}: "), text
    assert out[-1].startswith(f"{FIXTURE}: 15 rows, 1 valid (1 pair); 14 invalid (")
    assert len({reason for reason, _ in BROKEN.values()}) == 14 == len(REASONS)


def test_validate_good_file_prints_one_line(tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"prompt": "Q", "chosen": "a", "rejected": "b"}) + "\n")
    assert main(["data", "validate", str(good)]) == 0
    assert capsys.readouterr().out == f"{good}: 1 rows, 1 valid (1 pair)\n"


def test_strict_load_lists_all_and_skip_counts_per_reason():
    with pytest.raises(DataValidationError) as err:
        load_preferences(FIXTURE)
    assert len(err.value.report.issues) == 14 and "nothing was written" in str(err.value)
    recs = load_preferences(FIXTURE, skip_invalid=True)
    assert len(recs) == 1 and recs.report.counts() == {reason: 1 for reason, _ in BROKEN.values()}


def _issues(tmp_path, rows, name="x.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [(i.row, i.field, i.reason, i.detail) for i in validate(path).issues]


A = {"role": "assistant", "content": "a"}
B = {"role": "assistant", "content": "b"}


@pytest.mark.parametrize("row, field, reason, detail", [
    ({"chosen": "a", "rejected": "b"}, "prompt", "missing_field", "is missing"),
    ({"prompt": "Q", "chosen": None, "rejected": "b"}, "chosen", "missing_field", "is null"),
    ({"prompt": "Q", "chosen": "a", "rejected": []}, "rejected", "empty_field", "is an empty list"),
    ({"prompt": "Q", "chosen": [{"role": "assistant", "content": " "}], "rejected": "b"}, "chosen", "empty_field",
     "item 0 is an assistant turn with empty content"),
    ({"prompt": "Q", "chosen": "a", "rejected": "b", "score_chosen": "9", "score_rejected": 1},
     "score_chosen", "wrong_type", "is a str ('9'); expected a number"),
    ({"prompt": "Q", "chosen": "a", "rejected": "b", "score_chosen": True, "score_rejected": 1},
     "score_chosen", "wrong_type", "is a bool (True); expected a number"),
    ({"prompt": "Q", "chosen": "a", "rejected": "b", "score_chosen": 1}, "score_rejected", "missing_field",
     "is missing while 'score_chosen' is given; give both scores or neither"),
    ({"prompt": "Q", "chosen": ["a"], "rejected": "b"}, "chosen", "bad_message",
     "item 0 is a str, expected an object with 'role' and 'content'"),
    ({"prompt": "Q", "chosen": [{"role": "assistant", "content": 3}], "rejected": "b"}, "chosen", "bad_message",
     "item 0 (assistant) has content of type int, expected a string"),
    ({"prompt": "Q", "chosen": [{"role": "user", "content": "x"}, A], "rejected": [B]}, "chosen", "bad_message",
     "starts with a 'user' turn but does not repeat 'prompt' at its start; give either the whole conversation "
     "(starting with the prompt) or only the reply"),
    ({"prompt": "Q", "chosen": [{"role": "user", "content": "Q"}], "rejected": [B]}, "chosen", "empty_field",
     "holds only the prompt turns of 'prompt', no response"),
    ({"prompt": [{"role": "assistant", "content": "hi"}], "chosen": [A], "rejected": [B]}, "prompt",
     "bad_message", "ends with an assistant turn; the prompt must end with the turn the response answers"),
    ({"chosen": [{"role": "user", "content": "Q"}, A], "rejected": [{"role": "user", "content": "Q"}, A]},
     "chosen", "identical_pair", "'chosen' and 'rejected' are the same conversation"),
    ({"prompt": "Q", "chosen": [A, {"role": "user", "content": "x"}], "rejected": [B]}, "chosen",
     "no_assistant_end", "last turn is a 'user' turn; the response to learn must be the final assistant turn"),
    ({"prompt": "Q", "responses": "a", "scores": [1]}, "responses", "wrong_type",
     "is a str ('a'); expected a list of responses"),
    ({"prompt": "Q", "responses": ["a"], "scores": [1]}, "responses", "score_length",
     "has 1 response(s); multi-response rows need at least 2"),
    ({"prompt": "Q", "responses": ["a", "b"], "scores": 3}, "scores", "wrong_type",
     "is an int (3); expected a list of numbers"),
    ({"prompt": "Q", "responses": ["a", "b"], "scores": [1, 1e999]}, "scores[1]", "non_finite_score",
     "is inf; scores must be finite numbers"),
    ({"prompt": "Q", "responses": ["a", ""], "scores": [1, 2]}, "responses[1]", "empty_field", "is an empty string"),
    ({"prompt": "Q", "chosen": "a", "rejected": "b", "chosen_attributes": {"honesty": "x"},
      "rejected_attributes": {"honesty": 1}}, "chosen_attributes.honesty", "wrong_type",
     "is a str ('x'); expected a number"),
])
def test_row_messages(tmp_path, row, field, reason, detail):
    assert _issues(tmp_path, [row]) == [(1, field, reason, detail)]


def test_missing_field_suggests_mapping(tmp_path):
    (issue,) = _issues(tmp_path, [{"prompt": "Q", "chosen": "a", "rejectd": "b"}])
    assert issue[3] == "is missing (column 'rejectd' exists; map it with columns={'rejected': 'rejectd'})"


def test_csv_non_utf8_and_json_file_errors(tmp_path):
    csv_path = tmp_path / "x.csv"
    csv_path.write_bytes(b"prompt,chosen,rejected\nQ,a,b\nQ,caf\xe9,b\n")
    (issue,) = validate(csv_path).issues
    assert (issue.row, issue.field, issue.reason) == (2, "chosen", "non_utf8")
    assert str(issue).startswith(f"{csv_path} row 2, field 'chosen': non-UTF-8 bytes")
    bad_json = tmp_path / "x.json"
    bad_json.write_text('[{"prompt": "Q", "chosen": "a", "rejected": "b"},]')
    (issue,) = validate(bad_json).issues
    assert issue.reason == "malformed_json" and "line 1 column" in issue.detail
    nonutf_json = tmp_path / "y.json"
    nonutf_json.write_bytes(b'[{"prompt": "\xff"}]')
    assert [i.reason for i in validate(nonutf_json).issues] == ["non_utf8"]


def test_report_keeps_bounded_issues_but_counts_all():
    from alphapo.data.validation import Issue, ValidationReport

    report = ValidationReport("f", max_kept=2)
    for row in range(1, 6):
        report.rows += 1
        report.add_row_issues([Issue("f", row, "chosen", "empty_field", "is an empty string", True)])
    assert len(report.issues) == 2 and report.not_kept == 3 and report.counts() == {"empty_field": 5}
    assert "... and 3 more issues (counts below)" in report.full_report()
    assert report.summary() == "f: 5 rows, 0 valid (no records); 5 invalid (5 empty field)"
