"""Diagnostics the papers plot: KL to the reference for reference-free losses (AlphaPO Figures 10-11), the
fixed probe set's length-normalised log-likelihoods (Figures 2 and 13), and ``logps/*`` as TRL logs them.

Expected values are recomputed independently (single-sequence forwards, a full log-softmax) or derived by
hand in the docstrings; "training unchanged" is checked bit for bit on the saved weights.
"""

from __future__ import annotations

import json

import pytest
import torch

from alphapo.training import load_config
from alphapo.training.config import ConfigError, validate
from alphapo.training.metrics import preference_metrics, probe_metrics
from conftest import write_pairs


def _config(model_dir, data, out, *overrides):
    return load_config(None, [f"model.name_or_path={model_dir}", f"data.train_path={data}", f"output_dir={out}",
                              "train.learning_rate=1e-2", "train.per_device_batch_size=4",
                              "train.global_batch_size=8", "train.lr_scheduler=constant", "train.warmup_ratio=0",
                              "logging.progress_bar=false", "logging.tensorboard=false",
                              f"reference.cache_dir={out}/../refcache", *overrides])


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _weights(final_dir):
    from safetensors.torch import load_file

    return load_file(str(final_dir / "model.safetensors"))


def _direct_logps(model, prompt, completion):
    """Summed log-prob of ``completion`` after ``prompt``: one sequence, no padding, a full log-softmax."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
    return sum(logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(completion)), float(len(completion))


def _examples(model_dir, data):
    from transformers import AutoTokenizer

    from alphapo.data import load_preferences, tokenize_preferences

    examples, _ = tokenize_preferences(load_preferences(str(data)), AutoTokenizer.from_pretrained(model_dir))
    return examples


def _direct(model_dir, examples):
    """(chosen logps, chosen lengths, rejected logps, rejected lengths) as float64 tensors."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    c = [_direct_logps(model, e["prompt_input_ids"], e["chosen_input_ids"]) for e in examples]
    r = [_direct_logps(model, e["prompt_input_ids"], e["rejected_input_ids"]) for e in examples]
    return tuple(torch.tensor([x[i] for x in side], dtype=torch.float64) for side in (c, r) for i in (0, 1))


# --------------------------------------------------------------------------------------------------
# pure functions


def test_probe_metrics_hand_computed():
    """See probe_metrics' docstring: margins [2, -1, 1] -> mean 2/3, q1 0, median 1, q3 1.5."""
    m = probe_metrics(chosen_logps=torch.tensor([-2.0, -6.0, -3.0]), chosen_lengths=torch.tensor([2.0, 3.0, 1.0]),
                      rejected_logps=torch.tensor([-3.0, -4.0, -8.0]), rejected_lengths=torch.tensor([1.0, 4.0, 2.0]))
    assert m["probe/chosen_lnorm"] == -2.0
    assert m["probe/rejected_lnorm"] == pytest.approx(-8 / 3)
    assert m["probe/margin_lnorm"] == pytest.approx(2 / 3)
    assert (m["probe/margin_lnorm/q1"], m["probe/margin_lnorm/median"], m["probe/margin_lnorm/q3"]) == (0.0, 1.0, 1.5)
    assert (m["probe/chosen_lnorm/q1"], m["probe/chosen_lnorm/q3"]) == (-2.5, -1.5)  # sorted [-3, -2, -1]
    # IQR 1.5, fences [-2.25, 3.75]: no margin is an outlier
    assert (m["probe/margin_lnorm/min"], m["probe/margin_lnorm/max"]) == (-1.0, 2.0)


