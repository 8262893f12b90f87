"""On-policy preference data: sample k responses per prompt, judge them, keep best vs worst (or all k).

The AlphaPO / SimPO recipe (and the reward-augmented paper's on-policy setting): for each prompt, sample
k = 5 responses at temperature 0.8 from the policy, score them with a judge, keep the highest-scored as
``chosen`` and the lowest-scored as ``rejected``. With ``mode="all"`` all k responses are kept with their
scores, for multi-response losses (``rpo_multi``, all-pairs, ``rloo``).

Pairing rule (``select_pairs``, a pure function in ``alphapo.data.pairs``, the package's one best/worst
selection, shared with the trainer's k-response-to-pair conversion):
- chosen = first response with the maximum score, rejected = first with the minimum (lowest index wins
  ties, so the result is deterministic);
- a prompt whose k scores are all equal (max - min <= ``tie_tol``) carries no preference: it is dropped
  and counted in ``PairingStats.n_dropped_all_equal`` (in both modes);
- identical response texts count once, with the mean of their scores (a reward model can score one text
  slightly differently in differently padded batches; a text must never be paired against itself);
- empty responses (the policy emitted EOS at once) are excluded by default (``empty_responses=
  "exclude"``) and counted, because ``alphapo.data`` rejects assistant turns with empty content. In pairs
  mode the best / worst are chosen among the non-empty ones (a prompt with fewer than two is dropped and
  counted in ``n_dropped_empty``); in all mode a prompt with any empty response is dropped and counted
  (multi-response batches need the same k for every prompt). ``empty_responses="keep"`` keeps them.

Output records (our schema, conversational, one per kept prompt)::

    pairs: {"id", "prompt": [messages], "chosen": [{"role": "assistant", "content": ...}],
            "rejected": [...], "score_chosen": float, "score_rejected": float}
           (+ "chosen_attributes" / "rejected_attributes": {name: float} when the judge has
            ``score_attributes``, e.g. the toy gold judge: multi-attribute relabeling conditions on them)
    all:   {"id", "prompt": [messages], "responses": [[{"role": "assistant", ...}], ...], "scores": [...]}

``generate_pairs`` runs sampling + judging + selection and returns records and statistics (including
samples per second); ``alphapo generate`` writes them as JSONL atomically.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from alphapo.data.pairs import EMPTY_POLICIES, MODES, PairingStats, select_pairs
from alphapo.errors import UserError
from alphapo.generation.judges import Conversation, score_candidates
from alphapo.generation.sampling import GenerationResult, generate_responses

__all__ = ["PairingStats", "select_pairs", "generate_pairs", "PairGenerationResult", "MODES", "EMPTY_POLICIES"]


@dataclass
class PairGenerationResult:
    records: list[dict]
    stats: PairingStats
    generation: GenerationResult
    scores: list[list[float]]


def generate_pairs(model, tokenizer, prompts: Sequence[Conversation], judge, *, ids: Sequence[str] | None = None,
                   k: int = 5, temperature: float = 0.8, top_p: float = 1.0, max_new_tokens: int = 128,
                   batch_size: int = 8, seed: int = 0, mode: str = "pairs", tie_tol: float = 0.0,
                   empty_responses: str = "exclude", progress: bool = True) -> PairGenerationResult:
    """Sample k responses per prompt from ``model``, score them with ``judge``, select pairs.

    ``judge`` is a ``Judge`` or a ``PairwiseJudge`` (ranked with ``pairwise_scores``). The judge sees the
    original prompt messages. See ``generate_responses`` for sampling and seeding, ``select_pairs`` for
    the pairing rule.
    """
    if k < 2:
        raise UserError(f"on-policy pairs need k >= 2 responses per prompt, got k={k}")
    if mode not in MODES:
        raise UserError(f"mode must be one of {MODES}, got {mode!r}")
    ids = list(ids) if ids is not None else [f"prompt-{i}" for i in range(len(prompts))]
    gen = generate_responses(model, tokenizer, prompts, k=k, temperature=temperature, top_p=top_p,
                             max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed,
                             progress=progress, desc="sample")
    t0 = time.perf_counter()
    scores = score_candidates(judge, prompts, gen.responses)
    records, stats = select_pairs(ids, prompts, gen.responses, scores, mode=mode, tie_tol=tie_tol,
                                  empty_responses=empty_responses)
    if mode == "pairs" and records and hasattr(judge, "score_attributes"):
        # named attributes (e.g. correctness, conciseness) for multi-attribute relabeling
        sides = judge.score_attributes([r["prompt"] for r in records for _ in (0, 1)],
                                       [r[side][0]["content"] for r in records for side in ("chosen", "rejected")])
        for n, rec in enumerate(records):
            rec["chosen_attributes"] = dict(sides[2 * n])
            rec["rejected_attributes"] = dict(sides[2 * n + 1])
    judge_seconds = time.perf_counter() - t0
    stats.generation_seconds = gen.seconds
    stats.judge_seconds = judge_seconds
    stats.samples_per_second = gen.samples_per_second
    stats.truncated_fraction = gen.truncated_fraction
    return PairGenerationResult(records, stats, gen, scores)
