"""``alphapo toy`` commands through the real dispatcher."""

from __future__ import annotations

import json

from alphapo.cli import main
from alphapo.toyworld.tasks import split_tasks


def test_toy_score_prints_the_gold_attributes(capsys):
    assert main(["toy", "score", "--prompt", "what is 7 minus 5", "--response", "ok , 2"]) == 0
    # correct, 3 words vs 1: conciseness 1 - 2/8 = 0.75; 1 + 7 + 1.5 = 9.5
    assert json.loads(capsys.readouterr().out) == {"correctness": 1.0, "conciseness": 0.75, "length": 3.0,
                                                   "score": 9.5}


def test_toy_score_bad_prompt_is_a_one_line_error(capsys):
    assert main(["toy", "score", "--prompt", "write a poem", "--response", "x"]) == 2
    assert "not a toy-world prompt" in capsys.readouterr().err


def test_toy_prompts_writes_the_heldout_split(tmp_path):
    out = tmp_path / "held.jsonl"
    assert main(["toy", "prompts", "--out", str(out), "--seed", "2", "--n-train", "100", "--n-heldout", "10"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    _, held = split_tasks(2, 100, 10)
    assert [r["prompt"][-1]["content"] for r in rows] == [t.user for t in held]
    assert rows[0]["prompt"][0]["role"] == "system"
