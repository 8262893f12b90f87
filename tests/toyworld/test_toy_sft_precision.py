"""Toy SFT speed and precision: the foreach optimizer gives the loop's weights bit for bit; bf16 autocast
keeps float32 master weights and moves the loss only by bfloat16 rounding; bad precision names are errors."""

from __future__ import annotations

import json

import pytest

from alphapo.errors import UserError
from alphapo.toyworld.sft import ToySFTConfig, _lr_at, build_policy, demonstrations, encode_example, train_sft

TINY = dict(n_train=64, n_heldout=8, hidden_size=16, layers=1, heads=2, kv_heads=1, intermediate_size=32,
            steps=6, batch_size=8, warmup_steps=2)


def _loop_sft(config: ToySFTConfig):
    """The toy SFT recipe written out with PyTorch's per-parameter AdamW loop (``foreach=False``) and
    per-parameter clipping: the reference the foreach version must equal bit for bit."""
    import torch

    from alphapo.toyworld.tasks import split_tasks
    from alphapo.toyworld.tokenizer import build_toy_tokenizer

    torch.set_num_threads(1)
    tok = build_toy_tokenizer()
    train_tasks, _ = split_tasks(config.seed, config.n_train, config.n_heldout)
    demos = demonstrations(train_tasks, config.seed, p_error=config.p_error, p_verbose=config.p_verbose,
                           p_systematic=config.p_systematic)
    encoded = [encode_example(tok, d["prompt"], d["response"]) for d in demos]
    model = build_policy(tok, config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                            betas=(0.9, 0.98), foreach=False)
    gen = torch.Generator().manual_seed(config.seed)
    order: list[int] = []
    losses = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        for step in range(config.steps):
            if len(order) < config.batch_size:
                order += torch.randperm(len(encoded), generator=gen).tolist()
            batch, order = order[:config.batch_size], order[config.batch_size:]
            width = max(len(encoded[i][0]) for i in batch)
            ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                x, y = encoded[i]
                ids[row, :len(x)], labels[row, :len(y)], mask[row, :len(x)] = torch.tensor(x), torch.tensor(y), 1
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, config)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=False)
            opt.step()
            losses.append(round(loss.item(), 5))
    return model, losses


def test_sft_weights_equal_the_per_parameter_optimizer_loop_bit_for_bit(tmp_path):
    """The foreach AdamW and clipping of ``train_sft`` do the loop's arithmetic per element: after 6 steps
    (warm-up and decay, clipping active at lr 3e-3) every saved weight equals the loop's exactly."""
    import torch
    from safetensors.torch import load_file

    config = ToySFTConfig(seed=2, **TINY)
    summary = train_sft(config, tmp_path / "sft", progress=False)
    model, losses = _loop_sft(ToySFTConfig(seed=2, **TINY))
    saved = load_file(tmp_path / "sft" / "model.safetensors")
    state = model.state_dict()
    assert summary["loss_curve"] == losses
    assert saved and all(torch.equal(saved[k], state[k]) for k in saved)


def test_bf16_autocast_keeps_float32_weights_and_moves_the_loss_by_rounding_only(tmp_path):
    """Under ``precision="bf16-autocast"`` the saved weights stay float32 (master weights) and the first
    step's loss, from the same initial weights and batch (about ln(111) = 4.71 at a random start), is
    within bfloat16 rounding of float32's (relative 1e-2; bfloat16 keeps 8 significand bits, 3.9e-3) but
    not equal to it: the forward did run in bfloat16."""
    import math

    from safetensors.torch import load_file

    f32 = train_sft(ToySFTConfig(seed=1, **TINY), tmp_path / "f32", progress=False)
    bf16 = train_sft(ToySFTConfig(seed=1, precision="bf16-autocast", **TINY), tmp_path / "bf16", progress=False)
    first32, first16 = f32["loss_curve"][0], bf16["loss_curve"][0]
    assert first32 == pytest.approx(math.log(111), rel=0.05)
    assert first16 == pytest.approx(first32, rel=1e-2) and first16 != first32
    weights = load_file(tmp_path / "bf16" / "model.safetensors")
    assert {str(w.dtype) for w in weights.values()} == {"torch.float32"}
    saved = json.loads((tmp_path / "bf16" / "sft_summary.json").read_text())
    assert saved["config"]["precision"] == "bf16-autocast"


def test_precision_is_a_named_choice_and_a_wrong_name_is_an_error():
    assert ToySFTConfig().precision == "float32"
    with pytest.raises(UserError, match="toy SFT config key 'precision': 'bf16' is not one of float32, "
                                        "bf16-autocast; did you mean 'bf16-autocast'"):
        ToySFTConfig(precision="bf16")
    with pytest.raises(UserError, match="toy SFT config key 'precision'"):
        ToySFTConfig.from_dict({"precision": "float16"})
    with pytest.raises(UserError, match="did you mean 'precision'"):
        ToySFTConfig.from_dict({"precison": "float32"})