def test_logps_token_mean_is_the_mean_of_per_token_averages_and_sums_stay_under_their_own_name():
    """chosen [-2, -6] over [2, 3] tokens: averages [-1, -2] -> -1.5; rejected [-3, -4] over [1, 4] -> -2."""
    kw = dict(chosen_logps=torch.tensor([-2.0, -6.0]), rejected_logps=torch.tensor([-3.0, -4.0]),
              chosen_lengths=torch.tensor([2.0, 3.0]), rejected_lengths=torch.tensor([1.0, 4.0]),
              chosen_rewards=torch.zeros(2), rejected_rewards=torch.zeros(2), losses=torch.zeros(2))
    mean, total = preference_metrics(**kw, logps="token_mean"), preference_metrics(**kw)
    assert (mean["logps/chosen"], mean["logps/rejected"]) == (-1.5, -2.0)
    assert (total["logps/chosen"], total["logps/rejected"]) == (-4.0, -3.5)
    for m in (mean, total):
        assert (m["logps_sum/chosen"], m["logps_sum/rejected"]) == (-4.0, -3.5)
    with pytest.raises(ValueError, match="logps"):
        preference_metrics(**kw, logps="mean")


@pytest.mark.parametrize("loss_name,expected", [
    ("simpo", "token_mean"), ("alphapo", "token_mean"), ("cpo_simpo", "token_mean"), ("cpo_ipo", "token_mean"),
    # TRL's DPOTrainer logs sums for every loss, its length-normalised ipo included
    ("dpo", "sum"), ("ipo", "sum"), ("sigmoid_norm", "sum"), ("cpo", "sum"), ("simpo_ref", "sum"),
    ("rpo_multi", "sum")])
def test_logps_convention_per_loss_follows_trl(loss_name, expected):
    from alphapo.losses import get_loss
    from alphapo.losses.contract import length_normalized
    from alphapo.training.config import LossConfig, TrainConfig
    from alphapo.training.trainer import resolve_loss

    assert resolve_loss(TrainConfig(loss=LossConfig(loss_name))).logps == expected
    assert length_normalized(get_loss(loss_name)) == (loss_name in (
        "simpo", "alphapo", "cpo_simpo", "cpo_ipo", "ipo", "sigmoid_norm", "simpo_ref"))


def test_reference_inputs_are_never_given_to_a_loss_that_does_not_require_them():
    """rloo with beta = 0 accepts ref_logps but does not need them: diagnostics-only reference log-probs
    must not reach it (they would change its value)."""
    from alphapo.training.config import LossConfig, TrainConfig
    from alphapo.training.trainer import resolve_loss

    spec = resolve_loss(TrainConfig(loss=LossConfig("simpo")))
    assert not spec.need_ref and not spec.accepted & {"ref_chosen_logps", "ref_rejected_logps"}
    assert "ref_chosen_logps" in resolve_loss(TrainConfig(loss=LossConfig("dpo"))).accepted


