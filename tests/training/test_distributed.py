"""Data parallelism: 2 CPU processes (gloo) train exactly like 1 process with the same global batch.

The two-process run is the real command under the real launcher, with the shipped example config:
``accelerate launch --config_file examples/accelerate/cpu_2proc.yaml -m alphapo.cli train ...``.
The single-process run is ``alphapo.training.train`` in this process (per-device batch 4). Both have
global batch 4, so the trainer's batch plan gives every optimizer step the same 4 examples
(``plan_epoch`` depends on the global batch only; the 4 are sorted by length and dealt to the
processes), and DDP averages the per-process gradients, each already scaled by
``num_processes / global_batch``. The loss trajectory must match to 1e-5 and the final weights closely.

Two cases: ``dpo`` with per-device batch 2 x 2 processes exercises the cross-process reference path
(rank 0 computes the reference log-probs and writes the on-disk cache, rank 1 waits and reads it; the
logged metrics are gathered from both ranks); ``alphapo`` with per-device batch 1 x accumulation 2 x 2
processes exercises accumulation under DDP (``no_sync`` on the first micro-batch, all-reduce on the
last).

Guard against a silent single-process launch (``accelerate launch --cpu`` starts only one process): with
one process the global batch would be 2, giving twice as many optimizer steps, which the test rejects.
Only loopback networking is used (torchrun's static rendezvous on 127.0.0.1, on a free port).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import write_pairs

ROOT = Path(__file__).resolve().parents[2]
ACCELERATE_CONFIG = ROOT / "examples" / "accelerate" / "cpu_2proc.yaml"
N_PAIRS, GLOBAL_BATCH = 16, 4
COMMON = ["train.learning_rate=1e-3", "train.warmup_ratio=0.0", "train.seed=0", "data.max_length=256",
          "logging.logging_steps=1", "logging.progress_bar=false", "logging.tensorboard=false"]
LOSSES = {"dpo": ["loss.name=dpo", "loss.beta=0.1"],
          "alphapo": ["loss.name=alphapo", "loss.beta=2.5", "loss.gamma=1.0", "loss.alpha=0.25"]}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_records(out: Path) -> list[dict]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return sorted((r for r in records if r.get("split") == "train"), key=lambda r: r["step"])


@pytest.mark.slow
@pytest.mark.parametrize("loss,per_device,accum,launcher", [("dpo", 2, 1, "accelerate"),
                                                            ("alphapo", 1, 2, "torchrun")])
def test_two_cpu_processes_match_one_process(loss, per_device, accum, launcher, tiny_model_dir, tmp_path):
    from alphapo.training import load_config, train

    data = write_pairs(tmp_path / "pairs.jsonl", n=N_PAIRS, seed=2)
    base = [f"model.name_or_path={tiny_model_dir}", f"data.train_path={data}",
            f"reference.cache_dir={tmp_path / 'ref-cache'}", *LOSSES[loss], *COMMON]

    single_out = tmp_path / "single"
    train(load_config(None, [*base, f"output_dir={single_out}", "train.per_device_batch_size=4"]))
    single = _train_records(single_out)
    assert len(single) == N_PAIRS // GLOBAL_BATCH

    ddp_out = tmp_path / "ddp"
    # the documented commands: `python -m accelerate.commands.launch` is `accelerate launch` without
    # relying on the console script, `python -m torch.distributed.run` is `torchrun`
    if launcher == "accelerate":
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIG),
               "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port())]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
               "127.0.0.1", "--master_port", str(_free_port())]
    cmd += ["-m", "alphapo.cli", "train", *base, f"output_dir={ddp_out}", "logging.save_steps=2",
            f"train.per_device_batch_size={per_device}", f"train.gradient_accumulation_steps={accum}"]
    # no ACCELERATE_USE_CPU: the trainer itself joins the launched processes on CPU (gloo)
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env.update({"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"})
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"{launcher} launch failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    ddp = _train_records(ddp_out)
    assert proc.stdout.count("steps; final model in") == 1, proc.stdout[-2000:]  # rank 0 only
    assert proc.stderr.count("alphapo train: 2 process(es) (MULTI_CPU") == 1, proc.stderr[-2000:]

    assert len(ddp) == len(single), (
        f"{len(ddp)} optimizer steps under 2 processes vs {len(single)} in one: the launcher did not start "
        f"2 processes (global batch {per_device} x {accum} x processes != {GLOBAL_BATCH})")
    losses_1 = [r["loss"] for r in single]
    losses_2 = [r["loss"] for r in ddp]
    assert max(losses_1) - min(losses_1) > 1e-3, "the trajectory does not move: the test would be vacuous"
    for step, (a, b) in enumerate(zip(losses_2, losses_1), 1):
        assert abs(a - b) <= 1e-5, f"loss at step {step}: 2 processes {a} vs 1 process {b}"
    torch.testing.assert_close(torch.tensor([r["grad_norm"] for r in ddp]),
                               torch.tensor([r["grad_norm"] for r in single]), rtol=1e-4, atol=1e-6)

    # the checkpoint holds each rank's own RNG state (rank 0's under the plain names)
    rng = load_file(str(ddp_out / "checkpoints" / "step-000002" / "rng.safetensors"))
    assert "torch_cpu" in rng and "rank1.torch_cpu" in rng

    w1 = load_file(str(single_out / "final" / "model.safetensors"))
    w2 = load_file(str(ddp_out / "final" / "model.safetensors"))
    assert w1.keys() == w2.keys()
    for name in w1:  # AdamW amplifies rounding-level gradient differences: compare at 5e-5
        torch.testing.assert_close(w2[name], w1[name], rtol=0, atol=5e-5, msg=lambda m, n=name: f"{n}: {m}")


def test_example_accelerate_configs_load():
    """Every shipped launcher config parses with accelerate's own loader and says what its name says."""
    from accelerate.commands.config.config_args import load_config_from_file

    expected = {"cpu_2proc.yaml": "MULTI_GPU", "multi_gpu.yaml": "MULTI_GPU", "fsdp2.yaml": "FSDP",
                "deepspeed_zero2.yaml": "DEEPSPEED", "deepspeed_zero3.yaml": "DEEPSPEED"}
    found = sorted(p.name for p in ACCELERATE_CONFIG.parent.glob("*.yaml"))
    assert found == sorted(expected)
    for name, kind in expected.items():
        config = load_config_from_file(str(ACCELERATE_CONFIG.parent / name))
        assert config.distributed_type.value == kind, name
        if kind == "DEEPSPEED":  # the trainer accumulates itself; DeepSpeed's own accumulation must be 1
            assert config.deepspeed_config["gradient_accumulation_steps"] == 1, name
            # unset clipping is DeepSpeed's "auto", which the trainer fills with train.max_grad_norm
            assert "gradient_clipping" not in config.deepspeed_config, name
    cpu = load_config_from_file(str(ACCELERATE_CONFIG))
    assert cpu.num_processes == 2 and cpu.use_cpu


