"""Reference log-probs: computed once, cached on disk by model and data fingerprints.

Losses whose ``requires`` names ``ref_chosen_logps`` / ``ref_rejected_logps`` (or ``ref_logps`` for
k-response losses) need ``logp_ref(y)`` for every training and eval response. The reference model is
frozen, so these numbers are a pure function of (reference weights, tokenised examples): we compute them
in one pass before training, free the reference model, and store them in
``<cache_dir>/<key>.safetensors`` with ``key = sha256(model fingerprint, data fingerprint, dtype)``. A
second run with the same inputs reads the file and loads no reference model at all. Reference-free
losses (simpo, alphapo, cpo, ...) never reach this module.

The model fingerprint hashes ``config.json`` and, for each weight file, its name, size and content: every
byte for files up to ``FULL_HASH_BYTES`` (1 GiB, about a second of SHA-256), else the first and last MiB
plus the file's modification time (hashing every byte of a 15 GB checkpoint on every run costs more than
it should). Why not first/last MiB alone: a model fine-tuned on some tensors only (a merged LoRA on
attention) and saved over the same folder keeps its size, its leading tensors (embeddings) and often its
trailing ones, and would silently reuse the old reference log-probs; the modification time makes an
in-place rewrite of a large file a new key (a mere copy or ``touch`` only costs one recomputation). Pass
a folder path. A hub id is fingerprinted by its snapshot in the local Hugging Face cache (the folder
named by the commit that ``refs/main`` points to, i.e. what an offline ``from_pretrained`` loads), so a
newer revision of the same repo is a new key; an id not in the cache is fingerprinted by its name only.

Deviations from TRL: TRL (``precompute_ref_log_probs=True``) recomputes the values for every run; we do
not. The cached values come from forwards in eval mode on length-sorted batches, so padding differs from
the training batches; the difference is float rounding (~1e-7 relative on CPU float32).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from alphapo.errors import AlphapoError
from alphapo.io import atomic_path
from alphapo.training.data import data_fingerprint, is_multi
from alphapo.training.logps import group_logps

_CHUNK = 1 << 20
FULL_HASH_BYTES = 1 << 30  # weight files up to this size are hashed in full


def default_cache_dir() -> Path:
    root = os.environ.get("ALPHAPO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "alphapo")
    return Path(root) / "reference"


def model_fingerprint(name_or_path: str) -> str:
    """Cheap, content-based fingerprint of a local model folder (see module docstring)."""
    h = hashlib.sha256()
    path = Path(name_or_path)
    if not path.is_dir():
        snapshot = _hub_snapshot(name_or_path)
        if snapshot is None:
            h.update(f"name:{name_or_path}".encode())
            return h.hexdigest()
        path = snapshot
    for f in sorted(path.iterdir()):
        if f.name == "config.json":
            h.update(f.read_bytes())
        elif f.suffix in (".safetensors", ".bin", ".pt") and f.is_file():
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}".encode())
            with f.open("rb") as fh:
                if st.st_size <= FULL_HASH_BYTES:
                    for block in iter(lambda: fh.read(_CHUNK), b""):
                        h.update(block)
                else:
                    h.update(f":mtime_ns={st.st_mtime_ns}".encode())
                    h.update(fh.read(_CHUNK))
                    fh.seek(st.st_size - _CHUNK)
                    h.update(fh.read(_CHUNK))
    return h.hexdigest()


def _hub_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of a hub model id (its ``config.json``'s folder), without any download."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - not a valid repo id, no hub library: fall back to the name
        return None
    return Path(found).parent if isinstance(found, str) else None


def cache_key(model_fp: str, data_fp: str, dtype: str) -> str:
    return hashlib.sha256(f"{model_fp}|{data_fp}|{dtype}".encode()).hexdigest()[:32]


def compute_reference_logps(model, examples: list[dict[str, Any]], *, pad_id: int, batch_size: int,
                            progress: bool = False) -> dict[str, torch.Tensor]:
    """Reference logps for every example: ``ref_chosen_logps`` / ``ref_rejected_logps`` ``(N,)`` or
    ``ref_logps`` ``(N, k)`` for multi-response data. Batches are length-sorted to cut padding."""
    from tqdm.auto import tqdm

    multi = is_multi(examples[0])
    n = len(examples)
    order = sorted(range(n), key=lambda i: -len(examples[i]["prompt_input_ids"]) - max(
        len(c) for c in _completions(examples[i])))
    if multi:
        k = len(examples[0]["responses_input_ids"])
        ref = torch.zeros(n, k, dtype=torch.float32)
    else:
        chosen = torch.zeros(n, dtype=torch.float32)
        rejected = torch.zeros(n, dtype=torch.float32)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in tqdm(range(0, n, batch_size), desc="reference logps", disable=not progress,
                          leave=False):
            idx = order[start: start + batch_size]
            logps = group_logps(model, [examples[i]["prompt_input_ids"] for i in idx],
                                [_completions(examples[i]) for i in idx], pad_id).logps.float().cpu()  # (b, k)
            if multi:
                ref[idx] = logps
            else:
                chosen[idx] = logps[:, 0]
                rejected[idx] = logps[:, 1]
    model.train(was_training)
    if multi:
        return {"ref_logps": ref}
    return {"ref_chosen_logps": chosen, "ref_rejected_logps": rejected}


def _completions(example: dict[str, Any]) -> list[list[int]]:
    if is_multi(example):
        return example["responses_input_ids"]
    return [example["chosen_input_ids"], example["rejected_input_ids"]]


def load_cached(cache_dir: Path, key: str, n: int) -> dict[str, torch.Tensor] | None:
    path = Path(cache_dir) / f"{key}.safetensors"
    if not path.is_file():
        return None
    try:
        tensors = load_file(path)
    except Exception:  # a corrupt cache entry is recomputed, never trusted
        return None
    if any(t.shape[0] != n for t in tensors.values()):
        return None
    return tensors


def store_cached(cache_dir: Path, key: str, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> Path:
    """Write the cache entry atomically (``alphapo.io.atomic_path``)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{key}.safetensors"
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp,
                  metadata={k: json.dumps(v) if not isinstance(v, str) else v for k, v in meta.items()})
    return path


