"""The output folder: one trainer at a time, finished runs are not clobbered, interrupted swaps recover."""

from __future__ import annotations

import os
import re
from pathlib import Path

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


def test_finished_run_is_refused_unless_overwrite_or_resume(fake_losses, tiny_model_dir, pairs_path, tmp_path):
    out = tmp_path / "done"
    train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "train.max_steps=2", "logging.save_steps=1"))
    before = (out / "final" / "model.safetensors").read_bytes()
    with pytest.raises(UserError, match=r"holds a finished run \(final/\); set resume=true .* overwrite=true"):
        train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "train.max_steps=1"))
    assert (out / "final" / "model.safetensors").read_bytes() == before
    with pytest.raises(UserError, match="contradict"):
        train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "resume=true", "overwrite=true"))
    # overwrite: a fresh run, the old run's checkpoints and log removed (none of them mixes into the new one)
    train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "train.max_steps=1", "overwrite=true"))
    assert [r["step"] for r in _records(out)] == [1] and not (out / "checkpoints").exists()
    assert (out / "final" / "model.safetensors").read_bytes() != before


def test_unfinished_run_with_checkpoints_is_refused_without_resume(fake_losses, tiny_model_dir, pairs_path,
                                                                  tmp_path):
    out = tmp_path / "half"
    train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "train.max_steps=2", "logging.save_steps=1"))
    import shutil

    shutil.rmtree(out / "final")  # as if killed after the checkpoint of step 1
    with pytest.raises(UserError, match="holds checkpoints of an unfinished run; set resume=true"):
        train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "train.max_steps=2"))


def test_failed_run_on_bad_data_leaves_the_finished_run_and_its_config(fake_losses, tiny_model_dir, pairs_path,
                                                                       tmp_path):
    out = tmp_path / "keep"
    train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "train.max_steps=1", "logging.save_steps=1"))
    config_before = (out / "config.yaml").read_text()
    files_before = sorted(p.relative_to(out) for p in out.rglob("*"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b"}\n')
    with pytest.raises(UserError):
        train(_config(tiny_model_dir, bad, out, "loss.name=simpo", "train.max_steps=1", "overwrite=true"))
    assert (out / "config.yaml").read_text() == config_before
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == files_before


_KILLED_SAVE = """
import os, sys
from pathlib import Path
from transformers import AutoModelForCausalLM, AutoTokenizer
from alphapo.training import outputs
model_dir, dest = sys.argv[1], Path(sys.argv[2])
real_rename = os.rename
def dying_rename(src, dst):
    if Path(dst) == dest:  # the new folder is about to replace final/, which is already aside
        os._exit(9)  # killed: no except or finally block runs
    real_rename(src, dst)
os.rename = dying_rename
outputs._save_pretrained_atomic(AutoModelForCausalLM.from_pretrained(model_dir),
                                AutoTokenizer.from_pretrained(model_dir), dest)
"""


def test_final_swap_killed_between_renames_is_restored_on_the_next_start(fake_losses, tiny_model_dir, pairs_path,
                                                                        tmp_path, capsys):
    """Replacing final/ renames final -> .final.old-PID-..., then the new folder -> final (alphapo.io's
    atomic_dir). A process killed between the two leaves no final/; the next start renames the old one
    back (and then refuses: a finished run) and removes the killed save's temporary folder."""
    import subprocess
    import sys

    out = tmp_path / "swap"
    train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "train.max_steps=1"))
    before = (out / "final" / "model.safetensors").read_bytes()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    killed = subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(tiny_model_dir), str(out / "final")],
                            env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == 9, killed.stderr[-2000:]
    assert not (out / "final").exists()
    assert len(list(out.glob(".final.old-*"))) == 1 and len(list(out.glob(".final.tmp-*"))) == 1
    capsys.readouterr()
    with pytest.raises(UserError, match="holds a finished run"):
        train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "train.max_steps=1"))
    assert f"recovered {out} from a write killed midway" in capsys.readouterr().err
    assert (out / "final" / "model.safetensors").read_bytes() == before
    assert not list(out.glob(".final.*"))


