"""Atomic, pickle-free training checkpoints.

Layout under ``OUT/checkpoints/``::

    step-000010/            one complete checkpoint
        model.safetensors       trainable parameters (all of them, or only the LoRA adapters)
        optimizer.safetensors   optimizer state tensors, keyed "<param index>.<name>"
        rng.safetensors         torch CPU (and CUDA) RNG states as uint8 tensors, of every process
        state.json              trainer state, optimizer param groups, scheduler state, "complete": true
    latest                  text file naming the newest complete checkpoint ("step-000010")

Why this shape: a checkpoint is first written into a hidden temporary folder, every file is fsync'ed,
then the folder is renamed into place (atomic on POSIX) and only then ``latest`` is replaced through a
temp file + ``os.replace``. A kill at any instant leaves either the previous ``latest`` or the new one,
never a half-written checkpoint under a final name. Loading uses ``safetensors`` for tensors and JSON for
everything else, so nothing is unpickled.

Sharded runs (FSDP, DeepSpeed) cannot gather parameters and optimizer state in one process cheaply, so
their checkpoints are the engine's own: every process calls ``accelerator.save_state`` into a shared
temporary folder, then the main process adds ``state.json`` (``"format": "accelerate"``, trainer state and
schedule) and renames it into place as above; resuming calls ``accelerator.load_state``.
Deviations: those files are accelerate's (the optimizer and RNG states are ``torch.save`` pickles, read
back by accelerate), so the "nothing unpickled" guarantee holds for single-process and DDP checkpoints
only; load sharded checkpoints only from runs you made.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from alphapo.errors import UserError
from alphapo.io import fsync_dir, fsync_file, make_temp_dir
from alphapo.io import write_text_atomic as atomic_write_text  # the name config.py and trainer.py use

STEP_DIR = re.compile(r"^step-(\d+)$")
TENSOR_FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors")
ENGINE_FORMAT = "accelerate"  # state.json "format" of a sharded checkpoint (accelerator.save_state)


class CheckpointError(UserError):
    """A checkpoint that cannot be resumed from (corrupt, truncated, not safetensors, another model)."""


def _optimizer_to_flat(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for idx, pstate in state_dict["state"].items():
        for name, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{idx}.{name}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
              for g in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters by name, detached CPU copies (safetensors-ready)."""
    return {name: p.detach().cpu().contiguous().clone() for name, p in model.named_parameters()
            if p.requires_grad}


def rng_state() -> dict[str, torch.Tensor]:
    """This process's torch CPU (and CUDA) RNG states, as uint8 tensors."""
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"torch_cuda_{i}"] = s
    return rng


