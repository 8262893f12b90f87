"""`alphapo data ...` end to end on small files: outputs, exit codes, skip-invalid counts, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from alphapo.cli import main
from alphapo.data.writer import read_jsonl, write_jsonl

FIXTURE = Path(__file__).parent / "fixtures" / "broken.jsonl"
ROWS = [{"prompt": "What is 12 plus 7?", "chosen": "19", "rejected": "20", "score_chosen": 9, "score_rejected": 2},
        {"prompt": "Say hi", "chosen": "Hello world!", "rejected": "Go away.", "score_chosen": 7.5,
         "score_rejected": 7.5}]


@pytest.fixture
def src(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def test_relabel_then_unrelabel_cli(src, tmp_path, capsys, tiny_model_dir_no_system):
    out, back = tmp_path / "ra.jsonl", tmp_path / "back.jsonl"
    assert main(["data", "relabel", str(src), str(out), "--mode", "ra", "--tokenizer",
                 str(tiny_model_dir_no_system), "--ties", "keep"]) == 0
    msg = capsys.readouterr().out
    assert "2 pairs in, 4 relabeled pairs out; 1 ties (0 dropped)" in msg and "goal placement: prefix" in msg
    rows = read_jsonl(out)
    assert [r["prompt"][0]["role"] for r in rows] == ["user"] * 4  # no system role in this template
    assert rows[1]["chosen"] == [{"role": "assistant", "content": "20"}]
    assert main(["data", "unrelabel", str(out), str(back)]) == 0
    assert read_jsonl(back) == [
        {"id": "1", "prompt": [{"role": "user", "content": "What is 12 plus 7?"}],
         "chosen": [{"role": "assistant", "content": "19"}], "rejected": [{"role": "assistant", "content": "20"}],
         "chosen_score": 9.0, "rejected_score": 2.0, "conversational": False},
        {"id": "2", "prompt": [{"role": "user", "content": "Say hi"}],
         "chosen": [{"role": "assistant", "content": "Hello world!"}],
         "rejected": [{"role": "assistant", "content": "Go away."}], "chosen_score": 7.5, "rejected_score": 7.5,
         "conversational": False}]


def test_relabel_default_drops_ties_and_uses_system(src, tmp_path, capsys):
    out = tmp_path / "ra.jsonl"
    assert main(["data", "relabel", str(src), str(out)]) == 0
    assert "1 ties (1 dropped)" in capsys.readouterr().out
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["1/goal=chosen", "1/goal=rejected"]
    assert rows[0]["prompt"][0]["role"] == "system"


def test_strict_error_writes_nothing_and_skip_invalid_counts(tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    assert main(["data", "convert", str(FIXTURE), str(out)]) == 2
    err = capsys.readouterr().err
    assert "14 invalid row(s)" in err and "nothing was written" in err
    assert not out.exists() and os.listdir(tmp_path) == []
    assert main(["data", "convert", str(FIXTURE), str(out), "--skip-invalid"]) == 0
    captured = capsys.readouterr()
    assert "skipped 14 invalid row(s) of 15: 1 malformed JSON, 1 non-UTF-8 bytes" in captured.err
    assert len(read_jsonl(out)) == 1


def test_atomic_writer_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.jsonl"
    write_jsonl(target, [{"a": 1}])

    def rows():
        yield {"a": 2}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl(target, rows())
    assert read_jsonl(target) == [{"a": 1}]  # old content intact, no partial file
    assert sorted(os.listdir(tmp_path)) == ["x.jsonl"]
    with pytest.raises(ValueError):  # NaN is not JSON: refused, nothing written
        write_jsonl(tmp_path / "y.jsonl", [{"a": float("nan")}])
    assert sorted(os.listdir(tmp_path)) == ["x.jsonl"]


def test_stats_and_tokenize_cli(src, tmp_path, capsys, tiny_model_dir):
    assert main(["data", "stats", str(src)]) == 0
    out = capsys.readouterr().out
    assert "records: 2 (2 pair)" in out and "ties: 1" in out and "lengths in chars" in out
    assert "chosen scores (n=2, mean 8.25)" in out
    assert main(["data", "stats", str(src), "--tokenizer", str(tiny_model_dir)]) == 0
    assert "lengths in tokens" in capsys.readouterr().out
    tok_out = tmp_path / "tok.jsonl"
    assert main(["data", "tokenize", str(src), "--tokenizer", str(tiny_model_dir), "--max-length", "12",
                 "--out", str(tok_out)]) == 0
    # string rows are used as they are (TRL's rule): "What is 12 plus 7?" is 12 tokens, so it alone fills
    # max_length and is cut; "Say hi" (5) + "Hello world!" (5) + EOS = 11 fits
    assert "2 rows tokenised (0 with the chat template, 2 as plain text); 1 truncated (1 prompts, 0 completions)" \
        in capsys.readouterr().out
    assert all(len(r["prompt_input_ids"]) + len(r["chosen_input_ids"]) <= 12 for r in read_jsonl(tok_out))
    assert main(["data", "tokenize", str(src), "--tokenizer", str(tiny_model_dir), "--max-length", "12",
                 "--chat-template", "always"]) == 0  # the template's turn markers make both rows too long
    assert "2 rows tokenised (2 with the chat template, 0 as plain text); 2 truncated" in capsys.readouterr().out


def test_column_flag_and_bad_flag(tmp_path, capsys):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"q": "Q", "chosen": "a", "rejected": "b"}) + "\n")
    assert main(["data", "validate", str(path), "--column", "prompt=q"]) == 0
    assert main(["data", "validate", str(path), "--column", "prompt"]) == 2
    assert "--column takes FIELD=COLUMN" in capsys.readouterr().err


def test_relabel_cli_options(tmp_path, capsys):
    src = tmp_path / "attr.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"Q{i}", "chosen": "a", "rejected": "b",
                                       "score_chosen": 4, "score_rejected": 0,
                                       "chosen_attributes": {"honesty": 4, "depth": 2},
                                       "rejected_attributes": {"honesty": 0, "depth": 2}}) + "\n" for i in range(3)))
    tmpl = tmp_path / "goal.txt"
    tmpl.write_text("Target:\n{scores}")
    out = tmp_path / "out.jsonl"
    assert main(["data", "relabel", str(src), str(out), "--mode", "half", "--goal-template-file", str(tmpl),
                 "--attributes", "honesty,depth", "--normalize", "range", "--score-range", "0", "4",
                 "--goal-placement", "prefix"]) == 0
    assert "3 pairs in, 2 relabeled pairs out" in capsys.readouterr().out
    rows = read_jsonl(out)
    # range 0..4 -> 1..10: honesty 4 -> 10, 0 -> 1; depth 2 -> 1 + 9 * 0.5 = 5.5
    assert rows[0]["prompt"] == [{"role": "user", "content": "Target:\nHonesty score: 10.\nDepth score: 5.5.\n\nQ0"}]
    assert rows[1]["prompt"] == [{"role": "user", "content": "Target:\nHonesty score: 1.\nDepth score: 5.5.\n\nQ0"}]
    assert main(["data", "relabel", str(src), str(out), "--normalize", "range", "--score-range", "0", "3"]) == 2
    assert "outside the declared range [0.0, 3.0]" in capsys.readouterr().err
