"""SIGTERM (a cluster pre-empting the job) or SIGINT: the run finishes its optimizer step, saves a
checkpoint, exits with a one-line message (exit code 2, no traceback), and resume=true continues."""

from __future__ import annotations

import json
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
