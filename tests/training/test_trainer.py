"""End-to-end runs of the loop on a tiny Llama with hand-written fake losses (see conftest.py)."""

from __future__ import annotations

import json

import pytest
import torch

from alphapo.errors import UserError
from alphapo.training import load_config
from alphapo.training.trainer import NonFiniteLossError, train

TRL_KEYS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
            "logps/chosen", "logps/rejected", "grad_norm", "learning_rate")
LNORM_KEYS = tuple(f"lnorm/{q}/{s}" for q in ("chosen", "rejected", "margin")
                   for s in ("mean", "q1", "median", "q3", "min", "max"))


def _config(model_dir, data, out, *overrides):
    return load_config(None, [f"model.name_or_path={model_dir}", f"data.train_path={data}", f"output_dir={out}",
                              "train.learning_rate=1e-3", "train.per_device_batch_size=2",
                              "train.global_batch_size=4", "logging.progress_bar=false",
                              "logging.tensorboard=false", f"reference.cache_dir={out}/../refcache",
                              *overrides])


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_reference_free_run_logs_every_diagnostic_and_saves_hf_model(fake_losses, tiny_model_dir, pairs_path,
                                                                     tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    calls = count_reference_passes(monkeypatch)
    train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "data.eval_fraction=0.25",
                           "logging.eval_steps=1", "logging.tensorboard=true"))
    assert calls == [0]  # simpo: no reference model is loaded
    recs = _records(out)
    train_recs = [r for r in recs if r["split"] == "train"]
    eval_recs = [r for r in recs if r["split"] == "eval"]
    assert [r["step"] for r in train_recs] == [1, 2, 3]  # 12 train examples / global batch 4
    for key in TRL_KEYS + LNORM_KEYS + ("tokens_per_second",):
        assert key in train_recs[-1], key
    for key in TRL_KEYS[:7] + LNORM_KEYS:
        assert "eval/" + key in eval_recs[-1], key
    assert not any(k.startswith("kl/") for k in train_recs[-1])
    # throughput counts real (non-pad) tokens: tokens/s / steps/s = tokens of the step; summed over the
    # epoch that is every training example's prompt twice plus both completions
    from transformers import AutoTokenizer

    from alphapo.data import load_preferences, tokenize_preferences
    from alphapo.training.data import example_length, split_eval

    examples, _ = tokenize_preferences(load_preferences(str(pairs_path)),
                                       AutoTokenizer.from_pretrained(tiny_model_dir))
    train_part, _ = split_eval(examples, 0.25, 42)  # the trainer's own split (seed 42)
    counted = sum(r["tokens_per_second"] / r["steps_per_second"] for r in train_recs)
    assert counted == pytest.approx(sum(example_length(e) for e in train_part), rel=1e-9)
    assert sum(example_length(e) for e in train_part) == sum(
        2 * len(e["prompt_input_ids"]) + len(e["chosen_input_ids"]) + len(e["rejected_input_ids"]) for e in train_part)
    assert (out / "config.yaml").is_file() and any((out / "tensorboard").iterdir())
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    assert "simpo" in (out / "final" / "README.md").read_text()
    assert (out / "best" / "best.json").is_file()
    # the saved model is the trained one: its eval logps are those of the last eval record
    assert not torch.equal(model.lm_head.weight,
                           AutoModelForCausalLM.from_pretrained(tiny_model_dir).lm_head.weight)