@pytest.mark.parametrize("override,message", [
    ("diagnostics.probe_size=0", "diagnostics.probe_size=0 is outside [1, inf)"),
    ("diagnostics.probe_steps=-2", "diagnostics.probe_steps=-2 is outside [1, inf)"),
])
def test_diagnostics_ranges_are_checked(tiny_model_dir, pairs_path, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        validate(_config(tiny_model_dir, pairs_path, tmp_path / "run", override))


def test_misspelled_diagnostics_key_names_the_nearest(tiny_model_dir, pairs_path, tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'diagnostics.probe_size'"):
        _config(tiny_model_dir, pairs_path, tmp_path / "run", "diagnostics.probe_sise=4")


# --------------------------------------------------------------------------------------------------
# end to end on a tiny Llama


@pytest.fixture(scope="module")
def ref_model_dir(tmp_path_factory):
    from alphapo.tiny_models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny_ref_diag"), seed=1)  # a reference distinct from the policy


def test_reference_kl_for_simpo_logs_kl_and_leaves_the_loss_bit_identical(tiny_model_dir, ref_model_dir, tmp_path):
    """simpo, 2 steps on one global batch of all 8 pairs; with diagnostics.reference_kl the reference
    (a different model) is run for the kl/* metrics only. Step 1's kl/seq_k1 is the mean of
    logp(y) - logp_ref(y) over the 16 responses, recomputed here from single-sequence forwards; the
    logged losses and the final weights are bit-identical with and without the option."""
    from alphapo.training.trainer import train

    data = write_pairs(tmp_path / "pairs.jsonl", n=8)
    runs = {}
    for name, extra in (("plain", []), ("kl", ["diagnostics.reference_kl=true"])):
        out = tmp_path / name
        train(_config(tiny_model_dir, data, out, "loss.name=simpo", "train.epochs=2",
                      f"reference.name_or_path={ref_model_dir}", *extra))
        runs[name] = (_records(out), _weights(out / "final"))
    plain, kl = runs["plain"][0], runs["kl"][0]
    assert [r["step"] for r in kl] == [1, 2]
    assert [r["loss"] for r in kl] == [r["loss"] for r in plain]  # bit-identical
    assert [r["rewards/margins"] for r in kl] == [r["rewards/margins"] for r in plain]
    a, b = runs["plain"][1], runs["kl"][1]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any(k.startswith("kl/") for r in plain for k in r)

    examples = _examples(tiny_model_dir, data)
    c_lp, c_len, r_lp, r_len = _direct(tiny_model_dir, examples)
    rc_lp, _, rr_lp, _ = _direct(ref_model_dir, examples)
    d = torch.cat([c_lp - rc_lp, r_lp - rr_lp])
    assert abs(d.mean().item()) > 0.1  # a distinct reference: not the trivial 0
    assert kl[0]["kl/seq_k1"] == pytest.approx(d.mean().item(), abs=1e-4)
    assert "kl/seq_k3" not in kl[0]  # k3 is not an estimator on off-policy responses
    assert kl[0]["kl/token_k1"] == pytest.approx(d.sum().item() / (c_len.sum() + r_len.sum()).item(), abs=1e-5)
    # logps/* for simpo: TRL CPOTrainer's per-token average; the sums under logps_sum/*
    assert kl[0]["logps/chosen"] == pytest.approx((c_lp / c_len).mean().item(), abs=1e-5)
    assert kl[0]["logps/rejected"] == pytest.approx((r_lp / r_len).mean().item(), abs=1e-5)
    assert kl[0]["logps_sum/chosen"] == pytest.approx(c_lp.mean().item(), abs=1e-4)
    assert kl[0]["logps_sum/rejected"] == pytest.approx(r_lp.mean().item(), abs=1e-4)


@pytest.fixture(scope="module")
def dropout_model_dir(tmp_path_factory):
    """A tiny Llama with attention dropout 0.3: training draws random numbers every forward."""
    from alphapo.tiny_models import save_tiny_model

    path = save_tiny_model(tmp_path_factory.mktemp("tiny_dropout"), seed=0)
    config = json.loads((path / "config.json").read_text())
    config["attention_dropout"] = 0.3
    (path / "config.json").write_text(json.dumps(config))
    return path


def _probe_run(model_dir, data, out, *extra):
    from alphapo.training.trainer import train

    return train(_config(model_dir, data, out, "loss.name=simpo", "train.epochs=3", "model.disable_dropout=false",
                         "train.per_device_batch_size=2", "train.global_batch_size=4", "data.eval_fraction=0.25",
                         *extra))


def test_probe_set_is_logged_from_step_0_and_does_not_change_training(dropout_model_dir, tmp_path, monkeypatch):
    """Dropout on (so the training forwards draw random numbers): 12 train / 4 eval pairs, 3 steps per
    epoch x 3 epochs, probing the first 3 eval pairs every 2 steps. The weights after training are
    bit-identical with and without probes; a probe that drew one random number would change them (checked
    with a deliberately faulty probe). The step-0 probe record is recomputed from single-sequence
    forwards of the initial model in eval mode."""
    from alphapo.training import trainer as trainer_mod
    from alphapo.training.data import split_eval

    data = write_pairs(tmp_path / "pairs.jsonl", n=16)
    plain = _probe_run(dropout_model_dir, data, tmp_path / "plain")
    probed = _probe_run(dropout_model_dir, data, tmp_path / "probed", "diagnostics.probe_size=3",
                        "diagnostics.probe_steps=2")
    a, b = _weights(plain.final_dir), _weights(probed.final_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    recs = _records(tmp_path / "probed")
    train_recs = [r for r in recs if r["split"] == "train"]
    assert [r["loss"] for r in train_recs] == [r["loss"] for r in _records(tmp_path / "plain")
                                               if r["split"] == "train"]
    probes = [r for r in recs if r["split"] == "probe"]
    assert [r["step"] for r in probes] == [0, 2, 4, 6, 8, 9]  # every 2 steps, and the end of training
    assert all(r["probe/size"] == 3 for r in probes)
    assert probes[-1]["probe/margin_lnorm"] != probes[0]["probe/margin_lnorm"]  # the policy moved

    # step 0: the initial policy (eval mode: no dropout) on the first 3 pairs of the trainer's eval split
    _, eval_part = split_eval(_examples(dropout_model_dir, data), 0.25, 42)
    c_lp, c_len, r_lp, r_len = _direct(dropout_model_dir, eval_part[:3])
    margin = c_lp / c_len - r_lp / r_len
    assert probes[0]["probe/chosen_lnorm"] == pytest.approx((c_lp / c_len).mean().item(), abs=1e-5)
    assert probes[0]["probe/rejected_lnorm"] == pytest.approx((r_lp / r_len).mean().item(), abs=1e-5)
    assert probes[0]["probe/margin_lnorm"] == pytest.approx(margin.mean().item(), abs=1e-5)
    assert probes[0]["probe/margin_lnorm/median"] == pytest.approx(margin.median().item(), abs=1e-5)

    # the end of training: the last probe record is the result's, and the model card shows its quartiles
    assert probed.probe_metrics == probes[-1]
    card = (probed.final_dir / "README.md").read_text()
    assert f"| probe/margin_lnorm/q1 | {probes[-1]['probe/margin_lnorm/q1']:.6g} |" in card

    # the test can fail: a probe that consumes one random number changes the trained weights
    original = trainer_mod.probe

    def drawing_probe(run, step):
        torch.rand(1)
        return original(run, step)

    monkeypatch.setattr(trainer_mod, "probe", drawing_probe)
    faulty = _probe_run(dropout_model_dir, data, tmp_path / "faulty", "diagnostics.probe_size=3",
                        "diagnostics.probe_steps=2")
    c = _weights(faulty.final_dir)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_probe_set_falls_back_to_the_training_set_and_plot_run_draws_it(tiny_model_dir, tmp_path, capsys):
    """Without an eval split the probe set is the first training pairs (here all 8 of them, with a note
    that 20 were asked for); plot-run writes lnorm_probe.png from the probe records."""
    from alphapo.cli import main
    from alphapo.training.trainer import train

    data = write_pairs(tmp_path / "pairs.jsonl", n=8)
    out = tmp_path / "run"
    train(_config(tiny_model_dir, data, out, "loss.name=alphapo", "train.max_steps=1",
                  "diagnostics.probe_size=20"))
    assert "diagnostics.probe_size=20 but the training set has 8 examples" in capsys.readouterr().err
    probes = [r for r in _records(out) if r["split"] == "probe"]
    assert [r["step"] for r in probes] == [0, 1]  # probe_steps: null -> every logging step (1)
    c_lp, c_len, r_lp, r_len = _direct(tiny_model_dir, _examples(tiny_model_dir, data))
    assert probes[0]["probe/size"] == 8
    assert probes[0]["probe/chosen_lnorm"] == pytest.approx((c_lp / c_len).mean().item(), abs=1e-5)
    assert probes[0]["probe/margin_lnorm/q3"] == pytest.approx(
        torch.quantile(c_lp / c_len - r_lp / r_len, 0.75).item(), abs=1e-5)

    assert main(["plot-run", str(out)]) == 0
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == ["lnorm_probe.png", "lnorm_train.png",
                                                                    "training.png"]


def test_lnorm_key_maps_the_probe_names_onto_the_figure_2_panels():
    from alphapo.training.plotting import lnorm_key

    assert lnorm_key("probe/", "margin", "mean") == "probe/margin_lnorm"
    assert lnorm_key("probe/", "chosen", "q1") == "probe/chosen_lnorm/q1"
    assert lnorm_key("eval/", "rejected", "max") == "eval/lnorm/rejected/max"
    assert lnorm_key("", "margin", "median") == "lnorm/margin/median"


def test_probe_pairs_of_k_responses_are_the_best_and_worst_scored():
    from alphapo.training.trainer import probe_pairs

    multi = {"prompt_input_ids": [5], "responses_input_ids": [[1], [2, 2], [3, 3, 3]], "scores": [0.5, 0.9, 0.1]}
    pair = {"prompt_input_ids": [6], "chosen_input_ids": [7], "rejected_input_ids": [8, 8]}
    assert probe_pairs([multi, pair]) == ([[5], [6]], [[2, 2], [7]], [[3, 3, 3], [8, 8]])


# --------------------------------------------------------------------------------------------------
# logps/* against TRL's trainers (the logged value of one step at learning rate 0)

TRL_PAIRS = [
    {"prompt": "What is 12 plus 7?", "chosen": " The answer is 19.", "rejected": " banana apple"},
    {"prompt": "Reverse 1 2 3.", "chosen": " 3 2 1", "rejected": " 1 2 3 4 5 and more words here"},
    {"prompt": "Hello", "chosen": " world!", "rejected": " Goodbye, world. Yes no maybe."},
    {"prompt": "Sort: b a", "chosen": " a b", "rejected": " b a"},
]


def _masked_logps(model, input_ids, attention_mask, completion_mask):
    """Sum of log pi(token_t | tokens_<t) over completion tokens, and the completion lengths."""
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    per_token = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    mask = completion_mask[:, 1:].float()
    return (per_token * mask).sum(dim=1), mask.sum(dim=1)


def _ours(loss_name, c_lp, c_len, r_lp, r_len):
    from alphapo.training.config import LossConfig, TrainConfig
    from alphapo.training.trainer import resolve_loss

    z = torch.zeros_like(c_lp)
    return preference_metrics(chosen_logps=c_lp, rejected_logps=r_lp, chosen_lengths=c_len, rejected_lengths=r_len,
                              chosen_rewards=z, rejected_rewards=z, losses=z,
                              logps=resolve_loss(TrainConfig(loss=LossConfig(loss_name))).logps)


@pytest.mark.slow
@pytest.mark.trl
@pytest.mark.parametrize("loss_type,ours", [("simpo", "cpo_simpo"), ("alphapo", "alphapo"), ("sigmoid", "cpo")])
def test_logps_match_trl_cpo_trainer(tiny_model_dir, tmp_path, loss_type, ours):
    """CPOTrainer logs the per-token average for simpo / alphapo and the sum for sigmoid (CPO); so do we."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    args = CPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=4, max_steps=1, logging_steps=1,
                     report_to=[], loss_type=loss_type, use_cpu=True, save_strategy="no", learning_rate=0.0,
                     bf16=False, **({"alpha": 0.5} if loss_type == "alphapo" else {}))
    trainer = CPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args,
                         train_dataset=Dataset.from_list(TRL_PAIRS),
                         processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    trainer.train()
    log = trainer.state.log_history[0]
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(TRL_PAIRS))])
    sides = {}
    for side in ("chosen", "rejected"):
        mask = (batch[f"{side}_labels"] != -100).long()
        sides[side] = _masked_logps(trainer.model, batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"], mask)
    m = _ours(ours, *sides["chosen"], *sides["rejected"])
    assert m["logps/chosen"] == pytest.approx(log["logps/chosen"], rel=1e-5)
    assert m["logps/rejected"] == pytest.approx(log["logps/rejected"], rel=1e-5)
    averaged = loss_type != "sigmoid"
    assert (m["logps/chosen"] != m["logps_sum/chosen"]) == averaged


@pytest.mark.slow
@pytest.mark.trl
def test_logps_match_trl_dpo_trainer_for_ipo(tiny_model_dir, tmp_path):
    """TRL's DPOTrainer logs the summed log-prob for ipo, though ipo compares per-token averages."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=4, max_steps=1, logging_steps=1,
                     report_to=[], loss_type=["ipo"], use_cpu=True, save_strategy="no", learning_rate=0.0, bf16=False)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                         ref_model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args,
                         train_dataset=Dataset.from_list(TRL_PAIRS),
                         processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    trainer.train()
    log = trainer.state.log_history[0]
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(TRL_PAIRS))])
    lp, lengths = _masked_logps(trainer.model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    b = len(TRL_PAIRS)
    m = _ours("ipo", lp[:b], lengths[:b], lp[b:], lengths[b:])
    assert m["logps/chosen"] == pytest.approx(log["logps/chosen"], rel=1e-5)
    assert m["logps/rejected"] == pytest.approx(log["logps/rejected"], rel=1e-5)
    assert m["logps/chosen"] == m["logps_sum/chosen"]


def test_plot_run_compares_probe_curves_only_when_every_run_has_them(tmp_path):
    from alphapo.cli import main

    train_rec = {"step": 1, "epoch": 1.0, "split": "train", "loss": 0.69,
                 **{f"lnorm/{q}/{s}": -1.0 for q in ("chosen", "rejected", "margin")
                    for s in ("mean", "q1", "median", "q3", "min", "max")}}
    probe_rec = {"step": 1, "epoch": 1.0, "split": "probe", "probe/size": 2,
                 **probe_metrics(chosen_logps=torch.tensor([-2.0, -6.0]), chosen_lengths=torch.tensor([2.0, 3.0]),
                                 rejected_logps=torch.tensor([-3.0, -4.0]), rejected_lengths=torch.tensor([1.0, 4.0]))}
    runs = []
    for name, recs in (("a", [train_rec, probe_rec]), ("b", [train_rec, probe_rec]), ("c", [train_rec])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        runs.append(str(tmp_path / name))
    assert main(["plot-run", *runs[:2], "--out", str(tmp_path / "ab")]) == 0
    assert (tmp_path / "ab" / "compare_lnorm_probe.png").is_file()
    assert (tmp_path / "ab" / "a" / "lnorm_probe.png").is_file()
    assert main(["plot-run", runs[0], runs[2], "--out", str(tmp_path / "ac")]) == 0
    assert not (tmp_path / "ac" / "compare_lnorm_probe.png").exists()
    assert (tmp_path / "ac" / "compare_lnorm.png").is_file()


def test_a_resumed_run_may_add_a_probe_set_and_ends_with_the_same_weights(tiny_model_dir, tmp_path):
    """Diagnostics never change training, so resume accepts a config that adds them: 3 steps with
    checkpoints after steps 1 and 2, resumed from step 1 with a probe set, end bit-identical to the
    uninterrupted run; the resumed part probes after steps 2 and 3 (no step-0 probe on resume)."""
    import shutil

    from alphapo.training.trainer import train

    data = write_pairs(tmp_path / "pairs.jsonl", n=12)
    common = ["loss.name=simpo", "train.per_device_batch_size=2", "train.global_batch_size=4",
              "logging.save_steps=1", "logging.save_total_limit=5"]
    full = train(_config(tiny_model_dir, data, tmp_path / "full", *common))
    part = tmp_path / "part"
    train(_config(tiny_model_dir, data, part, *common))
    shutil.rmtree(part / "checkpoints" / "step-000002")  # as if killed after the step-1 save ...
    shutil.rmtree(part / "final")
    (part / "checkpoints" / "latest").write_text("step-000001")
    resumed = train(_config(tiny_model_dir, data, part, *common, "resume=true", "diagnostics.probe_size=2"))
    assert resumed.global_step == 3
    a, b = _weights(full.final_dir), _weights(resumed.final_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in _records(part) if r["split"] == "probe"] == [2, 3]
