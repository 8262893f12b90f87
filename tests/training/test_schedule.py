"""The run's length and warmup: ``train.max_steps`` overrides ``train.epochs`` (as ``max_steps > 0``
overrides ``num_train_epochs`` in transformers), and warmup always leaves a step at the full rate."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file
from test_trainer import _config, _records

from alphapo.training import load_config
from alphapo.training.optim import warmup_capped_note, warmup_steps
from alphapo.training.trainer import plan_schedule, train


@pytest.mark.parametrize(("total", "ratio", "expected"), [
    (1, 0.1, 0),    # ceil(0.1) = 1 would be the only step, at rate 0
    (1, 1.0, 0),
    (2, 1.0, 1),    # step 0 at rate 0, step 1 at the full rate
    (10, 1.0, 9),
    (10, 0.1, 1),   # uncapped: ceil(1.0)
    (10, 0.11, 2),  # uncapped: ceil(1.1)
    (10, 0.0, 0),
])
def test_warmup_steps_round_up_and_leave_one_full_rate_step(total, ratio, expected):
    assert warmup_steps(total, ratio) == expected


def test_warmup_capped_note_only_when_capped():
    assert warmup_capped_note(10, 0.1) is None and warmup_capped_note(1, 0.0) is None
    note = warmup_capped_note(1, 0.1)
    assert "train.warmup_ratio=0.1" in note and "1 warmup steps" in note and "warmup is 0 steps" in note


@pytest.mark.parametrize(("overrides", "total"), [
    ((), 4),                                     # 1 epoch of ceil(16 / 4) steps
    (("train.epochs=3",), 12),
    (("train.max_steps=2",), 2),                 # stops early
    (("train.max_steps=9",), 9),                 # more than an epoch: 2.25 passes over the data
    (("train.epochs=3", "train.max_steps=5"), 5),  # max_steps overrides epochs either way
])
def test_plan_schedule_max_steps_overrides_epochs(tmp_path, overrides, total):
    cfg = load_config(None, [f"model.name_or_path={tmp_path}", f"data.train_path={tmp_path / 'p.jsonl'}",
                             *overrides])
    schedule = plan_schedule(cfg, 16, 4)
    assert (schedule.steps_per_epoch, schedule.total_steps) == (4, total)
    assert schedule.warmup == warmup_steps(total, cfg.train.warmup_ratio)


def test_one_step_run_with_default_warmup_changes_the_weights(fake_losses, tiny_model_dir, pairs_path,
                                                             tmp_path, capsys):
    """max_steps=1 with warmup_ratio 0.1: uncapped, the only step would be warmup step 0 at rate 0 and
    final/ would equal the initial weights. Capped, it runs at the full learning rate."""
    out = tmp_path / "run"
    train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "train.max_steps=1"))
    assert "warmup is 0 steps" in capsys.readouterr().err
    (rec,) = [r for r in _records(out) if r["split"] == "train"]
    assert rec["learning_rate"] == pytest.approx(1e-3)
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(out / "final" / "model.safetensors")
    changed = sum(int((after[k] != before[k]).sum()) for k in before) / sum(v.numel() for v in before.values())
    assert changed > 0.5


def test_max_steps_beyond_one_epoch_reshuffles_and_resumes_exactly(fake_losses, tiny_model_dir, pairs_path,
                                                                  tmp_path, capsys):
    """16 pairs, global batch 4, epochs=1, max_steps=9: 9 steps over 2.25 passes; each pass is a new
    permutation (seed + epoch), and a run resumed from its step-5 checkpoint (inside the second pass)
    ends with the same losses and weights."""
    args = ("loss.name=simpo", "train.max_steps=9", "train.epochs=1", "train.lr_scheduler=constant",
            "logging.save_steps=5")
    plain = train(_config(tiny_model_dir, pairs_path, tmp_path / "plain", *args))
    assert plain.global_step == 9
    recs = [r for r in _records(tmp_path / "plain") if r["split"] == "train"]
    assert [r["step"] for r in recs] == list(range(1, 10))
    assert [r["epoch"] for r in recs][-1] == pytest.approx(9 / 4)

    from alphapo.training.data import plan_epoch
    first, second = (plan_epoch([1] * 16, global_batch=4, seed=42, epoch=e, group_by_length=False)
                     for e in (0, 1))
    assert sorted(sum(second, [])) == list(range(16)) and second != first

    out = tmp_path / "resumed"
    train(_config(tiny_model_dir, pairs_path, out, *args))
    shutil.rmtree(out / "final")  # as if killed after step 5's checkpoint
    capsys.readouterr()
    result = train(_config(tiny_model_dir, pairs_path, out, *args, "resume=true"))
    assert "(step 5)" in capsys.readouterr().err and result.global_step == 9
    assert [(r["step"], r["loss"]) for r in _records(out)] == [(r["step"], r["loss"])
                                                               for r in _records(tmp_path / "plain")]
    expected = load_file(tmp_path / "plain" / "final" / "model.safetensors")
    got = load_file(out / "final" / "model.safetensors")
    assert all(torch.equal(expected[k], got[k]) for k in expected)
