"""The output folder: one trainer at a time, finished runs are not clobbered, interrupted swaps recover."""

from __future__ import annotations

import os

import pytest
from test_trainer import _config, _records

from alphapo.errors import UserError
from alphapo.training.outputs import OutputDirLock
from alphapo.training.trainer import train


def test_second_trainer_on_a_locked_output_dir_is_a_clear_error(fake_losses, tiny_model_dir, pairs_path, tmp_path):
    """While another trainer (here: a lock held by this process) owns the folder, train() refuses before
    writing anything; once the lock is released the run goes ahead."""
    out = tmp_path / "busy"
    other = OutputDirLock(out)
    assert other.acquire() is None
    with pytest.raises(UserError, match=rf"output_dir .* is in use by another alphapo train \(pid {os.getpid()}"):
        train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "train.max_steps=1"))
    assert not (out / "config.yaml").exists() and not (out / "metrics.jsonl").exists()
    other.release()
    train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "train.max_steps=1"))
    assert [r["step"] for r in _records(out)] == [1]