def test_world_size_mismatch_is_an_error_naming_the_fix():
    """torchrun started 2 processes but the trainer sees 1: each would train alone on one folder."""
    from alphapo.errors import UserError
    from alphapo.training.optim import check_world_size, launcher_world_size

    check_world_size(1, 1)
    check_world_size(2, 2)
    with pytest.raises(UserError, match=r"started 2 processes \(WORLD_SIZE\) but the trainer sees 1.*ACCELERATE_USE_CPU"):
        check_world_size(2, 1)
    assert launcher_world_size({}) == 1 and launcher_world_size({"WORLD_SIZE": "4"}) == 4


def test_fsdp_or_deepspeed_asked_but_not_set_up_is_an_error():
    """accelerate runs FSDP / DeepSpeed on GPUs only; on CPU it would set up plain DDP (MULTI_CPU) and the
    run would silently train unsharded."""
    from alphapo.errors import UserError
    from alphapo.training.optim import check_engine

    check_engine({"ACCELERATE_USE_FSDP": "true"}, "FSDP")
    check_engine({}, "MULTI_CPU")
    check_engine({"ACCELERATE_USE_FSDP": "false"}, "NO")
    with pytest.raises(UserError, match="asks for FSDP but accelerate set up MULTI_CPU.*GPUs only"):
        check_engine({"ACCELERATE_USE_FSDP": "true"}, "MULTI_CPU")
    with pytest.raises(UserError, match="asks for DEEPSPEED but accelerate set up NO"):
        check_engine({"ACCELERATE_USE_DEEPSPEED": "1"}, "NO")


@pytest.mark.slow
def test_fsdp_launch_on_cpu_stops_instead_of_training_unsharded(tiny_model_dir, tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", n=8)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ACCELERATE_CONFIG.parent / "fsdp2.yaml"), "--num_processes", "2", "--mixed_precision", "no",
           "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
           "-m", "alphapo.cli", "train", f"model.name_or_path={tiny_model_dir}", f"data.train_path={data}",
           f"output_dir={tmp_path / 'out'}", "loss.name=simpo", "logging.progress_bar=false"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "GLOO_SOCKET_IFNAME": "lo"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0
    assert "error: the launcher asks for FSDP but accelerate set up MULTI_CPU" in proc.stderr
    assert not (tmp_path / "out" / "final").exists()


@pytest.mark.slow
def test_uneven_eval_and_probe_splits_under_two_processes_match_one_process(tiny_model_dir, tmp_path):
    """3 eval pairs (= the probe set) over 2 processes at per-device batch 1: process 0 runs 2 forwards,
    process 1 one real and one filler forward (as FSDP / ZeRO-3 need: each forward is a collective). The
    filler's results are dropped: eval and probe metrics equal a one-process run's."""
    from alphapo.training import load_config, train

    data = write_pairs(tmp_path / "pairs.jsonl", n=19, seed=2)
    base = [f"model.name_or_path={tiny_model_dir}", f"data.train_path={data}",
            f"reference.cache_dir={tmp_path / 'ref-cache'}", *LOSSES["dpo"], *COMMON, "data.eval_fraction=0.16",
            "diagnostics.probe_size=3", "train.max_steps=1", "train.global_batch_size=4"]
    single_out = tmp_path / "single"
    train(load_config(None, [*base, f"output_dir={single_out}", "train.per_device_batch_size=1"]))
    ddp_out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "alphapo.cli", "train", *base, f"output_dir={ddp_out}",
           "train.per_device_batch_size=1"]
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env.update({"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"})
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"

    def split(out, name):
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
        return [r for r in records if r.get("split") == name]

    for name, keys in (("eval", ("eval/loss", "eval/rewards/margins", "eval/logps/chosen")),
                       ("probe", ("probe/chosen_lnorm", "probe/margin_lnorm", "probe/margin_lnorm/median"))):
        one, two = split(single_out, name), split(ddp_out, name)
        assert [r["step"] for r in two] == [r["step"] for r in one] and one
        for a, b in zip(one, two):
            for key in keys:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (name, a["step"], key)
