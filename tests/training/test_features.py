"""LoRA, gradient checkpointing, bf16 autocast, eval_path + best-checkpoint selection, trust_remote_code."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file
from test_trainer import _config, _records

from alphapo.training.trainer import train


def test_lora_with_gradient_checkpointing_and_bf16_saves_a_merged_model(fake_losses, tiny_model_dir, pairs_path,
                                                                        tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "model.lora.enabled=true",
                  "model.lora.r=4", "model.lora.target_modules=q_proj,v_proj", "model.gradient_checkpointing=true",
                  "train.mixed_precision=bf16", "train.max_steps=3", "logging.save_steps=2",
                  "train.learning_rate=1e-2"))
    # the checkpoint holds only the trainable (adapter) weights
    ckpt = load_file(out / "checkpoints" / "step-000002" / "model.safetensors")
    assert ckpt and all("lora_" in name for name in ckpt)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    final = AutoModelForCausalLM.from_pretrained(out / "final")  # plain HF model: LoRA merged
    assert not any("lora" in n for n, _ in final.named_parameters())
    b, f = dict(base.named_parameters()), dict(final.named_parameters())
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(b[q], f[q])  # adapted
    for name in ("model.embed_tokens.weight", "model.layers.0.self_attn.k_proj.weight", "lm_head.weight"):
        assert torch.equal(b[name], f[name])  # frozen
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in _records(out))
    # the adapter itself, in peft format: base + adapter reproduces the merged final/ weights
    from peft import PeftModel

    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    assert adapter and all("lora_" in name for name in adapter)
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                       out / "adapter").merge_and_unload()
    torch.testing.assert_close(dict(merged.named_parameters())[q], f[q], rtol=0, atol=1e-6)
    assert json.loads((out / "final" / "config.json").read_text())["use_cache"] is True


def test_lora_without_merge_saves_only_the_adapter(fake_losses, tiny_model_dir, pairs_path, tmp_path):
    out = tmp_path / "adapter_only"
    result = train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "model.lora.enabled=true",
                           "model.lora.merge=false", "train.max_steps=1"))
    assert result.final_dir == out / "adapter" and not (out / "final").exists()
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["peft_type"] == "LORA"


def test_saved_models_have_the_kv_cache_on(fake_losses, tiny_model_dir, pairs_path, tmp_path):
    """Training runs with use_cache off; final/ and best/ are for inference: use_cache true, like the base."""
    out = tmp_path / "cache"
    train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "train.max_steps=1", "data.eval_fraction=0.25"))
    for folder in ("final", "best"):
        assert json.loads((out / folder / "config.json").read_text())["use_cache"] is True, folder


def test_a_metric_line_per_logged_step_and_tensorboard_tracker(fake_losses, tiny_model_dir, pairs_path, tmp_path,
                                                              capsys):
    """One stderr line per train record (and per eval record) with the logged values; logging.report_to=
    tensorboard feeds accelerate's tracker the same numbers (float32 in the event file)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "lines"
    train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "train.max_steps=2", "data.eval_fraction=0.25",
                  "logging.report_to=tensorboard"))
    records = _records(out)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("alphapo train: ")
             and " step " in line]
    train_recs = [r for r in records if r["split"] == "train"]
    expected = [f"alphapo train: step {r['step']}/2 loss {r['loss']:.4f} acc {r['rewards/accuracies']:.3f}"
                for r in train_recs]
    train_lines = [line for line in lines if line.startswith("alphapo train: step")]
    assert len(train_lines) == 2 and all(line.startswith(e) for line, e in zip(train_lines, expected))
    assert len([line for line in lines if line.startswith("alphapo train: eval step 2/2 loss")]) == 1
    events = list((out / "trackers").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    got = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert [s for s, _ in got] == [1, 2]
    for (_, value), rec in zip(got, train_recs):
        assert value == float(torch.tensor(rec["loss"], dtype=torch.float32))


def test_eval_path_and_best_checkpoint_by_max_metric(fake_losses, tiny_model_dir, pairs_path, tmp_path):
    from conftest import write_pairs

    eval_path = write_pairs(tmp_path / "eval.jsonl", n=6, seed=3)
    out = tmp_path / "best"
    result = train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", f"data.eval_path={eval_path}",
                           "logging.eval_steps=1", "logging.best_metric=eval/rewards/margins",
                           "logging.best_mode=max"))
    evals = [r for r in _records(out) if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [1, 2, 3, 4]  # every step, the last one once
    margins = [r["eval/rewards/margins"] for r in evals]
    best_step = evals[max(range(4), key=lambda i: margins[i])]["step"]
    assert result.best_step == best_step and result.best_metric == max(margins)
    assert json.loads((out / "best" / "best.json").read_text())["step"] == best_step


def test_trust_remote_code_is_off_by_default():
    from alphapo.training import TrainConfig

    assert TrainConfig().model.trust_remote_code is False


def test_dropout_disabled_by_default_like_trl(fake_losses, tiny_model_dir, pairs_path, tmp_path):
    """With dropout on in the model config, two runs still agree exactly (dropout is switched off), and
    step 1's SimPO loss equals the eval-mode (dropout-free) value of a third run with disable_dropout on."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    noisy = tmp_path / "noisy_model"
    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    cfg.attention_dropout = 0.5
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, config=cfg).save_pretrained(noisy)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(noisy)
    base = _records_after(tiny_model_dir, pairs_path, tmp_path / "base")
    off = _records_after(noisy, pairs_path, tmp_path / "off")
    on = _records_after(noisy, pairs_path, tmp_path / "on", "model.disable_dropout=false")
    assert off[0]["loss"] == base[0]["loss"]  # dropout p = 0: identical to the dropout-free model
    assert on[0]["loss"] != base[0]["loss"]  # attention dropout 0.5 active in training mode


def _records_after(model_dir, data, out, *extra):
    train(_config(model_dir, data, out, "loss.name=simpo", "train.max_steps=1", *extra))
    return _records(out)


def test_report_to_unknown_or_missing_tracker_is_an_error(fake_losses, tiny_model_dir, pairs_path, tmp_path):
    """accelerate rejects an unknown tracker name but skips an uninstalled one with only a warning; both
    are one-line errors here (a run meant to report to W&B must not silently report nowhere)."""
    import importlib.util

    import pytest

    from alphapo.errors import UserError

    with pytest.raises(UserError, match=r"logging.report_to=\['tensorbord'\]: .*Choose between .*'tensorboard'"):
        train(_config(tiny_model_dir, pairs_path, tmp_path / "a", "loss.name=simpo", "logging.report_to=tensorbord"))
    absent = next(name for name in ("wandb", "mlflow", "aim", "clearml") if importlib.util.find_spec(name) is None)
    with pytest.raises(UserError, match=rf"logging.report_to names \['{absent}'\], which is not installed"):
        train(_config(tiny_model_dir, pairs_path, tmp_path / "b", "loss.name=simpo", f"logging.report_to={absent}"))
