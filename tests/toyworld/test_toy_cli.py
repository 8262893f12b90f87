"""``alphapo toy`` commands through the real dispatcher."""

from __future__ import annotations

import json

from alphapo.cli import main
from alphapo.toyworld.tasks import split_tasks


def test_toy_score_prints_the_gold_attributes(capsys):
    assert main(["toy", "score", "--prompt", "what is 7 minus 5", "--response", "ok , 2"]) == 0
    # correct, 3 words vs 1: conciseness 1 - 2/8 = 0.75; 1 + 8.5 + 0.5 * 0.75 = 9.875
    assert json.loads(capsys.readouterr().out) == {"correctness": 1.0, "conciseness": 0.75, "length": 3.0,
                                                   "score": 9.875}


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


def test_toy_sft_cli_applies_overrides(tmp_path, capsys):
    out = tmp_path / "sft"
    args = ["toy", "sft", "--out", str(out), "--seed", "1", "--steps", "3", "--no-progress", "--set", "n_train=40",
            "n_heldout=4", "hidden_size=16", "layers=1", "heads=2", "kv_heads=1", "intermediate_size=32",
            "batch_size=4", "warmup_steps=1"]
    assert main(args) == 0
    saved = json.loads((out / "sft_summary.json").read_text())["config"]
    assert (saved["seed"], saved["steps"], saved["hidden_size"], saved["n_train"]) == (1, 3, 16, 40)
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert main(["toy", "sft", "--out", str(tmp_path / "x"), "--set", "hiden_size=8"]) == 2
    assert "did you mean 'hidden_size'" in capsys.readouterr().err