def cached_reference_logps(config, examples, *, pad_id: int, accelerator, split: str,
                           load_model) -> dict[str, torch.Tensor]:
    """Reference log-probs of ``examples`` for a run: from the cache, or computed by the main process
    (``load_model(name_or_path, config)`` loads the reference) and stored for the other processes."""
    ref_path = config.reference.name_or_path or config.model.name_or_path
    cache_dir = Path(config.reference.cache_dir) if config.reference.cache_dir else default_cache_dir()
    key = cache_key(model_fingerprint(ref_path), data_fingerprint(examples),
                    f"{config.model.dtype}|{config.train.mixed_precision}")
    if config.reference.use_cache:
        cached = load_cached(cache_dir, key, len(examples))
        if cached is not None:
            return cached
    tensors = None
    if accelerator.is_main_process:
        model = load_model(ref_path, config).to(accelerator.device)
        model.config.use_cache = False
        with accelerator.autocast():
            tensors = compute_reference_logps(
                model, examples, pad_id=pad_id, batch_size=config.reference.batch_size,
                progress=config.logging.progress_bar)
        del model
        store_cached(cache_dir, key, tensors,
                     {"model": ref_path, "split": split, "n": str(len(examples))})
    accelerator.wait_for_everyone()
    if tensors is None:
        tensors = load_cached(cache_dir, key, len(examples))
        if tensors is None:
            raise AlphapoError(f"reference cache {cache_dir} is not shared between processes; set "
                               f"reference.cache_dir to a shared folder")
    return tensors
