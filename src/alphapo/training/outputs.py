"""What a run writes besides checkpoints: the metrics log, the saved model folders and the model card.

- :class:`MetricsLogger`: one JSON object per line in ``OUT/metrics.jsonl`` (strict JSON: a non-finite
  value is written as ``null``), mirrored to TensorBoard; on resume, records of steps after the
  checkpoint are dropped (:meth:`MetricsLogger.truncate_after`).
- :func:`_save_pretrained_atomic`: an HF-format folder (safetensors + tokenizer) written with
  ``alphapo.io.atomic_dir`` (temporary folder, fsync, rename). Replacing ``final/`` takes two renames
  (``final`` aside to ``.final.old-PID-...``, then the new folder in); a kill between them leaves no
  ``final/``, and the next start (``io.clean_stale_temps`` on the output folder) renames the old one back
  and removes the temporaries of killed saves.
- :func:`model_card`: the ``README.md`` of ``final/``.
- :class:`OutputDirLock`: an exclusive lock on ``OUT/.alphapo-train.lock`` held by a run's main process,
  so a second trainer started on the same ``output_dir`` stops with a clear error instead of racing on
  the same files. It is an advisory ``flock``: the kernel drops it when the process dies, so a killed
  run never leaves a stale lock behind. A file system that cannot lock at all (NFS without a lock
  daemon) gets a one-line warning and an unlocked run, not a false "in use".
- :func:`output_dir_problem`: a folder holding a run (``final/`` or checkpoints) is refused unless the
  config says ``resume=true`` or ``overwrite=true``; :func:`clear_previous_run` removes the old run's
  files, ``final/`` included, once the new run's data and reference are ready (so a run failing on bad
  data leaves a finished run, its ``config.yaml`` included, as it was).
- :func:`write_errors`: a full disk, an exceeded quota or a read-only folder while saving becomes one
  ``UserError`` line naming the path (safetensors reports these as its own error type, not ``OSError``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

from alphapo.errors import UserError
from alphapo.io import atomic_dir, fsync_dir, temp_prefix
from alphapo.training import checkpoint as ckpt
from alphapo.training.config import TrainConfig


class MetricsLogger:
    """Appends records to OUT/metrics.jsonl (and TensorBoard) on the main process.

    The TensorBoard writer is created at the first record, so nothing is written to ``OUT/tensorboard``
    before the run has started training.
    """

    def __init__(self, out: Path, *, enabled: bool, tensorboard: bool, sink=None):
        self.path = out / "metrics.jsonl"
        self.enabled = enabled
        self.writer = None
        self.sink = sink  # e.g. accelerator.log: receives {tag: value} and step= for each record
        self._tensorboard_dir = out / "tensorboard" if enabled and tensorboard else None

    def _open_writer(self) -> None:
        tb_dir, self._tensorboard_dir = self._tensorboard_dir, None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(tb_dir))
        except ImportError:
            print("alphapo train: tensorboard is not installed; logging to metrics.jsonl only", file=sys.stderr)

    def truncate_after(self, step: int) -> None:
        """Drop records of steps after ``step`` (written by a run that was killed before its next save)."""
        if not self.enabled or not self.path.is_file():
            return
        lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        if lines:
            try:
                json.loads(lines[-1])
            except json.JSONDecodeError:  # a record torn by the kill: written after the checkpoint
                lines.pop()
        keep = [line for line in lines if json.loads(line).get("step", 0) <= step]
        ckpt.atomic_write_text(self.path, "".join(line + "\n" for line in keep))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        # strict JSON: a non-finite value (e.g. an fp16-overflow grad norm) is written as null
        record = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with self.path.open("a") as fh:
            fh.write(json.dumps(record, allow_nan=False) + "\n")
        if self._tensorboard_dir is not None:
            self._open_writer()
        scalars = {(k if k.startswith(("eval/", "probe/")) else f"train/{k}"): v for k, v in record.items()
                   if isinstance(v, (int, float)) and k not in ("step", "epoch")}
        if self.writer is not None:
            for tag, v in scalars.items():
                self.writer.add_scalar(tag, v, record["step"])
            self.writer.flush()
        if self.sink is not None:
            self.sink(scalars, step=record["step"])

    def close(self):
        if self.writer is not None:
            self.writer.close()


def _save_pretrained_atomic(model, tokenizer, dest: Path, *, card: str | None = None,
                            state_dict: dict | None = None) -> None:
    """Save an HF-format model (safetensors) + tokenizer into ``dest`` through ``alphapo.io.atomic_dir``:
    written into a temporary folder, every file fsync'ed, renamed into place, the parent fsync'ed.

    ``state_dict`` is the full (gathered) state dict under FSDP / DeepSpeed ZeRO-3
    (``accelerator.get_state_dict``); None uses the model's own parameters.
    """
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        if card is not None:
            (tmp / "README.md").write_text(card)


def loss_hyperparameters_used(config: TrainConfig) -> dict[str, Any]:
    """The loss's hyper-parameters as the run used them: the configured ones, and the signature's
    defaults for the rest (e.g. ``eta`` of the RPO losses), in signature order."""
    import inspect

    from alphapo.training.config import loss_hyperparameters, validate_loss_params

    params = loss_hyperparameters(validate_loss_params(config.loss))
    return {name: config.loss.params.get(name, p.default) for name, p in params.items()
            if name in config.loss.params or p.default is not inspect.Parameter.empty}


def model_card(config: TrainConfig, *, step: int, train_metrics: dict, eval_metrics: dict,
               probe_metrics: dict | None = None) -> str:
    """A short README.md: base model, loss, every hyper-parameter the loss used (defaults included),
    optimisation, final metrics (with a probe set: its length-normalised margin and quartiles at the end)."""
    t = config.train
    hp = ", ".join(f"{k}={v}" for k, v in loss_hyperparameters_used(config).items()) or "none"
    lines = [
        "---", "library_name: transformers", "tags: [alphapo, preference-optimization]", "---", "",
        f"# {Path(config.output_dir).name}", "",
        f"Fine-tuned from `{config.model.name_or_path}` with alphapo, loss **{config.loss.name}** ({hp}).",
        "", "## Training", "",
        f"- optimizer steps: {step}; epochs: {t.epochs if t.max_steps is None else 'set by max_steps'}; learning rate {t.learning_rate} "
        f"({t.lr_scheduler}, warmup ratio {t.warmup_ratio}); AdamW (weight decay {t.weight_decay})",
        f"- per-device batch {t.per_device_batch_size}, global batch {t.global_batch_size or 'derived'}, "
        f"max grad norm {t.max_grad_norm}, precision {t.mixed_precision}, seed {t.seed}",
        f"- LoRA: {'r=%d alpha=%d' % (config.model.lora.r, config.model.lora.alpha) if config.model.lora.enabled else 'no'}",  # noqa: E501
        f"- data: `{config.data.train_path}`", "", "## Final metrics", "",
        "| metric | value |", "|---|---|",
    ]
    keys = ("loss", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected",
            "lnorm/margin/mean", "kl/seq_k1")
    for source in (train_metrics, eval_metrics):
        for k, v in source.items():
            if k.removeprefix("eval/") in keys and isinstance(v, float):
                lines.append(f"| {k if k.startswith('eval/') else 'train/' + k} | {v:.6g} |")
    for k in PROBE_CARD_KEYS:
        v = (probe_metrics or {}).get(k)
        if isinstance(v, float):
            lines.append(f"| {k} | {v:.6g} |")
    lines += ["", "Full resolved config: `config.yaml` of the run; curves: `alphapo plot-run OUT`.", ""]
    return "\n".join(lines)



LOCK_NAME = ".alphapo-train.lock"


# flock's errnos for "another process holds the lock" (EACCES on some systems); any other errno is the
# file system refusing locks altogether (ENOLCK: NFS without a lock daemon; ENOTSUP / EINVAL: no flock)
LOCK_HELD_ERRNOS = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES})


class OutputDirLock:
    """Exclusive, non-blocking ``flock`` on ``out/.alphapo-train.lock`` (see the module docstring).

    Deviations: where the file system cannot lock at all (``flock`` fails with an errno other than
    :data:`LOCK_HELD_ERRNOS`), the run goes ahead unlocked and :attr:`unlocked_reason` says why (the
    trainer prints it once): refusing would make such file systems unusable, and calling it "in use by
    another train" would be false."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK_NAME
        self._fh = None
        self.unlocked_reason: str | None = None

    def acquire(self) -> str | None:
        """Take the lock; None on success (or when the file system cannot lock: :attr:`unlocked_reason`),
        else a description of the holder (its pid)."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no locking
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in LOCK_HELD_ERRNOS:
                fh.close()
                name = errno.errorcode.get(err.errno, str(err.errno))
                self.unlocked_reason = (
                    f"cannot lock {self.path} ({name}: {err.strerror or err}): the file system does not "
                    f"support flock (e.g. NFS without a lock daemon); running without the lock, so make sure "
                    f"no other alphapo train uses this output_dir")
                return None
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            return f"pid {holder}"
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return None

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the file drops the flock
            self._fh = None


# the saved models first: once they are gone, what remains cannot be taken for a finished run
CLEARED_ON_FRESH_START = ("final", "adapter", "best", "checkpoints", "tensorboard", "trackers", "plots",
                          "metrics.jsonl")


def output_dir_problem(out: Path, *, resume: bool, overwrite: bool, has_checkpoint: bool) -> str | None:
    """Why a run may not start in ``out`` (None when it may): it holds a finished run (``final/``) or an
    unfinished one (checkpoints), and the config says neither ``resume=true`` nor ``overwrite=true``; or
    ``resume=true`` finds a finished run without a checkpoint to continue from."""
    if resume and overwrite:
        return "resume=true and overwrite=true contradict: resume continues the run in output_dir, overwrite " \
               "starts it again; set one"
    finished = (Path(out) / "final").is_dir() or (Path(out) / "adapter").is_dir()
    if overwrite or not (finished or has_checkpoint):
        return None
    if not resume:
        what = "a finished run (final/)" if finished else "checkpoints of an unfinished run"
        return (f"output_dir {str(out)!r} holds {what}; set resume=true to continue it, overwrite=true to "
                f"replace it, or choose another output_dir")
    if not has_checkpoint:
        return (f"resume=true, but output_dir {str(out)!r} holds a finished run (final/) and no checkpoint "
                f"to continue from; set overwrite=true to train it again")
    return None


def clear_previous_run(out: Path) -> None:
    """Remove every file of a previous run in ``out`` that a fresh run would not rewrite itself: its saved
    models (``final/``, ``adapter/``, ``best/``), checkpoints, logs and plots (``config.yaml`` is rewritten
    right after). A LoRA run with ``model.lora.merge=false`` writes no ``final/``, so an old ``final/``
    left behind would pass for this run's model.

    Each entry is first renamed aside under ``alphapo.io``'s temporary name (``.NAME.tmp-HOST-PID-...``), the
    saved models first, and the folder fsync'ed; only then are they deleted. A crash at any point leaves
    no half-deleted ``final/`` that looks finished: an entry is there whole or under a temporary name,
    which ``io.clean_stale_temps`` removes at the next save into ``out``."""
    out = Path(out)
    aside = []
    for name in CLEARED_ON_FRESH_START:
        path = out / name
        if path.exists() or path.is_symlink():
            moved = out / (temp_prefix(name) + secrets.token_hex(4))
            os.rename(path, moved)
            aside.append(moved)
    if aside:
        fsync_dir(out)
    for moved in aside:
        if moved.is_dir() and not moved.is_symlink():
            shutil.rmtree(moved)
        else:
            moved.unlink()


PROBE_CARD_KEYS = ("probe/chosen_lnorm", "probe/rejected_lnorm", "probe/margin_lnorm", "probe/margin_lnorm/q1",
                   "probe/margin_lnorm/median", "probe/margin_lnorm/q3")
"""The probe metrics of the end of training in the model card (AlphaPO Figure 13's margin quartiles)."""

LINE_KEYS = (("loss", "loss", ".4f"), ("rewards/accuracies", "acc", ".3f"), ("rewards/margins", "margin", ".4f"),
             ("learning_rate", "lr", ".3g"), ("grad_norm", "grad_norm", ".4g"), ("tokens_per_second", "tok/s", ".0f"))


def metric_line(record: dict[str, Any], total_steps: int) -> str:
    """The one line printed per logged record, e.g.
    ``alphapo train: step 3/10 loss 0.6931 acc 0.500 margin 0.0012 lr 1e-06 grad_norm 0.1234 tok/s 812``
    (eval records: ``eval step 3/10 loss ... acc ... margin ...``; probe records:
    ``probe step 3/10 chosen_lnorm -1.234 rejected_lnorm -2.345 margin_lnorm 1.111``)."""
    if record.get("split") == "probe":
        parts = [f"alphapo train: probe step {record['step']}/{total_steps}"]
        for key in ("probe/chosen_lnorm", "probe/rejected_lnorm", "probe/margin_lnorm"):
            if isinstance(record.get(key), (int, float)):
                parts.append(f"{key.removeprefix('probe/')} {record[key]:.4f}")
        return " ".join(parts)
    prefix = "eval/" if record.get("split") == "eval" else ""
    parts = [f"alphapo train: {'eval ' if prefix else ''}step {record['step']}/{total_steps}"]
    for key, label, fmt in LINE_KEYS:
        value = record.get(prefix + key)
        if isinstance(value, (int, float)):
            parts.append(f"{label} {value:{fmt}}")
    return " ".join(parts)


_WRITE_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                 errno.EROFS: "read-only file system", errno.EACCES: "permission denied"}
# how safetensors' Rust writer words the same errors ("IoError(Os { code: 28, kind: StorageFull, ... })")
_WRITE_MESSAGES = {"No space left on device": errno.ENOSPC, "StorageFull": errno.ENOSPC,
                   "Disk quota exceeded": errno.EDQUOT, "QuotaExceeded": errno.EDQUOT,
                   "Read-only file system": errno.EROFS, "ReadOnlyFilesystem": errno.EROFS}


