"""SIGTERM (a cluster pre-empting the job) or SIGINT: the run finishes its optimizer step, saves a
checkpoint, exits with a one-line message (exit code 2, no traceback), and resume=true continues."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import pytest
from test_resume import _cmd, _env

from conftest import write_pairs


def _logged_steps(out) -> int:
    try:
        return len((out / "metrics.jsonl").read_text().splitlines())
    except OSError:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_resume_finishes_the_run(sig, tiny_model_dir, tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", n=24)
    out = tmp_path / "run"
    # no periodic checkpoints: the only checkpoint is the one the signal asks for
    cmd = _cmd(tiny_model_dir, data, out, "logging.save_steps=none")
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _logged_steps(out) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"alphapo train: error: stopped by {sig.name} after optimizer step "), last
    step = int(last.split("after optimizer step ")[1].split()[0])
    assert 2 <= step < 24 and "continue with resume=true" in last
    assert (out / "checkpoints" / "latest").read_text().strip() == f"step-{step:06d}"
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(1, step + 1))  # every finished step logged, once

    resumed = subprocess.run(_cmd(tiny_model_dir, data, out, "resume=true", "logging.save_steps=none"),
                             env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(1, 25))


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_both_ranks_at_one_step_and_resume_finishes(tiny_model_dir, tmp_path):
    """A pre-empted 2-process CPU job: torchrun forwards SIGTERM to both ranks, which agree on the step to
    stop after (one all-reduce per step), save one checkpoint with both ranks' RNG states, and exit; a
    resumed launch finishes every step once."""
    import os
    import sys

    from safetensors.torch import load_file
    from test_distributed import _free_port

    data = write_pairs(tmp_path / "pairs.jsonl", n=16)
    out = tmp_path / "ddp"

    def launch(*extra):
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                "127.0.0.1", "--master_port", str(_free_port()), "-m", "alphapo.cli", "train",
                f"model.name_or_path={tiny_model_dir}", f"data.train_path={data}", f"output_dir={out}",
                "loss.name=simpo", "train.epochs=4", "train.per_device_batch_size=1", "train.global_batch_size=2",
                "logging.progress_bar=false", "logging.tensorboard=false", *extra]

    env = {k: v for k, v in _env().items() if k != "ACCELERATE_USE_CPU"}
    env.update({"CUDA_VISIBLE_DEVICES": "", "GLOO_SOCKET_IFNAME": "lo"})
    proc = subprocess.Popen(launch(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 180
    while _logged_steps(out) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=180)
    # both ranks report, the same step (their stderr lines may interleave, so count matches, not lines)
    stops = re.findall(r"error: stopped by SIGTERM after optimizer step (\d+) ", stderr)
    assert len(stops) == 2 and stops[0] == stops[1], stderr[-3000:]
    step = int(stops[0])
    assert 2 <= step < 32 and (out / "checkpoints" / "latest").read_text().strip() == f"step-{step:06d}"
    rng = load_file(out / "checkpoints" / f"step-{step:06d}" / "rng.safetensors")
    assert "torch_cpu" in rng and "rank1.torch_cpu" in rng

    resumed = subprocess.run(launch("resume=true"), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(1, 33))