def count_reference_passes(monkeypatch) -> list[int]:
    """Count the reference passes of train() (calls of reference.compute_reference_logps)."""
    from alphapo.training import reference

    calls = [0]
    original = reference.compute_reference_logps

    def counting(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(reference, "compute_reference_logps", counting)
    return calls


def test_reference_logps_cached_second_run_does_no_reference_forward(fake_losses, tiny_model_dir, pairs_path,
                                                                     tmp_path, monkeypatch):
    calls = count_reference_passes(monkeypatch)
    train(_config(tiny_model_dir, pairs_path, tmp_path / "a", "loss.name=dpo", "train.max_steps=1"))
    assert calls == [1]  # the train split (no eval split)
    train(_config(tiny_model_dir, pairs_path, tmp_path / "b", "loss.name=dpo", "train.max_steps=1"))
    assert calls == [1]  # read from the cache: no reference model loaded
    rec = _records(tmp_path / "a")[0]
    # step 1: policy == reference, so DPO's loss is ln 2 and the KL estimates vanish (up to padding noise)
    assert rec["loss"] == pytest.approx(0.6931472, abs=1e-5)
    assert abs(rec["kl/seq_k1"]) < 1e-4 and "kl/token_k1" in rec and "kl/seq_k3" not in rec
    assert _records(tmp_path / "b")[0]["loss"] == rec["loss"]


def test_non_finite_loss_stops_with_step_and_ids_and_keeps_checkpoint(fake_losses, tiny_model_dir, pairs_path,
                                                                      tmp_path):
    # an absurd constant learning rate, no clipping: step 1 is finite, its update blows the weights up
    out = tmp_path / "nan"
    cfg = _config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "train.learning_rate=1e30",
                  "train.lr_scheduler=constant", "train.warmup_ratio=0", "train.max_grad_norm=none",
                  "logging.save_steps=1", "train.per_device_batch_size=4")
    with pytest.raises(NonFiniteLossError, match=r"step 2 .*example id\(s\) \['\d+'") as err:
        train(cfg)
    assert "checkpoints" in str(err.value)
    latest = (out / "checkpoints" / "latest").read_text().strip()
    assert latest == "step-000001" and not (out / "final").exists()


def test_multi_response_loss_gets_k_responses_per_prompt(fake_losses, tiny_model_dir, multi_path, tmp_path):
    """k = 3 responses per prompt: one forward over B*k sequences; at step 1 policy == reference, so
    rewards are 0 and the fake rpo_multi loss is KL(softmax(R) || uniform) = sum p log p + ln 3."""
    out = tmp_path / "multi"
    train(_config(tiny_model_dir, multi_path, out, "loss.name=rpo_multi", "train.max_steps=2"))
    rec = _records(out)[0]
    scores = [json.loads(line)["scores"] for line in multi_path.read_text().splitlines()]
    expected = []
    for s in scores:
        p = torch.softmax(torch.tensor(s), dim=0)
        expected.append(float((p * p.log()).sum()) + float(torch.log(torch.tensor(3.0))))
    assert rec["rewards/chosen"] == pytest.approx(0.0, abs=1e-5)
    # the first global batch holds 4 of the 16 prompts; the loss is within the per-prompt range
    assert min(expected) - 1e-5 <= rec["loss"] <= max(expected) + 1e-5
    assert "kl/seq_k1" in rec and "lnorm/margin/mean" in rec


def test_pairwise_loss_on_multi_response_data_uses_best_and_worst(fake_losses, tiny_model_dir, multi_path,
                                                                  tmp_path):
    # the same data written as explicit best/worst pairs must train identically
    pairs = tmp_path / "explicit_pairs.jsonl"
    with pairs.open("w") as fh:
        for line in multi_path.read_text().splitlines():
            row = json.loads(line)
            best = max(range(3), key=lambda i: row["scores"][i])
            worst = min(range(3), key=lambda i: row["scores"][i])
            fh.write(json.dumps({"prompt": row["prompt"], "chosen": row["responses"][best],
                                 "rejected": row["responses"][worst]}) + "\n")
    train(_config(tiny_model_dir, multi_path, tmp_path / "a", "loss.name=simpo", "train.max_steps=2"))
    train(_config(tiny_model_dir, pairs, tmp_path / "b", "loss.name=simpo", "train.max_steps=2"))
    got, expected = _records(tmp_path / "a"), _records(tmp_path / "b")
    assert [r["loss"] for r in got] == [r["loss"] for r in expected]
    assert [r["logps/chosen"] for r in got] == [r["logps/chosen"] for r in expected]


