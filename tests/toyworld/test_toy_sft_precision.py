"""Toy SFT precision: bf16 autocast keeps float32 master weights and moves the loss only by bfloat16
rounding; bad precision names are errors."""

from __future__ import annotations

import json

import pytest

from alphapo.errors import UserError
from alphapo.toyworld.sft import ToySFTConfig, train_sft

TINY = dict(n_train=64, n_heldout=8, hidden_size=16, layers=1, heads=2, kv_heads=1, intermediate_size=32,
            steps=6, batch_size=8, warmup_steps=2)


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