def test_saved_models_are_fsynced_before_the_rename(tiny_model_dir, tmp_path, monkeypatch):
    """Every file of a saved model is fsync'ed while still in the temporary folder (a power loss after the
    rename must not leave an empty model.safetensors under final/), and so is the parent folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alphapo import io
    from alphapo.training import outputs

    synced_files, synced_dirs = [], []
    real_file, real_dir = io.fsync_file, io.fsync_dir
    monkeypatch.setattr(io, "fsync_file", lambda p: (synced_files.append(Path(p)), real_file(p)))
    monkeypatch.setattr(io, "fsync_dir", lambda p: (synced_dirs.append(Path(p)), real_dir(p)))
    dest = tmp_path / "final"
    outputs._save_pretrained_atomic(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                    AutoTokenizer.from_pretrained(tiny_model_dir), dest, card="# card")
    saved = sorted(p.name for p in dest.iterdir())
    assert "model.safetensors" in saved and "README.md" in saved
    assert sorted(p.name for p in synced_files) == saved
    assert all(p.parent.name.startswith(".final.tmp-") for p in synced_files)  # before the rename
    assert tmp_path in synced_dirs


def test_truncated_latest_checkpoint_falls_back_to_the_previous_one(fake_losses, tiny_model_dir, pairs_path,
                                                                    tmp_path, capsys):
    """Checkpoints of steps 1 and 2; step 2's weights truncated: resume says so, continues from step 1 and
    ends with the same weights as the uninterrupted run."""
    out = tmp_path / "trunc"
    args = ("loss.name=simpo", "train.max_steps=3", "logging.save_steps=1")
    train(_config(tiny_model_dir, pairs_path, out, *args))
    expected = (out / "final" / "model.safetensors").read_bytes()
    weights = out / "checkpoints" / "step-000002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    capsys.readouterr()
    result = train(_config(tiny_model_dir, pairs_path, out, *args, "resume=true"))
    err = capsys.readouterr().err
    assert "skipped step-000002 (model.safetensors is truncated or altered" in err
    assert "resuming from step-000001, the newest intact checkpoint" in err
    assert result.global_step == 3 and [r["step"] for r in _records(out)] == [1, 2, 3]
    assert (out / "final" / "model.safetensors").read_bytes() == expected


def test_no_intact_checkpoint_or_a_pickle_is_a_one_line_error(fake_losses, tiny_model_dir, pairs_path, tmp_path):
    import pickle

    from alphapo.training.checkpoint import CheckpointError, find_latest, load_checkpoint

    out = tmp_path / "broken"
    train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "train.max_steps=2", "logging.save_steps=1"))
    step1 = out / "checkpoints" / "step-000001"
    (step1 / "model.safetensors").write_bytes(pickle.dumps({"w": [1.0, 2.0]}))  # a pickle, not safetensors
    with pytest.raises(CheckpointError, match=r"no intact checkpoint in .*step-000001 \(model.safetensors is "
                                              r"(truncated|not a readable safetensors)"):
        find_latest(out / "checkpoints")
    with pytest.raises(UserError, match="no intact checkpoint"):
        train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "train.max_steps=2", "resume=true"))
    with pytest.raises(CheckpointError, match=r"model.safetensors is not a readable safetensors file.*nothing is "
                                              r"unpickled") as err:
        load_checkpoint(step1, model=None, optimizer=None, scheduler=None)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("error", [
    OSError(28, "No space left on device"),
    # what safetensors' writer raises for the same condition (its own exception type)
    RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left '
                 'on device" })'),
])
def test_disk_full_while_saving_a_checkpoint_is_one_line_exit_2(error, fake_losses, tiny_model_dir, pairs_path,
                                                               tmp_path, monkeypatch, capsys):
    from alphapo.cli import main
    from alphapo.training import checkpoint

    def full_disk(*args, **kwargs):
        raise error

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    out = tmp_path / "full"
    code = main(["train", f"model.name_or_path={tiny_model_dir}", f"data.train_path={pairs_path}",
                 f"output_dir={out}", "loss.name=simpo", "train.max_steps=2", "logging.save_steps=1",
                 "logging.progress_bar=false", "logging.tensorboard=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "Traceback" not in "\n".join(err)
    assert err[-1] == (f"alphapo train: error: cannot write {out / 'checkpoints'}: no space left on device; the "
                       f"previous checkpoint and model are kept; free space or fix the permissions, then "
                       f"continue with resume=true")
    assert not list((out / "checkpoints").glob(".tmp-*"))  # the half-written checkpoint was removed


def test_other_save_errors_are_not_disguised(fake_losses, tiny_model_dir, pairs_path, tmp_path, monkeypatch):
    from alphapo.training import checkpoint

    def broken(*args, **kwargs):
        raise RuntimeError("some other failure")

    monkeypatch.setattr(checkpoint, "save_file", broken)
    with pytest.raises(RuntimeError, match="some other failure"):
        train(_config(tiny_model_dir, pairs_path, tmp_path / "o", "loss.name=simpo", "train.max_steps=2",
                      "logging.save_steps=1"))


def test_disk_full_while_saving_final_keeps_no_partial_folder(fake_losses, tiny_model_dir, pairs_path, tmp_path,
                                                             monkeypatch):
    from transformers import PreTrainedModel

    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full_disk)
    out = tmp_path / "nofinal"
    with pytest.raises(UserError, match=r"cannot write .*final: no space left on device; no final model was "
                                        r"written \(an earlier final/ is kept\)"):
        train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "train.max_steps=1"))
    assert not (out / "final").exists() and not list(out.glob(".final.*"))


def test_output_dir_that_is_a_file_is_one_line(fake_losses, tiny_model_dir, pairs_path, tmp_path):
    target = tmp_path / "a_file"
    target.write_text("not a folder")
    with pytest.raises(UserError, match=r"output_dir.*a_file' is a file"):
        train(_config(tiny_model_dir, pairs_path, target, "loss.name=simpo", "train.max_steps=1"))
    assert target.read_text() == "not a folder"


def test_overwrite_with_a_lora_run_removes_the_old_final(fake_losses, tiny_model_dir, pairs_path, tmp_path):
    """A LoRA run with model.lora.merge=false writes adapter/ and no final/: overwriting a full run's
    folder with it must not leave that run's final/ next to the new adapter (it would pass for this run's
    model); the user's own files stay."""
    out = tmp_path / "run"
    train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "train.max_steps=2", "logging.save_steps=1",
                  "data.eval_fraction=0.25", "logging.eval_steps=1"))
    assert (out / "final").is_dir() and (out / "best").is_dir() and (out / "checkpoints").is_dir()
    (out / "notes.txt").write_text("mine")
    result = train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "model.lora.enabled=true",
                           "model.lora.merge=false", "train.max_steps=1", "overwrite=true"))
    assert result.final_dir == out / "adapter"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "adapter", "config.yaml", "metrics.jsonl", "notes.txt"]
    assert [r["step"] for r in _records(out)] == [1]


