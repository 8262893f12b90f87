"""``logits/*`` (TRL's mean completion logit) and ``tokens/useful_fraction``: by hand, and from a real step."""

from __future__ import annotations

import json

import pytest
import torch

from alphapo.training import load_config
from alphapo.training.metrics import token_metrics
from alphapo.training.trainer import train


def test_token_metrics_by_hand():
    """chosen: logit sums [2, 4] over lengths [1, 3] -> 6/4; useful [10, 6] over processed [12, 12] -> 16/24."""
    m = token_metrics({"chosen_logit_sums": torch.tensor([2.0, 4.0]), "chosen_lengths": torch.tensor([1, 3]),
                       "useful_tokens": torch.tensor([10.0, 6.0], dtype=torch.float64),
                       "processed_tokens": torch.tensor([12.0, 12.0], dtype=torch.float64)})
    assert m == {"logits/chosen": 1.5, "tokens/useful_fraction": pytest.approx(16 / 24)}


def test_first_step_logits_and_useful_fraction_are_those_of_the_batch(tiny_model_dir, pairs_path, tmp_path):
    """Step 1 sees every pair once (global batch = all 16 pairs) with the initial weights, so logits/chosen is
    the mean over chosen completion tokens of the vocabulary-mean logit, recomputed here with a plain
    forward per sequence; the useful fraction counts each prompt once against the positions run."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alphapo.training.data import load_examples

    out = tmp_path / "run"
    train(load_config(None, [f"model.name_or_path={tiny_model_dir}", f"data.train_path={pairs_path}",
                             f"output_dir={out}", "loss.name=simpo", "train.max_steps=1", "data.eval_fraction=0",
                             "train.per_device_batch_size=16", "train.global_batch_size=16",
                             "logging.progress_bar=false", "logging.tensorboard=false"]))
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = load_examples(str(pairs_path), tok, split="train", columns=None, skip_invalid=False,
                             max_length=None, max_prompt_length=None, prompt_truncation="keep_end")
    assert len(examples) == 16
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    sums = {"chosen": 0.0, "rejected": 0.0}
    counts = {"chosen": 0, "rejected": 0}
    with torch.no_grad():
        for ex in examples:
            p = ex["prompt_input_ids"]
            for side in ("chosen", "rejected"):
                c = ex[f"{side}_input_ids"]
                logits = model(torch.tensor([p + c])).logits[0].double()
                sums[side] += logits[len(p) - 1: len(p) + len(c) - 1].mean(-1).sum().item()
                counts[side] += len(c)
    for side in ("chosen", "rejected"):
        assert rec[f"logits/{side}"] == pytest.approx(sums[side] / counts[side], rel=1e-5, abs=1e-6)
    useful = sum(len(e["prompt_input_ids"]) + len(e["chosen_input_ids"]) + len(e["rejected_input_ids"])
                 for e in examples)
    plain = sum(2 * len(e["prompt_input_ids"]) + len(e["chosen_input_ids"]) + len(e["rejected_input_ids"])
                for e in examples)
    # the prompt is encoded once: the fraction beats useful / plain, the best a layout that repeats each
    # prompt could do even without any padding
    assert useful / plain < rec["tokens/useful_fraction"] <= 1.0
