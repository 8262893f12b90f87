"""The TRL benchmark runs end to end on a very small setting, and both sides train the same problem.

Timing figures are not asserted (speed goals live in the benchmark's printed ratios, not in tests); what
is asserted is what makes the comparison fair: the same tokens on both sides and the same first-step
loss (the script itself exits 1 otherwise).
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
def test_benchmark_smoke_same_tokens_and_first_loss(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_vs_trl.py"), "--pairs", "simpo", "--steps", "2",
           "--repeats", "1", "--hidden-size", "32", "--layers", "1", "--vocab-size", "512",
           "--json", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLCONFIGDIR": str(tmp_path)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (row,) = json.loads(out.read_text())["table"]
    assert row["pair"] == "simpo" and row["tokens_match"] and row["loss1_ok"]
    assert "| simpo |" in proc.stdout
