"""Implicit rewards beta * (logp - logp_ref) for IRA relabeling, checked token by token on the tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from alphapo.cli import main
from alphapo.data import tokenize_preferences
from alphapo.data.implicit import completion_logps_from_ids, implicit_rewards, rewards_from_logps
from alphapo.errors import UserError

U = lambda text: {"role": "user", "content": text}  # noqa: E731
A = lambda text: {"role": "assistant", "content": text}  # noqa: E731
RECS = [{"id": "a", "prompt": [U("What is 12 plus 7?")], "chosen": [A("The answer is 19.")],
         "rejected": [A("20")], "chosen_score": None, "rejected_score": None},
        {"id": "b", "prompt": [U("Hi")], "chosen": [A("Hello world!")], "rejected": [A("Goodbye, world.")],
         "chosen_score": None, "rejected_score": None}]


@pytest.fixture(scope="module")
def models(tiny_model_dir, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alphapo.tiny_models import save_tiny_model

    other = save_tiny_model(tmp_path_factory.mktemp("tiny_seed1"), seed=1)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ref = AutoModelForCausalLM.from_pretrained(other).eval()
    return tok, policy, ref, tiny_model_dir, other


def _slow_logp(model, prompt, completion):
    """Independent oracle: one forward pass per completion token on the growing prefix, no padding."""
    total, seq = 0.0, list(prompt)
    for token in completion:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([seq])).logits[0, -1]
        total += float(torch.log_softmax(logits.double(), -1)[token])
        seq.append(token)
    return total


def test_completion_logps_match_token_by_token(models):
    tok, policy, _, _, _ = models
    examples, _ = tokenize_preferences(RECS, tok)
    prompts = [e["prompt_input_ids"] for e in examples] * 2
    comps = [e["chosen_input_ids"] for e in examples] + [e["rejected_input_ids"] for e in examples]
    fast = completion_logps_from_ids(policy, prompts, comps, pad_id=tok.pad_token_id, batch_size=3)  # mixed padding
    slow = [_slow_logp(policy, p, c) for p, c in zip(prompts, comps)]
    assert fast == pytest.approx(slow, abs=1e-4)
    assert all(v < 0 for v in fast)


def test_completion_logps_refuses_an_empty_prompt(models):
    """An empty prompt made the slice start at -1 (the sequence end): a wrong sum, not an error."""
    tok, policy, _, _, _ = models
    with pytest.raises(UserError, match="prompt 1 has no tokens"):
        completion_logps_from_ids(policy, [[5, 6], []], [[7, 2], [7, 2]], pad_id=tok.pad_token_id)


def test_implicit_rewards_are_beta_times_logratio_and_zero_for_same_model(models):
    tok, policy, ref, _, _ = models
    examples, _ = tokenize_preferences(RECS, tok)
    same = implicit_rewards(examples, policy, policy, beta=0.5, pad_id=tok.pad_token_id)
    assert same == [(0.0, 0.0), (0.0, 0.0)]  # limiting case: policy == reference
    got = implicit_rewards(examples, policy, ref, beta=0.5, pad_id=tok.pad_token_id)
    ex = examples[0]
    want_c = 0.5 * (_slow_logp(policy, ex["prompt_input_ids"], ex["chosen_input_ids"])
                    - _slow_logp(ref, ex["prompt_input_ids"], ex["chosen_input_ids"]))
    assert got[0][0] == pytest.approx(want_c, abs=1e-4)


def test_rewards_from_precomputed_logps():
    """beta 0.1: chosen 0.1 * (-10 - -12) = 0.2, rejected 0.1 * (-9 - -8) = -0.1."""
    table = {"a": {"chosen_logp": -10, "rejected_logp": -9, "ref_chosen_logp": -12, "ref_rejected_logp": -8}}
    assert rewards_from_logps(RECS[:1], table, beta=0.1) == [pytest.approx((0.2, -0.1))]
    with pytest.raises(UserError, match="no log-probabilities for record 'b'"):
        rewards_from_logps(RECS, table, beta=0.1)
    for bad in (float("nan"), float("inf"), True):  # used to pass the isinstance(int, float) check
        with pytest.raises(UserError, match="record 'a' lack finite numeric chosen_logp"):
            rewards_from_logps(RECS[:1], {"a": {**table["a"], "chosen_logp": bad}}, beta=0.1)


def test_cli_implicit_with_models_and_with_logps(models, tmp_path, capsys):
    _, _, _, policy_dir, ref_dir = models
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in RECS))
    out = tmp_path / "ira.jsonl"
    assert main(["data", "relabel", str(src), str(out), "--mode", "implicit", "--model", str(policy_dir),
                 "--ref-model", str(ref_dir), "--beta", "0.1", "--tokenizer", str(policy_dir)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and {r["relabel"]["mode"] for r in rows} == {"implicit"}
    goals = sorted(r["relabel"]["goal_scores"]["overall"] for r in rows)
    assert goals[0] == pytest.approx(1) and goals[-1] == pytest.approx(10)  # min-max by default
    logps = tmp_path / "logps.jsonl"
    logps.write_text("".join(json.dumps({"id": rid, "chosen_logp": c, "rejected_logp": -5.0,
                                         "ref_chosen_logp": -5.0, "ref_rejected_logp": -5.0}) + "\n"
                             for rid, c in (("a", -3.0), ("b", -4.0))))
    assert main(["data", "relabel", str(src), str(out), "--mode", "implicit", "--logps", str(logps),
                 "--goal-placement", "prefix"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # rewards 0.1*(2, 0) and 0.1*(1, 0) -> minmax over {0, 0.1, 0.2}: 10, 1, 5.5, 1
    assert [r["relabel"]["goal_scores"]["overall"] for r in rows] == pytest.approx([10, 1, 5.5, 1])
    assert rows[0]["prompt"][0]["content"].endswith("Overall score: 10.\n\nWhat is 12 plus 7?")