def _write_errno(err: BaseException) -> int | None:
    if isinstance(err, OSError) and err.errno in _WRITE_ERRNOS:
        return err.errno
    text = str(err)
    return next((code for marker, code in _WRITE_MESSAGES.items() if marker in text), None)


@contextlib.contextmanager
def write_errors(path: Path, *, kept: str = "the previous checkpoint and model are kept"):
    """Turn a full disk / exceeded quota / read-only target while writing ``path`` into one ``UserError``
    line (the writers clean their temp files up before the error gets here); other errors pass."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - safetensors raises non-OSError types for I/O failures
        code = _write_errno(err)
        if code is None:
            raise
        raise UserError(f"cannot write {path}: {_WRITE_ERRNOS[code]}; {kept}; free space or fix the "
                        f"permissions, then continue with resume=true") from None


def save_for_inference(model, tokenizer, dest: Path, **kwargs) -> None:
    """Save with ``use_cache: true`` in ``config.json`` (training turns the KV cache off; generation with
    the saved model wants it on, as in the base model's own config)."""
    config = getattr(model, "config", None)
    if config is None:
        _save_pretrained_atomic(model, tokenizer, dest, **kwargs)
        return
    config.use_cache = True
    try:
        _save_pretrained_atomic(model, tokenizer, dest, **kwargs)
    finally:
        config.use_cache = False