def test_pairs_from_multi_first_best_first_worst_and_ties_dropped():
    """The selection rule of generation.pairs: first max vs first min; equal token sequences count once
    (mean score); all scores equal -> no preference, dropped and counted."""
    from alphapo.training.data import pairs_from_multi

    examples = [{"id": "a", "prompt_input_ids": [1], "responses_input_ids": [[5], [6], [7], [8]],
                 "scores": [0.5, 0.9, 0.1, 0.9]},
                {"id": "tie", "prompt_input_ids": [1], "responses_input_ids": [[5], [6]], "scores": [0.3, 0.3]},
                {"id": "dup", "prompt_input_ids": [2], "responses_input_ids": [[5], [5], [6]],
                 "scores": [1.0, 0.0, 0.25]}]
    examples.append(dict(examples[0], scores=[0.1, 0.2, 0.3, 0.4]))  # the same id again, other scores
    pairs = pairs_from_multi(examples)
    assert pairs[1] is None and [p["id"] for p in pairs if p] == ["a", "dup", "a"]
    assert (pairs[0]["chosen_input_ids"], pairs[0]["rejected_input_ids"]) == ([6], [7])
    assert (pairs[0]["chosen_score"], pairs[0]["rejected_score"]) == (0.9, 0.1)
    # [5] twice: mean score 0.5, so [5] (0.5) beats [6] (0.25); never [5] against itself
    assert (pairs[2]["chosen_input_ids"], pairs[2]["rejected_input_ids"]) == ([5], [6])
    assert (pairs[2]["chosen_score"], pairs[2]["rejected_score"]) == (0.5, 0.25)
    # a repeated id is its own example, not a copy of the first one
    assert (pairs[3]["chosen_input_ids"], pairs[3]["rejected_input_ids"]) == ([8], [5])


def test_resume_refuses_a_changed_config_and_restarts_cleanly_without_checkpoint(fake_losses, tiny_model_dir,
                                                                                  pairs_path, tmp_path):
    out = tmp_path / "r"
    train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "logging.save_steps=1", "train.max_steps=2"))
    with pytest.raises(UserError, match=r"config changed in \['loss.beta', 'train.learning_rate'\]"):
        train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "resume=true", "loss.beta=3",
                      "train.learning_rate=0.1"))
    # more steps is a legitimate change: continue from step 1 (the newest checkpoint) to step 3
    result = train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "resume=true",
                           "train.max_steps=3", "logging.save_steps=1"))
    assert result.global_step == 3 and [r["step"] for r in _records(out)] == [1, 2, 3]
    # resume=true with no checkpoint yet: a fresh run, and a stale metrics.jsonl is not appended to
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "metrics.jsonl").write_text('{"step": 7, "split": "train", "loss": 1.0}\n')
    train(_config(tiny_model_dir, pairs_path, fresh, "loss.name=simpo", "resume=true", "train.max_steps=1"))
    assert [r["step"] for r in _records(fresh)] == [1]


def test_resume_refuses_a_checkpoint_planned_by_another_length_key(fake_losses, tiny_model_dir, pairs_path,
                                                                  tmp_path):
    """The tiny llama runs the prefix-shared layout, so its checkpoints record the "shared" batch length
    key. A checkpoint without the record (written before the key followed the layout, i.e. planned by the
    plain layout's tokens) would replay a different batch plan: refused, naming both keys."""
    out = tmp_path / "k"
    train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "logging.save_steps=1", "train.max_steps=2"))
    state_path = out / "checkpoints" / "step-000001" / "state.json"  # none is written at the last step
    state = json.loads(state_path.read_text())
    assert state["trainer"]["batch_length_key"] == "shared"
    del state["trainer"]["batch_length_key"]
    state_path.write_text(json.dumps(state))
    with pytest.raises(UserError, match="planned by the 'plain' layout's token counts and this run plans them by "
                                        "the 'shared' layout's"):
        train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "resume=true", "train.max_steps=3"))


def test_missing_scores_for_a_loss_that_requires_them_is_a_clear_error(tiny_model_dir, tmp_path):
    from alphapo.losses import LOSSES

    if "rpo_bwd" not in LOSSES:
        pytest.skip("rpo_bwd not registered")
    data = tmp_path / "noscores.jsonl"
    data.write_text('{"prompt": "a?", "chosen": "yes", "rejected": "no"}\n' * 3)
    with pytest.raises(UserError, match="needs chosen_scores but 3 example"):
        train(_config(tiny_model_dir, data, tmp_path / "o", "loss.name=rpo_bwd"))


def test_metrics_jsonl_is_strict_json(tmp_path):
    from alphapo.training.outputs import MetricsLogger

    logger = MetricsLogger(tmp_path, enabled=True, tensorboard=False)
    logger.log({"step": 1, "split": "train", "loss": 0.5, "grad_norm": float("inf")})
    line = (tmp_path / "metrics.jsonl").read_text()
    assert json.loads(line) == {"step": 1, "split": "train", "loss": 0.5, "grad_norm": None}
    assert "Infinity" not in line


