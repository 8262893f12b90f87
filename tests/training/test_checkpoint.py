"""Atomic checkpoints: exact round trip without pickle, and a half-written save is never "latest"."""

from __future__ import annotations

import json

import torch

from alphapo.training import checkpoint as ckpt


def _setup(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    return model, opt, sched


def _step(model, opt, sched):
    loss = model(torch.randn(5, 3)).pow(2).sum()
    loss.backward()
    opt.step()
    sched.step()
    opt.zero_grad()


def test_round_trip_is_exact(tmp_path):
    model, opt, sched = _setup()
    for _ in range(3):
        _step(model, opt, sched)
    path = ckpt.save_checkpoint(tmp_path, 3, model=model, optimizer=opt, scheduler=sched,
                                trainer_state={"global_step": 3})
    _step(model, opt, sched)  # the reference continuation
    expected = [p.detach().clone() for p in model.parameters()]
    model2, opt2, sched2 = _setup(seed=1)  # different weights, fresh optimizer
    state = ckpt.load_checkpoint(path, model=model2, optimizer=opt2, scheduler=sched2)
    assert state == {"global_step": 3}
    assert opt2.param_groups[0]["betas"] == (0.8, 0.9) and sched2.last_epoch == 3
    _step(model2, opt2, sched2)  # same RNG draw (restored) and same optimizer state
    assert all(torch.equal(a, b) for a, b in zip(expected, model2.parameters()))
    assert ckpt.find_latest(tmp_path) == path


def test_incomplete_or_stale_checkpoints_are_skipped(tmp_path):
    model, opt, sched = _setup()
    good = ckpt.save_checkpoint(tmp_path, 2, model=model, optimizer=opt, scheduler=sched, trainer_state={})
    # a kill during a save leaves a temp folder; a kill between rename and pointer update leaves a
    # complete folder that "latest" does not name yet; a truncated folder has no complete state.json
    (tmp_path / ".tmp-step-000004-abc").mkdir()
    broken = tmp_path / "step-000005"
    broken.mkdir()
    (broken / "state.json").write_text('{"complete": tr')
    assert ckpt.find_latest(tmp_path) == good
    (tmp_path / "latest").write_text("step-000005\n")  # pointer to a broken one: fall back to newest good
    assert ckpt.find_latest(tmp_path) == good
    third = ckpt.save_checkpoint(tmp_path, 6, model=model, optimizer=opt, scheduler=sched, trainer_state={},
                                 keep=1)
    assert ckpt.find_latest(tmp_path) == third and not good.exists()
    assert not (tmp_path / ".tmp-step-000004-abc").exists()
    assert json.loads((third / "state.json").read_text())["complete"] is True


def test_cuda_rng_states_restore_in_device_order():
    # 12 GPUs: a string sort would hand device 2 the state of device 10
    rng = {f"torch_cuda_{i}": torch.tensor([i], dtype=torch.uint8) for i in range(12)}
    rng["torch_cpu"] = torch.tensor([99], dtype=torch.uint8)
    assert [int(s) for s in ckpt.cuda_rng_states(rng)] == list(range(12))


def test_every_ranks_rng_state_is_saved_and_each_rank_restores_its_own(tmp_path):
    """Two data-parallel processes have different random streams (dropout masks); a checkpoint holds both
    and rank r restores rank r's. A checkpoint without a rank's state (fewer processes) gives rank 0's."""
    model, opt, sched = _setup()
    torch.manual_seed(10)
    rank0 = ckpt.rng_state()
    torch.manual_seed(11)
    rank1 = ckpt.rng_state()
    path = ckpt.save_checkpoint(tmp_path, 1, model=model, optimizer=opt, scheduler=sched,
                                trainer_state={}, rng_by_rank=[rank0, rank1])
    expected_next = {}
    for rank, seed in ((0, 10), (1, 11)):
        torch.manual_seed(seed)
        expected_next[rank] = torch.rand(3)
    for rank in (0, 1):
        torch.manual_seed(999)
        ckpt.load_checkpoint(path, model=model, optimizer=opt, scheduler=sched, rank=rank)
        assert torch.equal(torch.rand(3), expected_next[rank]), rank
    torch.manual_seed(999)
    ckpt.load_checkpoint(path, model=model, optimizer=opt, scheduler=sched, rank=2)
    assert torch.equal(torch.rand(3), expected_next[0])


def test_resume_conflicts_ignore_output_only_keys_and_keys_older_checkpoints_lack():
    """Keys that do not change past steps' arithmetic may differ (or be missing from a checkpoint written
    before they existed); an optimisation key may not."""
    saved = {"train": {"learning_rate": 1e-3}, "model": {"lora": {"enabled": False}}, "logging": {}}
    current = {"train": {"learning_rate": 1e-3}, "model": {"lora": {"enabled": False, "merge": True}},
               "logging": {"report_to": ["tensorboard"]}, "overwrite": False, "resume": True}
    assert ckpt.resume_conflicts(saved, current) == []
    current["train"]["learning_rate"] = 2e-3
    assert ckpt.resume_conflicts(saved, current) == ["train.learning_rate"]
