"""bench_paths.py runs end to end on a very small setting; its variants compute the same thing.

Timings are not asserted (they live in the printed tables). Asserted: the three log-prob layouts give
the same first-step loss (the script exits 1 otherwise), the layouts' useful-token accounting (the same
in the no-model tokens mode), that greedy sampling is identical with one prefill per prompt and with
``num_return_sequences``, and that the toy SFT variants differ only where they should.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_paths_smoke_layouts_agree(tmp_path):
    out = tmp_path / "paths.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_paths.py"), "--shape", "default", "--hidden-size",
           "32", "--layers", "1", "--vocab-size", "512", "--repeats", "1", "--batches", "1", "--batch-size", "4",
           "--gen-prompts", "2", "--gen-tokens", "4", "--k", "2", "--matmul-n", "64", "--json", str(out),
           "--modes", "train,generate,tokens,sft", "--sft-steps", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads(out.read_text())
    losses = res["train"]["first_loss"]
    assert set(losses) == {"plain", "shared", "packed", "packed_2x"}
    assert max(losses.values()) - min(losses.values()) <= 1e-5
    # the same real tokens in every layout; the plain one repeats the prompt, so processes the most
    useful, processed = res["train"]["useful"], res["train"]["processed"]
    assert len(set(useful.values())) == 1
    assert processed["plain"] > processed["shared"] >= processed["packed"] >= useful["plain"]
    assert processed["packed_2x"] >= useful["plain"]
    assert all(g["greedy_equal"] for g in res["generate"].values())
    assert "| shared |" in proc.stdout and "| quickstart |" in proc.stdout
    # the tokens mode builds the same planned layouts as the training mode, without running the model
    for v, x in res["tokens"]["layouts"].items():
        assert (x["useful"], x["processed"]) == (useful[v], processed[v])
    # toy SFT: foreach AdamW and clipping give the default's weights bit for bit, hence the same losses;
    # bf16 autocast moves them by rounding only
    sft = res["sft"]["last_mean_loss"]
    assert sft["float32-foreach"] == sft["float32"]
    assert sft["bf16-autocast"] == pytest.approx(sft["float32"], rel=2e-2) and sft["bf16-autocast"] != sft["float32"]
