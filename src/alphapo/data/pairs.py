"""Best vs worst of k scored responses: the package's one pair-selection rule (a pure function).

Used by on-policy generation (``alphapo.generation.pairs``) and by the trainer when a pairwise loss reads
k-response data (``alphapo.training.data.pairs_from_multi``). The rule, the AlphaPO / SimPO recipe:

- chosen = first response with the maximum score, rejected = first with the minimum (lowest index wins
  ties, so the result is deterministic);
- a prompt whose k scores are all equal (max - min <= ``tie_tol``) carries no preference: it is dropped
  and counted in ``PairingStats.n_dropped_all_equal`` (in both modes);
- identical responses count once, with the mean of their scores (a reward model can score one text
  slightly differently in differently padded batches; a response must never be paired against itself);
- empty responses are excluded by default (``empty_responses="exclude"``) and counted; ``"keep"`` keeps
  them. In ``mode="all"`` a prompt with any empty response is dropped (multi-response batches need the
  same k for every prompt).

Responses may be strings or any hashable sequence (token-id tuples for the trainer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from alphapo.errors import UserError

__all__ = ["PairingStats", "select_pairs", "MODES", "EMPTY_POLICIES"]

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


def select_pairs(ids: Sequence[str], prompts: Sequence[Sequence], responses: Sequence[Sequence[str]],
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