def _rng_file_tensors(rng_by_rank: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Rank 0's states under their own names (the single-process layout), rank r's as ``rank<r>.<name>``."""
    out = dict(rng_by_rank[0])
    for rank, states in enumerate(rng_by_rank[1:], 1):
        out.update({f"rank{rank}.{k}": v for k, v in states.items()})
    return out


def rank_rng_states(rng: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """The states of process ``rank`` in an ``rng.safetensors`` dict; rank 0's when the checkpoint has
    none for it (written by fewer processes)."""
    prefix = f"rank{rank}."
    mine = {k[len(prefix):]: v for k, v in rng.items() if k.startswith(prefix)}
    return mine or {k: v for k, v in rng.items() if not k.startswith("rank")}


def save_checkpoint(ckpt_root: Path, step: int, *, model: torch.nn.Module, optimizer, scheduler,
                    trainer_state: dict[str, Any], keep: int = 2, protect: tuple[str, ...] = (),
                    rng_by_rank: list[dict[str, torch.Tensor]] | None = None) -> Path:
    """Write ``ckpt_root/step-<step>`` atomically, point ``latest`` at it, prune older ones.

    ``rng_by_rank``: every data-parallel process's :func:`rng_state` (gathered by the caller), so that
    each process resumes its own random stream (dropout); None saves this process's only.
    """
    ckpt_root = Path(ckpt_root)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    tmp = make_temp_dir(ckpt_root, f".tmp-{name}-")
    try:
        save_file(trainable_state(model), tmp / "model.safetensors")
        opt_tensors, opt_meta = _optimizer_to_flat(optimizer.state_dict())
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        save_file(_rng_file_tensors(rng_by_rank or [rng_state()]), tmp / "rng.safetensors")
        sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
        sizes = {f: (tmp / f).stat().st_size for f in TENSOR_FILES}  # lets a resume detect truncation
        state = {"step": step, "trainer": trainer_state, "optimizer": opt_meta, "scheduler": sched,
                 "files": sizes, "complete": True}
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _commit(ckpt_root, tmp, name, state, keep=keep, protect=protect)


def _commit(ckpt_root: Path, tmp: Path, name: str, state: dict[str, Any], *, keep: int,
            protect: tuple[str, ...] = ()) -> Path:
    """Write ``state.json`` into the filled temp folder ``tmp``, fsync every file, rename it to ``name``
    (replacing a re-save of the same step), point ``latest`` at it and prune older checkpoints."""
    final = ckpt_root / name
    try:
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        for f in tmp.rglob("*"):
            if f.is_file():
                fsync_file(f)
        fsync_dir(tmp)
        if final.exists():  # a re-save of the same step (e.g. after resume): replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(ckpt_root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(ckpt_root / "latest", name + "\n")
    _prune(ckpt_root, keep=keep, protect=(name, *protect))
    return final


def engine_temp_dir(ckpt_root: Path, step: int) -> Path:
    """The folder every process of a sharded run writes its part of checkpoint ``step`` into (a fixed
    name: all processes must agree on it); :func:`commit_engine_checkpoint` renames it into place."""
    return Path(ckpt_root) / f".tmp-step-{step:06d}-engine"


def commit_engine_checkpoint(ckpt_root: Path, step: int, *, scheduler, trainer_state: dict[str, Any],
                             keep: int = 2) -> Path:
    """Finish a sharded checkpoint whose files ``accelerator.save_state`` wrote (every process) into
    :func:`engine_temp_dir`: add ``state.json`` (``"format": "accelerate"``), fsync, rename into place,
    point ``latest`` at it, prune. Main process only, after a barrier."""
    ckpt_root = Path(ckpt_root)
    name = f"step-{step:06d}"
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    state = {"step": step, "trainer": trainer_state, "scheduler": sched, "format": ENGINE_FORMAT,
             "complete": True}
    return _commit(ckpt_root, engine_temp_dir(ckpt_root, step), name, state, keep=keep)


def is_engine_checkpoint(path: Path) -> bool:
    """Whether ``path`` was written by ``accelerator.save_state`` (a sharded run) rather than by
    :func:`save_checkpoint`."""
    return json.loads((Path(path) / "state.json").read_text()).get("format") == ENGINE_FORMAT


def load_scheduler_state(path: Path, scheduler) -> None:
    """Restore the learning-rate schedule saved in ``path/state.json``."""
    state = json.loads((Path(path) / "state.json").read_text())
    scheduler.load_state_dict({**scheduler.state_dict(), **state["scheduler"]})


def _prune(ckpt_root: Path, *, keep: int, protect: tuple[str, ...]) -> None:
    steps = sorted((p for p in ckpt_root.iterdir() if STEP_DIR.match(p.name)), key=lambda p: p.name)
    for old in steps[: max(len(steps) - max(keep, 1), 0)]:
        if old.name not in protect:
            shutil.rmtree(old, ignore_errors=True)
    for stale in ckpt_root.glob(".tmp-step-*"):  # leftovers of a save killed midway
        shutil.rmtree(stale, ignore_errors=True)


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint folder ``path`` cannot be resumed from (None when it is intact).

    Checks: ``state.json`` parses and says ``complete``; every tensor file exists, has the size recorded
    at save time (checkpoints written before sizes were recorded skip this) and a readable safetensors
    header. The tensor data are not hashed: a truncated or half-copied file changes its size, and a file
    that is not safetensors (e.g. a pickle) has no valid header.
    """
    from safetensors import safe_open

    try:
        state = json.loads((path / "state.json").read_text())
    except OSError:
        return "no state.json"
    except ValueError:
        return "state.json is not valid JSON"
    if not state.get("complete"):
        return "state.json does not mark it complete"
    if state.get("format") == ENGINE_FORMAT:  # the engine's own sharded files: it checks them on load
        return None
    sizes = state.get("files", {})
    for name in TENSOR_FILES:
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if name in sizes and f.stat().st_size != sizes[name]:
            return f"{name} is truncated or altered ({f.stat().st_size} bytes, {sizes[name]} when saved)"
        try:
            with safe_open(str(f), framework="pt"):
                pass
        except Exception:  # noqa: BLE001 - any unreadable header makes the checkpoint unusable
            return f"{name} is not a readable safetensors file"
    return None


def find_latest(ckpt_root: Path, log=None) -> Path | None:
    """The newest intact checkpoint: the one named by ``latest``, else the newest intact ``step-*`` folder.

    Each unusable candidate passed over is reported through ``log`` (one line: which and why). None when
    there is no checkpoint at all; ``CheckpointError`` when there are checkpoints but none is intact.
    """
    ckpt_root = Path(ckpt_root)
    if not ckpt_root.is_dir():
        return None
    candidates = sorted((p for p in ckpt_root.iterdir() if STEP_DIR.match(p.name)), key=lambda p: p.name,
                        reverse=True)
    pointer = ckpt_root / "latest"
    if pointer.is_file():
        named = ckpt_root / pointer.read_text().strip()
        candidates = [named] + [p for p in candidates if p != named]
    problems = []
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            if problems and log is not None:
                log(f"skipped {'; '.join(problems)}; resuming from {path.name}, the newest intact checkpoint")
            return path
        problems.append(f"{path.name} ({problem})")
    if problems:
        raise CheckpointError(f"no intact checkpoint in {ckpt_root}: {'; '.join(problems)}; delete the "
                              f"broken folders, or set resume=false overwrite=true to start again")
    return None


def read_trainer_state(path: Path) -> dict[str, Any]:
    """The trainer state of a checkpoint (JSON), without touching any model."""
    return json.loads((Path(path) / "state.json").read_text())["trainer"]


def cuda_rng_states(rng: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The ``torch_cuda_<i>`` states in device order (numeric: "torch_cuda_10" sorts after "torch_cuda_9")."""
    keys = [k for k in rng if k.startswith("torch_cuda_")]
    return [rng[k] for k in sorted(keys, key=lambda k: int(k.removeprefix("torch_cuda_")))]


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """``safetensors.load_file`` with a one-line ``CheckpointError`` for a corrupt or non-safetensors file."""
    try:
        return load_file(path)
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"{path} is not a readable safetensors file ({type(err).__name__}: {err}); "
                              f"checkpoints hold safetensors only and nothing is unpickled") from None


def load_checkpoint(path: Path, *, model: torch.nn.Module, optimizer, scheduler, rank: int = 0) -> dict[str, Any]:
    """Restore model parameters, optimizer, scheduler and process ``rank``'s RNG state in place; returns
    the trainer state."""
    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    weights = _load_tensors(path / "model.safetensors")
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    unknown = [n for n in weights if n not in params]
    if missing or unknown:
        raise CheckpointError(f"checkpoint {path} does not match the model: missing {missing[:3]}, "
                              f"unexpected {unknown[:3]}")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor.to(params[name].device))
    opt = _optimizer_from_flat(_load_tensors(path / "optimizer.safetensors"), state["optimizer"])
    optimizer.load_state_dict(opt)
    scheduler.load_state_dict({**scheduler.state_dict(), **state["scheduler"]})
    rng = rank_rng_states(_load_tensors(path / "rng.safetensors"), rank)
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        cuda_states = cuda_rng_states(rng)
        if cuda_states:
            torch.cuda.set_rng_state_all(cuda_states)
    return state["trainer"]


# keys that may change between a run and its resumption (they do not change the arithmetic of past steps)
RESUMABLE_CHANGES = ("resume", "overwrite", "output_dir", "logging.", "train.max_steps", "train.epochs",
                     "reference.cache_dir", "reference.use_cache", "reference.batch_size", "model.lora.merge")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and k != "columns":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_conflicts(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between a checkpoint's config and the current one."""
    def allowed(key: str) -> bool:
        return any(key.startswith(r) if r.endswith(".") else key == r for r in RESUMABLE_CHANGES)

    a, b = _flatten(saved), _flatten(current)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not allowed(k))
