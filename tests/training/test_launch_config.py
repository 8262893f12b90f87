"""How the trainer adapts the launcher's settings: the DeepSpeed config dict, the precision override."""

from __future__ import annotations

from alphapo.training.optim import deepspeed_config_for_loop, precision_mismatch


def test_deepspeed_config_accumulation_one_batch_sizes_and_auto_clipping():
    """Per-device 2 on 8 processes: micro 2, train batch 2 x 1 x 8 = 16, accumulation 1, clip from config."""
    given = {"gradient_accumulation_steps": 4, "gradient_clipping": "auto", "train_micro_batch_size_per_gpu":
             "auto", "train_batch_size": "auto", "zero_optimization": {"stage": 2}, "bf16": {"enabled": True}}
    got = deepspeed_config_for_loop(given, per_device_batch_size=2, num_processes=8, max_grad_norm=0.5)
    assert got == {"gradient_accumulation_steps": 1, "gradient_clipping": 0.5,
                   "train_micro_batch_size_per_gpu": 2, "train_batch_size": 16,
                   "zero_optimization": {"stage": 2}, "bf16": {"enabled": True}}
    assert given["gradient_accumulation_steps"] == 4  # the input is not modified


def test_deepspeed_clipping_absent_none_and_explicit():
    """Absent clipping takes max_grad_norm; no clipping (None) is DeepSpeed's 0.0; an explicit value stays."""
    got = deepspeed_config_for_loop({}, per_device_batch_size=1, num_processes=2, max_grad_norm=1.0)
    assert got == {"gradient_accumulation_steps": 1, "train_micro_batch_size_per_gpu": 1,
                   "train_batch_size": 2, "gradient_clipping": 1.0}
    got = deepspeed_config_for_loop({"gradient_clipping": "auto"}, per_device_batch_size=4, num_processes=1,
                                    max_grad_norm=None)
    assert got["gradient_clipping"] == 0.0 and got["train_batch_size"] == 4
    got = deepspeed_config_for_loop({"gradient_clipping": 2.0}, per_device_batch_size=4, num_processes=1,
                                    max_grad_norm=1.0)
    assert got["gradient_clipping"] == 2.0


def test_precision_mismatch_message():
    """Unset/empty or equal (case-insensitive): silent; different: one line naming both values."""
    assert precision_mismatch(None, "bf16") is None
    assert precision_mismatch("", "no") is None
    assert precision_mismatch("BF16", "bf16") is None
    msg = precision_mismatch("fp16", "bf16")
    assert "mixed_precision=fp16" in msg and "train.mixed_precision=bf16 is used" in msg and "\n" not in msg


def test_train_warns_once_when_launcher_precision_differs(fake_losses, tiny_model_dir, pairs_path, tmp_path,
                                                          monkeypatch, capsys):
    """A launcher that exported fp16 while the config says no: one warning line; ours wins (no scaler)."""
    from test_trainer import _config

    from alphapo.training.trainer import train

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    train(_config(tiny_model_dir, pairs_path, tmp_path / "out", "loss.name=simpo", "train.max_steps=1",
                  "train.mixed_precision=no"))
    warnings = [line for line in capsys.readouterr().err.splitlines() if "ACCELERATE_MIXED_PRECISION" in line]
    assert warnings == ["alphapo train: warning: the launcher asks for mixed_precision=fp16 "
                        "(ACCELERATE_MIXED_PRECISION), train.mixed_precision=no is used; set both the same "
                        "to silence this"]
    from accelerate.state import AcceleratorState

    assert AcceleratorState().mixed_precision == "no"  # the config's precision was used, not the launcher's
