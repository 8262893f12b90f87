"""``diagnostics.probe_path``: the probe set taken from a chosen preference file (the reward-augmented data
paper's Figure 3 probes high-scoring rejected responses, not training pairs). Training is bit-identical
with and without it; the step-0 probe record is recomputed from single-sequence forwards of the initial
model on that file's pairs; a missing file is refused naming the key."""

from __future__ import annotations

import json

import pytest
import torch

from alphapo.training import load_config
from alphapo.training.config import ConfigError, validate
from conftest import write_pairs


def _config(model_dir, data, out, *overrides):
    return load_config(None, [f"model.name_or_path={model_dir}", f"data.train_path={data}", f"output_dir={out}",
                              "train.learning_rate=1e-2", "train.per_device_batch_size=2",
                              "train.global_batch_size=4", "train.lr_scheduler=constant", "train.warmup_ratio=0",
                              "train.epochs=2", "loss.name=simpo", "model.disable_dropout=false",
                              "logging.progress_bar=false", "logging.tensorboard=false", *overrides])


@pytest.fixture(scope="module")
def dropout_model_dir(tmp_path_factory):
    """A tiny Llama with attention dropout 0.3: every training forward draws random numbers."""
    from alphapo.tiny_models import save_tiny_model

    path = save_tiny_model(tmp_path_factory.mktemp("tiny_dropout_probe_path"), seed=0)
    config = json.loads((path / "config.json").read_text())
    config["attention_dropout"] = 0.3
    (path / "config.json").write_text(json.dumps(config))
    return path


def _direct_lnorm(model_dir, path, n):
    """Mean ``logp(y)/|y|`` of the chosen and rejected responses of the first ``n`` pairs of ``path``: one
    sequence per forward, no padding, a full float64 log-softmax."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alphapo.data import load_preferences, tokenize_preferences

    examples, _ = tokenize_preferences(load_preferences(str(path)), AutoTokenizer.from_pretrained(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    out = []
    for side in ("chosen_input_ids", "rejected_input_ids"):
        values = []
        for e in examples[:n]:
            ids = torch.tensor([e["prompt_input_ids"] + e[side]])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
            p = len(e["prompt_input_ids"])
            values.append(sum(logp[p - 1 + j, t].item() for j, t in enumerate(e[side])) / len(e[side]))
        out.append(sum(values) / len(values))
    return out


def test_probe_path_probes_that_file_and_leaves_training_bit_identical(dropout_model_dir, tmp_path):
    """8 training pairs (2 epochs x 2 steps of 4), a 5-pair probe file of other pairs (seed 1). With
    ``probe_path`` and no ``probe_size`` all 5 are probed; with ``probe_size=3`` the first 3. The weights
    and logged losses equal the run without a probe (dropout on: a probe drawing random numbers would
    change them)."""
    from safetensors.torch import load_file

    from alphapo.training.trainer import train

    data = write_pairs(tmp_path / "pairs.jsonl", n=8)
    probe_file = write_pairs(tmp_path / "probe.jsonl", n=5, seed=1)
    plain = train(_config(dropout_model_dir, data, tmp_path / "plain"))
    every = train(_config(dropout_model_dir, data, tmp_path / "all", f"diagnostics.probe_path={probe_file}",
                          "diagnostics.probe_steps=2"))
    first3 = train(_config(dropout_model_dir, data, tmp_path / "first3", f"diagnostics.probe_path={probe_file}",
                           "diagnostics.probe_size=3"))
    base = load_file(str(plain.final_dir / "model.safetensors"))
    for run in (every, first3):
        w = load_file(str(run.final_dir / "model.safetensors"))
        assert w.keys() == base.keys() and all(torch.equal(w[k], base[k]) for k in base)

    def records(name):
        return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    losses = [r["loss"] for r in records("plain") if r["split"] == "train"]
    assert [r["loss"] for r in records("all") if r["split"] == "train"] == losses
    probes = [r for r in records("all") if r["split"] == "probe"]
    assert [r["step"] for r in probes] == [0, 2, 4] and {r["probe/size"] for r in probes} == {5}
    assert {r["probe/size"] for r in records("first3") if r["split"] == "probe"} == {3}
    chosen, rejected = _direct_lnorm(dropout_model_dir, probe_file, 5)
    assert probes[0]["probe/chosen_lnorm"] == pytest.approx(chosen, abs=1e-5)
    assert probes[0]["probe/rejected_lnorm"] == pytest.approx(rejected, abs=1e-5)
    start3 = next(r for r in records("first3") if r["split"] == "probe")
    assert start3["probe/rejected_lnorm"] == pytest.approx(_direct_lnorm(dropout_model_dir, probe_file, 3)[1],
                                                           abs=1e-5)


def test_a_missing_probe_path_is_refused_naming_the_key(tiny_model_dir, tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", n=4)
    config = _config(tiny_model_dir, data, tmp_path / "out", f"diagnostics.probe_path={tmp_path / 'nope.jsonl'}")
    with pytest.raises(ConfigError, match="diagnostics.probe_path=.*nope.jsonl' does not exist"):
        validate(config)
