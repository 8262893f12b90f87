"""On-policy preference data: sample k responses per prompt, judge them, keep best vs worst (or all k).

The AlphaPO / SimPO recipe (and the reward-augmented paper's on-policy setting): for each prompt, sample
k = 5 responses at temperature 0.8 from the policy, score them with a judge, keep the highest-scored as
``chosen`` and the lowest-scored as ``rejected``. With ``mode="all"`` all k responses are kept with their
scores, for multi-response losses (``rpo_multi``, all-pairs, ``rloo``).

Pairing rule (``select_pairs``, a pure function):
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

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from alphapo.errors import UserError
from alphapo.generation.judges import Conversation, score_candidates
from alphapo.generation.sampling import GenerationResult, generate_responses

__all__ = ["PairingStats", "select_pairs", "generate_pairs", "PairGenerationResult", "MODES", "EMPTY_POLICIES"]

MODES = ("pairs", "all")
EMPTY_POLICIES = ("exclude", "keep")


@dataclass
class PairingStats:
    """Counts from ``select_pairs`` (and timing from ``generate_pairs``)."""

    n_prompts: int
    n_kept: int
    n_dropped_all_equal: int  # all (distinct, non-empty) responses scored the same: no preference
    n_dropped_empty: int  # too few non-empty responses (pairs), or any empty one (all mode)
    n_empty_responses: int
    n_responses: int
    mean_score: float  # over all judged responses
    mean_best_minus_worst: float  # over prompts not dropped for empty responses
    generation_seconds: float = 0.0
    judge_seconds: float = 0.0
    samples_per_second: float = float("nan")  # generation only
    truncated_fraction: float = 0.0  # responses that hit max_new_tokens before EOS

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict; a NaN (no responses, no timing) becomes ``None`` (null)."""
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def select_pairs(ids: Sequence[str], prompts: Sequence[Conversation], responses: Sequence[Sequence[str]],
                 scores: Sequence[Sequence[float]], *, mode: str = "pairs", tie_tol: float = 0.0,
                 empty_responses: str = "exclude") -> tuple[list[dict], PairingStats]:
    """Turn k judged responses per prompt into records (see module docstring); returns (records, stats).

    ``responses[n]`` and ``scores[n]`` are the k responses to ``prompts[n]`` and their scores.
    """
    if mode not in MODES:
        raise UserError(f"mode must be one of {MODES}, got {mode!r}")
    if empty_responses not in EMPTY_POLICIES:
        raise UserError(f"empty_responses must be one of {EMPTY_POLICIES}, got {empty_responses!r}")
    if not len(ids) == len(prompts) == len(responses) == len(scores):
        raise UserError(f"select_pairs: ids, prompts, responses and scores differ in length: "
                        f"{len(ids)}, {len(prompts)}, {len(responses)}, {len(scores)}")
    records, spreads, all_scores = [], [], []
    dropped_equal = dropped_empty = n_empty = 0
    for n, (rid, prompt, resp, sc) in enumerate(zip(ids, prompts, responses, scores)):
        if len(resp) != len(sc) or len(resp) < 2:
            raise UserError(f"prompt {rid!r} (row {n}): need >= 2 responses with one score each, "
                            f"got {len(resp)} responses and {len(sc)} scores")
        sc = [float(s) for s in sc]
        if not all(math.isfinite(s) for s in sc):
            # max/min over a NaN depend on its position, so the pair would be arbitrary: stop instead.
            raise UserError(f"prompt {rid!r} (row {n}): the judge returned a non-finite score {sc}")
        all_scores.extend(sc)
        keep = [i for i, r in enumerate(resp) if r or empty_responses == "keep"]
        n_empty += sum(not r for r in resp)
        if len(keep) < len(resp) and mode == "all":  # multi-response batches need the same k everywhere
            dropped_empty += 1
            continue
        # One score per distinct text: the mean over its copies. A reward model can score the same text
        # slightly differently in differently padded batches, which must not make a text beat itself.
        by_text: dict[str, list[float]] = {}
        for i in keep:
            by_text.setdefault(resp[i], []).append(sc[i])
        text_score = {t: sum(v) / len(v) for t, v in by_text.items()}
        if len(keep) < 2:
            dropped_empty += 1
            continue
        hi, lo = max(text_score.values()), min(text_score.values())
        spreads.append(hi - lo)
        if hi - lo <= tie_tol:
            dropped_equal += 1
            continue
        if mode == "pairs":
            best = next(t for t, v in text_score.items() if v == hi)  # first in sampling order
            worst = next(t for t, v in text_score.items() if v == lo)
            records.append({"id": rid, "prompt": list(prompt), "chosen": _assistant(best),
                            "rejected": _assistant(worst), "score_chosen": hi, "score_rejected": lo})
        else:
            records.append({"id": rid, "prompt": list(prompt), "responses": [_assistant(resp[i]) for i in keep],
                            "scores": [text_score[resp[i]] for i in keep]})
    stats = PairingStats(
        n_prompts=len(prompts), n_kept=len(records), n_dropped_all_equal=dropped_equal,
        n_dropped_empty=dropped_empty, n_empty_responses=n_empty, n_responses=len(all_scores),
        mean_score=sum(all_scores) / len(all_scores) if all_scores else float("nan"),
        mean_best_minus_worst=sum(spreads) / len(spreads) if spreads else float("nan"),
    )
    return records, stats


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
