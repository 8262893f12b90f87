"""Toy SFT and reward model on tiny sizes: determinism, masking, and the saved reward model's scores."""

from __future__ import annotations

import json

import pytest

from alphapo.toyworld.sft import ToySFTConfig, encode_example, train_sft
from alphapo.toyworld.tokenizer import build_toy_tokenizer

TINY = dict(n_train=64, n_heldout=8, hidden_size=16, layers=1, heads=2, kv_heads=1, intermediate_size=32,
            steps=4, batch_size=8, warmup_steps=2)


def test_encode_example_masks_the_prompt():
    tok = build_toy_tokenizer()
    prompt = [{"role": "user", "content": "what is 1 plus 1"}]
    ids, labels = encode_example(tok, prompt, "2")
    # <|bos|> <|user|> what is 1 plus 1 <|end|> <|assistant|> | 2 <|end|>
    assert len(ids) == 11 and labels[:9] == [-100] * 9
    assert labels[9:] == [tok.convert_tokens_to_ids("2"), tok.eos_token_id] == ids[9:]


def test_sft_is_deterministic_given_a_seed(tmp_path):
    from safetensors.torch import load_file

    s1 = train_sft(ToySFTConfig(seed=3, **TINY), tmp_path / "a", progress=False)
    s2 = train_sft(ToySFTConfig(seed=3, **TINY), tmp_path / "b", progress=False)
    s3 = train_sft(ToySFTConfig(seed=4, **TINY), tmp_path / "c", progress=False)
    assert s1["loss_curve"] == s2["loss_curve"] != s3["loss_curve"]
    w1, w2 = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all((w1[k] == w2[k]).all() for k in w1)
    saved = json.loads((tmp_path / "a" / "sft_summary.json").read_text())
    assert saved["config"]["seed"] == 3 and saved["n_demonstrations"] > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_sft_config_rejects_unknown_keys():
    from alphapo.errors import UserError

    with pytest.raises(UserError, match="did you mean 'steps'"):
        ToySFTConfig.from_dict({"stepz": 3})


def test_reward_model_is_loadable_by_the_hf_judge(tmp_path):
    from alphapo.generation.judge_registry import make_judge
    from alphapo.toyworld.reward_model import RewardModelConfig, pair_accuracy, train_reward_model

    cfg = RewardModelConfig(seed=0, n_train=40, n_heldout=20, hidden_size=16, layers=1, heads=2, kv_heads=1,
                            intermediate_size=32, steps=3, batch_size=8)
    summary = train_reward_model(cfg, tmp_path / "rm", progress=False)
    assert summary["n_heldout_pairs"] + summary["n_heldout_ties_dropped"] == 20
    assert 0.0 <= summary["heldout_accuracy"] <= 1.0
    judge = make_judge(f"hf:{tmp_path / 'rm'}")
    prompts = [[{"role": "user", "content": "what is 1 plus 1"}]] * 3
    scores = judge.score(prompts, ["2", "sure ! 2", "5"])
    # batched scoring equals one-at-a-time scoring: pooling reads the last real token, not padding
    assert scores == pytest.approx([judge.score(prompts[:1], [r])[0] for r in ["2", "sure ! 2", "5"]], abs=1e-5)
    # ties count half in the accuracy: (1 + 0.5 + 0) / 3
    assert pair_accuracy([2.0, 1.0, 0.0], [1.0, 1.0, 1.0]) == pytest.approx(0.5)


def test_measure_targets_reads_the_split_from_the_policy(tmp_path):
    from alphapo.toyworld import GoldJudge
    from alphapo.toyworld.sft import measure_targets

    # 5 held-out prompts: the report's 5 examples are all of them, so every target is recomputed here
    train_sft(ToySFTConfig(seed=5, **{**TINY, "n_heldout": 5}), tmp_path / "p", progress=False)
    m = measure_targets(tmp_path / "p", k=3)
    assert (m["seed"], m["n_prompts"], m["k"]) == (5, 5, 3) and len(m["examples"]) == 5
    judge = GoldJudge()
    for ex in m["examples"]:
        scores = judge.score([ex["user"]] * 3, ex["samples"])
        assert scores == ex["scores"]
    flat = [s for ex in m["examples"] for s in ex["scores"]]
    spreads = [max(ex["scores"]) - min(ex["scores"]) for ex in m["examples"]]
    assert m["mean_gold_score"] == pytest.approx(sum(flat) / 15)
    assert m["mean_spread"] == pytest.approx(sum(spreads) / 5)
    assert m["frac_spread_ge_2"] == pytest.approx(sum(s >= 2 for s in spreads) / 5)