def test_resume_drops_later_records_and_a_record_torn_by_the_kill(tmp_path):
    """Resuming from step 2 keeps records of steps <= 2; a last line cut mid-write by SIGKILL (only a
    record written after the checkpoint can be torn) is dropped instead of crashing the resume."""
    from alphapo.training.outputs import MetricsLogger

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1}\n{"step": 2, "loss": 2}\n{"step": 3, "loss": 3}\n{"step": 4, "lo')
    MetricsLogger(tmp_path, enabled=True, tensorboard=False).truncate_after(2)
    assert path.read_text() == '{"step": 1, "loss": 1}\n{"step": 2, "loss": 2}\n'


def test_step_gradient_is_that_of_the_global_batch_mean(fake_losses, tiny_model_dir, pairs_path, tmp_path):
    """grad_norm at step 1 (per-device 2 x accumulation 2) equals the norm of the gradient of the mean
    SimPO loss over the 4 examples of that step, computed by hand in one batch-free pass."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alphapo.data import load_preferences, tokenize_preferences
    from alphapo.training.data import layout_tokens, plan_epoch

    out = tmp_path / "g"
    train(_config(tiny_model_dir, pairs_path, out, "loss.name=simpo", "train.max_steps=1"))
    rec = _records(out)[0]
    examples, _ = tokenize_preferences(load_preferences(str(pairs_path)),
                                       AutoTokenizer.from_pretrained(tiny_model_dir))
    lengths = [layout_tokens(e, "shared") for e in examples]  # the tiny llama runs the prefix-shared layout
    step1 = plan_epoch(lengths, global_batch=4, seed=42, epoch=0, group_by_length=True)[0]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)

    def logp(prompt, completion):
        ids = torch.tensor([prompt + completion])
        lp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
        return torch.stack([lp[len(prompt) - 1 + j, t] for j, t in enumerate(completion)]).sum()

    total = 0.0
    for i in step1:
        e = examples[i]
        c, r = logp(e["prompt_input_ids"], e["chosen_input_ids"]), logp(e["prompt_input_ids"], e["rejected_input_ids"])
        z = 2.0 * c / len(e["chosen_input_ids"]) - 2.0 * r / len(e["rejected_input_ids"]) - 0.5  # fake simpo
        total = total - torch.nn.functional.logsigmoid(z)
    (total / len(step1)).backward()
    norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters() if p.grad is not None))
    assert rec["loss"] == pytest.approx(total.item() / 4, rel=1e-5)
    assert rec["grad_norm"] == pytest.approx(norm.item(), rel=1e-4)


def test_model_card_names_every_hyper_parameter_the_loss_used():
    """Configured values and the signature defaults of the rest: rpo_bwd with beta=0.5 -> beta=0.5,
    gamma=0.0 (default), eta=1.0 (default)."""
    from alphapo.training.outputs import model_card

    cfg = load_config(None, ["model.name_or_path=m", "data.train_path=d.jsonl", "loss.name=rpo_bwd", "loss.beta=0.5"])
    card = model_card(cfg, step=3, train_metrics={}, eval_metrics={})
    assert "loss **rpo_bwd** (beta=0.5, gamma=0.0, eta=1.0)" in card


def test_multi_response_rows_whose_scores_all_tie_are_refused_or_skipped(fake_losses, tiny_model_dir, tmp_path,
                                                                          capsys):
    """A k-response row with all scores equal has no chosen/rejected: an error naming the row, or (with
    data.skip_invalid) dropped and counted, never a pair of a response with itself."""
    from alphapo.data.validation import DataValidationError

    data = tmp_path / "ties.jsonl"
    rows = [{"prompt": f"q{i}?", "responses": ["yes", "no", "maybe"], "scores": [1.0, 0.0, 0.5]} for i in range(7)]
    rows.append({"prompt": "tied?", "responses": ["yes", "no", "maybe"], "scores": [0.5, 0.5, 0.5]})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataValidationError, match=r"line 8, field 'scores': all responses scored equally"):
        train(_config(tiny_model_dir, data, tmp_path / "strict", "loss.name=simpo", "train.global_batch_size=2",
                      "train.epochs=1"))
    result = train(_config(tiny_model_dir, data, tmp_path / "o", "loss.name=simpo", "train.global_batch_size=2",
                           "train.epochs=1", "data.skip_invalid=true"))
    assert "1 all responses scored equally" in capsys.readouterr().err
    assert result.global_step == 4  # 7 pairs / global batch 2
