"""Completion log-probs and the unlearning check against a direct per-example computation."""

from __future__ import annotations

import numpy as np
import pytest

from alphapo.errors import UserError
from alphapo.evaluation.logprobs import (
    completion_logps_from_text,
    rejected_from_records,
    tokenize_completions,
    unlearning_check,
)

PROMPTS = [
    [{"role": "user", "content": "Sort the words: banana apple cherry"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 12 plus 7?"}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Reverse 1 2 3"}],
]
COMPLETIONS = ["apple banana cherry", "19", "Hello world! Goodbye, world.", "3 2 1"]


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    from alphapo.generation.sampling import load_policy
    from alphapo.tiny_models import build_tiny_llama

    model, tok = load_policy(tiny_model_dir, device="cpu")
    other = build_tiny_llama(len(tok), seed=11, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                             eos_token_id=tok.eos_token_id)
    return model, other, tok


def _direct(model, tok, prompt, completion):
    """One unpadded forward: sum_t log softmax(logits[t-1])[x_t] over the completion tokens, which are the
    template's text of the whole conversation after the prompt text (the assistant turn, <|end|>\n included)."""
    import torch

    p_text = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(prompt + [{"role": "assistant", "content": completion}], tokenize=False)
    assert full.startswith(p_text)
    p_ids = tok(p_text, add_special_tokens=False)["input_ids"]
    c_ids = tok(full[len(p_text):], add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + c_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    return sum(logp[t - 1, ids[0, t]].item() for t in range(len(p_ids), ids.shape[1])), len(c_ids)


def test_completion_logps_match_direct_forward(models):
    model, _, tok = models
    got, lengths = completion_logps_from_text(model, tok, PROMPTS, COMPLETIONS, batch_size=3)
    want = [_direct(model, tok, p, c) for p, c in zip(PROMPTS, COMPLETIONS)]
    assert got == pytest.approx([w[0] for w in want], abs=1e-3)
    assert lengths.tolist() == [w[1] for w in want]
    # the completion is the assistant turn as the trainer tokenises it: end-of-turn (here the EOS) + newline
    _, c_ids = tokenize_completions(tok, PROMPTS[3:], COMPLETIONS[3:])
    assert tok.decode(c_ids[0]) == "3 2 1<|end|>\n" and c_ids[0].count(tok.eos_token_id) == 1


def test_unlearning_check_against_direct_computation(models):
    """Scores [9, 2, 7, 8], min_score 7 -> responses 0, 2, 3; means of the direct log-probs."""
    model, other, tok = models
    scores = [9.0, 2.0, 7.0, 8.0]
    res = unlearning_check(other, model, tok, PROMPTS, COMPLETIONS, scores, min_score=7.0, batch_size=2)
    keep = [0, 2, 3]
    lp_o = np.array([_direct(other, tok, PROMPTS[i], COMPLETIONS[i])[0] for i in keep])
    lp_m = np.array([_direct(model, tok, PROMPTS[i], COMPLETIONS[i])[0] for i in keep])
    lens = np.array([_direct(model, tok, PROMPTS[i], COMPLETIONS[i])[1] for i in keep])
    assert res.n == 3 and res.min_score == 7.0
    assert res.mean_logp_model == pytest.approx(lp_o.mean(), abs=1e-3)
    assert res.mean_logp_reference == pytest.approx(lp_m.mean(), abs=1e-3)
    assert res.mean_logp_delta == pytest.approx((lp_o - lp_m).mean(), abs=1e-3)
    assert res.mean_token_logp_model == pytest.approx((lp_o / lens).mean(), abs=1e-4)
    assert res.frac_decreased == pytest.approx(np.mean(lp_o < lp_m))
    # the same model on both sides: nothing was unlearned
    same = unlearning_check(model, model, tok, PROMPTS, COMPLETIONS, scores)
    assert same.mean_logp_delta == 0.0 and same.frac_decreased == 0.0
    assert same.min_score == pytest.approx(np.quantile(scores, 0.75))  # default threshold: 8.25 -> one response
    assert same.n == 1
    with pytest.raises(UserError, match="no response"):
        unlearning_check(model, model, tok, PROMPTS, COMPLETIONS, scores, min_score=10)


def test_rejected_from_records_reads_both_layouts():
    recs = [{"id": "a", "prompt": "q", "rejected": "r", "score_rejected": 3},
            {"id": "b", "prompt": [{"role": "user", "content": "q"}],
             "rejected": [{"role": "assistant", "content": "s"}], "rejected_score": 4.5}]
    prompts, texts, scores = rejected_from_records(recs)
    assert prompts == [[{"role": "user", "content": "q"}]] * 2 and texts == ["r", "s"] and scores == [3.0, 4.5]
    with pytest.raises(UserError, match="score_rejected"):
        rejected_from_records([{"id": "c", "prompt": "q", "rejected": "r"}])
