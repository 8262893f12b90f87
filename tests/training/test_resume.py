"""Exact resume: a run SIGKILLed mid-epoch and resumed ends bit-for-bit equal to an uninterrupted run.

Both runs are real ``alphapo train`` subprocesses (CPU, one thread, same seed) with the real ``simpo``
loss from ``alphapo.losses``. The interrupted run is
killed with SIGKILL once its ``latest`` checkpoint reaches step 4 of 24 (2 epochs of 12 steps, so the
resumed part also crosses an epoch boundary), then restarted with ``resume=true``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import write_pairs


def _cmd(model_dir, data, out, *extra):
    return [sys.executable, "-m", "alphapo.cli", "train",
            f"model.name_or_path={model_dir}", f"data.train_path={data}", f"output_dir={out}",
            "loss.name=simpo", "train.epochs=2", "train.learning_rate=1e-3", "train.per_device_batch_size=1",
            "train.global_batch_size=2", "logging.save_steps=2", "logging.progress_bar=false",
            "logging.tensorboard=false", *extra]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def _latest_step(out: Path) -> int:
    try:
        return int((out / "checkpoints" / "latest").read_text().strip().split("-")[1])
    except (OSError, IndexError, ValueError):
        return -1


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_exact(tiny_model_dir, tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", n=24)
    ref_out, out = tmp_path / "uninterrupted", tmp_path / "interrupted"
    reference = subprocess.Popen(_cmd(tiny_model_dir, data, ref_out), env=_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    victim = subprocess.Popen(_cmd(tiny_model_dir, data, out), env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _latest_step(out) < 4 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL, "the run finished before it could be killed mid-epoch"
    killed_at = _latest_step(out)
    assert 4 <= killed_at < 24 and not (out / "final").exists()

    resumed = subprocess.run(_cmd(tiny_model_dir, data, out, "resume=true"), env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {out / 'checkpoints'}" in resumed.stderr
    ref_log = reference.communicate(timeout=300)[0].decode()
    assert reference.returncode == 0, ref_log[-2000:]

    expected = load_file(ref_out / "final" / "model.safetensors")
    got = load_file(out / "final" / "model.safetensors")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)

    def losses(path):
        recs = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"], r["grad_norm"]) for r in recs if r["split"] == "train"]

    assert losses(out) == losses(ref_out) and len(losses(out)) == 24  # no step logged twice or lost


def test_engine_checkpoints_resume_exactly(fake_losses, tiny_model_dir, pairs_path, tmp_path, monkeypatch, capsys):
    """The sharded-run checkpoint path (accelerator.save_state / load_state, as under FSDP / DeepSpeed),
    driven in one CPU process: a run resumed from its step-2 engine checkpoint ends with the same weights
    and losses as an uninterrupted run. (The engines themselves need GPUs: benchmarks/gpu_check.sh.)"""
    import shutil

    from test_trainer import _config, _records

    from alphapo.training import trainer
    from alphapo.training.checkpoint import CheckpointError
    from alphapo.training.trainer import train

    args = ("loss.name=simpo", "train.max_steps=4", "logging.save_steps=2")
    train(_config(tiny_model_dir, pairs_path, tmp_path / "plain", *args))
    monkeypatch.setattr(trainer, "engine_checkpoints", lambda accelerator: True)
    out = tmp_path / "engine"
    train(_config(tiny_model_dir, pairs_path, out, *args))
    step2 = out / "checkpoints" / "step-000002"
    assert json.loads((step2 / "state.json").read_text())["format"] == "accelerate"
    assert (step2 / "model.safetensors").is_file()  # written by accelerate's save_state
    shutil.rmtree(out / "final")  # as if killed after step 2's checkpoint
    capsys.readouterr()
    result = train(_config(tiny_model_dir, pairs_path, out, *args, "resume=true"))
    assert f"resumed from {step2} (step 2)" in capsys.readouterr().err
    assert result.global_step == 4
    assert [(r["step"], r["loss"]) for r in _records(out)] == [(r["step"], r["loss"])
                                                               for r in _records(tmp_path / "plain")]
    expected = load_file(tmp_path / "plain" / "final" / "model.safetensors")
    got = load_file(out / "final" / "model.safetensors")
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    monkeypatch.setattr(trainer, "engine_checkpoints", lambda accelerator: False)
    with pytest.raises(CheckpointError, match="written by a sharded run and this one is not"):
        train(_config(tiny_model_dir, pairs_path, out, *args, "resume=true"))