def test_clearing_a_previous_run_killed_midway_leaves_nothing_that_looks_finished(tmp_path, monkeypatch):
    """Every old entry is renamed aside (io's ``.NAME.tmp-PID-`` names) before anything is deleted: a
    crash during the deletion leaves no final/ (not a half-deleted one) and no checkpoints, and the next
    run in the folder sees neither a finished nor an unfinished run; the leftovers are io temporaries,
    removed once their process is gone."""
    import shutil

    from alphapo import io
    from alphapo.training import outputs

    out = tmp_path / "run"
    for name in ("final", "adapter", "best", "checkpoints/step-000001"):
        (out / name).mkdir(parents=True)
        (out / name / "model.safetensors").write_bytes(b"old")
    (out / "metrics.jsonl").write_text("{}\n")

    def killed(path, *a, **k):
        raise KeyboardInterrupt  # the process dies in the first deletion

    monkeypatch.setattr(shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        outputs.clear_previous_run(out)
    monkeypatch.undo()
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert visible == []
    assert outputs.output_dir_problem(out, resume=False, overwrite=False, has_checkpoint=False) is None
    leftovers = sorted(p.name for p in out.iterdir())
    assert [re.sub(r"\.tmp-[A-Za-z0-9]+-\d+-[0-9a-f]+$", "", n) for n in leftovers] == [
        ".adapter", ".best", ".checkpoints", ".final", ".metrics.jsonl"]
    assert all(n.startswith(io.temp_prefix(n[1:].split(".tmp-")[0])) for n in leftovers)
    dead = 2**22 + 12345  # above the default pid_max: no running process has it
    for p in list(out.iterdir()):
        p.rename(out / p.name.replace(f"-{os.getpid()}-", f"-{dead}-"))
    assert len(io.clean_stale_temps(out)) == 5 and list(out.iterdir()) == []


@pytest.mark.parametrize("code", ["ENOLCK", "ENOTSUP"])
def test_a_file_system_without_flock_runs_unlocked_with_one_warning(code, fake_losses, tiny_model_dir, pairs_path,
                                                                     tmp_path, monkeypatch, capsys):
    """flock failing with ENOLCK (NFS without lockd) or ENOTSUP is not "in use by another train": the run
    goes ahead without the lock and says why, once."""
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    out = tmp_path / "nfs"
    train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "train.max_steps=1"))
    err = capsys.readouterr().err
    assert err.count("running without the lock") == 1 and f"cannot lock {out / '.alphapo-train.lock'} ({code}" in err
    assert [r["step"] for r in _records(out)] == [1] and (out / "final" / "model.safetensors").is_file()


def test_a_held_lock_is_still_in_use(tmp_path, monkeypatch):
    """EWOULDBLOCK / EAGAIN / EACCES from flock mean another process holds the lock."""
    import errno
    import fcntl

    for code in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        def held(fd, op, code=code):
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(fcntl, "flock", held)
        lock = OutputDirLock(tmp_path)
        lock.path.write_text("4242\n")
        assert lock.acquire() == "pid 4242" and lock.unlocked_reason is None
