"""Completion log-probabilities and the "unlearning" check of the reward-augmented data paper.

Zhang et al. (2024), "Reward-Augmented Data Enhances Direct Preference Alignment of LLMs", Sec. 5 and
Figure 3: on held-out preference pairs, take the *rejected* responses whose judge score is high (they are
good responses that merely lost their pair) and compare their expected log-probability under the base
model, the DPO model and the reward-augmented DPO model. DPO pushes these good responses down
("unnecessary unlearning"); reward-augmented training pushes them down much less.

``unlearning_check(model, reference_model, tokenizer, prompts, responses, scores, min_score=)`` computes,
over the responses with ``score >= min_score``: the mean summed log-probability log pi(y|x) under the
trained model and under the reference, their mean difference, the per-token means, and the fraction of
responses whose log-probability went down.

Tokenisation is the trainer's, for conversational data (:mod:`alphapo.data.tokenize`): with a chat
template the prompt is the template with the generation prompt and the completion is what the template
renders for the assistant turn (end-of-turn marker included); without one, plain text and the response's
tokens + EOS once. log pi(y|x) sums over the completion tokens. :func:`completion_logps_from_text`
tokenises and scores; the scoring itself is :func:`alphapo.data.implicit.completion_logps_from_ids`.

Deviations: the paper does not say how it chose its score threshold; by default we take the 75th
percentile of the given scores (``min_score=None``) and report the threshold used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from alphapo.data.tokenize import encode_record, has_chat_template
from alphapo.errors import UserError
from alphapo.generation.judges import Conversation

__all__ = ["completion_logps_from_text", "tokenize_completions", "UnlearningResult", "unlearning_check",
           "rejected_from_records"]


def tokenize_completions(tokenizer, prompts: Sequence[Conversation],
                         completions: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
    """Prompt ids and completion ids per example, as the trainer tokenises a conversation (module docstring)."""
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no eos_token; completion log-probs need one")
    templated = has_chat_template(tokenizer)
    prompt_ids, completion_ids = [], []
    for prompt, completion in zip(prompts, completions):
        p_ids, (c_ids,), _ = encode_record(tokenizer, list(prompt), [[{"role": "assistant", "content": completion}]],
                                           templated=templated)
        prompt_ids.append(p_ids)
        completion_ids.append(c_ids)
    return prompt_ids, completion_ids


def completion_logps_from_text(model, tokenizer, prompts: Sequence[Conversation], completions: Sequence[str], *,
                               batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Summed log pi(completion | prompt) and completion token counts of text responses; both numpy (n,).

    Tokenises with :func:`tokenize_completions` and scores with
    :func:`alphapo.data.implicit.completion_logps_from_ids` (right-padded, length-sorted batches; logits at
    position t predict token t+1; only completion positions are summed, log-softmax in float32, sums in
    float64).
    """
    from alphapo.data.implicit import completion_logps_from_ids

    if len(prompts) != len(completions):
        raise UserError(f"{len(prompts)} prompts but {len(completions)} completions")
    prompt_ids, completion_ids = tokenize_completions(tokenizer, prompts, completions)
    for i, ids in enumerate(prompt_ids):
        if not ids:  # the first completion token needs a position to be predicted from
            raise UserError(f"prompt {i} renders to no tokens; completion log-probs need a non-empty prompt")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    logps = completion_logps_from_ids(model, prompt_ids, completion_ids, pad_id=pad, batch_size=batch_size)
    return np.asarray(logps, dtype=np.float64), np.array([len(c) for c in completion_ids], dtype=np.int64)


@dataclass(frozen=True)
class UnlearningResult:
    """Mean log-probabilities of high-scoring responses under the trained model and the reference."""

    n: int
    min_score: float
    mean_logp_model: float
    mean_logp_reference: float
    mean_logp_delta: float  # model - reference; negative = the trained model "unlearned" them
    mean_token_logp_model: float  # per-token (summed logp / tokens), averaged over responses
    mean_token_logp_reference: float
    frac_decreased: float  # share of responses whose logp went down

    def to_dict(self) -> dict:
        return asdict(self)


def rejected_from_records(records: Sequence[dict]) -> tuple[list[Conversation], list[str], list[float]]:
    """(prompts, rejected texts, rejected scores) from pair records (our JSONL schema or canonical records).

    Accepts ``prompt`` as a string or messages, ``rejected`` as a string or an assistant message list, and
    ``score_rejected`` or ``rejected_score``. Records without a rejected score raise ``UserError``.
    """
    from alphapo.generation.io import as_messages

    prompts, texts, scores = [], [], []
    for i, rec in enumerate(records):
        where = f"record {i} (id {rec.get('id', '?')!r})"
        rejected = rec.get("rejected")
        if isinstance(rejected, list):
            rejected = "".join(m["content"] for m in rejected if m.get("role") == "assistant")
        if not isinstance(rejected, str):
            raise UserError(f"{where}: needs a 'rejected' response (string or assistant messages)")
        score = rec.get("score_rejected", rec.get("rejected_score"))
        if score is None:
            raise UserError(f"{where}: needs 'score_rejected' for the unlearning check")
        prompts.append(as_messages(rec["prompt"], where=where))
        texts.append(rejected)
        scores.append(float(score))
    return prompts, texts, scores


def unlearning_check(model, reference_model, tokenizer, prompts: Sequence[Conversation],
                     responses: Sequence[str], scores: Sequence[float], *, min_score: float | None = None,
                     reference_tokenizer=None, batch_size: int = 8) -> UnlearningResult:
    """Compare log pi(y|x) of high-scoring (score >= ``min_score``) responses under ``model`` vs reference.

    ``min_score=None`` uses the 75th percentile of ``scores``. Raises ``UserError`` if nothing qualifies.
    """
    scores_arr = np.asarray(scores, dtype=np.float64)
    if not len(prompts) == len(responses) == scores_arr.size:
        raise UserError(f"unlearning_check: {len(prompts)} prompts, {len(responses)} responses, "
                        f"{scores_arr.size} scores")
    if scores_arr.size == 0:
        raise UserError("unlearning_check: no responses given")
    threshold = float(np.quantile(scores_arr, 0.75)) if min_score is None else float(min_score)
    keep = [i for i in range(scores_arr.size) if scores_arr[i] >= threshold]
    if not keep:
        raise UserError(f"unlearning_check: no response has score >= {threshold}")
    sel_p = [prompts[i] for i in keep]
    sel_r = [responses[i] for i in keep]
    lp_m, len_m = completion_logps_from_text(model, tokenizer, sel_p, sel_r, batch_size=batch_size)
    lp_r, len_r = completion_logps_from_text(reference_model, reference_tokenizer or tokenizer, sel_p, sel_r,
                                   batch_size=batch_size)
    return UnlearningResult(
        n=len(keep), min_score=threshold,
        mean_logp_model=float(lp_m.mean()), mean_logp_reference=float(lp_r.mean()),
        mean_logp_delta=float((lp_m - lp_r).mean()),
        mean_token_logp_model=float((lp_m / len_m).mean()),
        mean_token_logp_reference=float((lp_r / len_r).mean()),
        frac_decreased=float((lp_m < lp_r).mean()),
    )
