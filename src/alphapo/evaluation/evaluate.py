"""Head-to-head evaluation of a model against a reference model, judged by any judge.

The papers' protocol (AlpacaEval 2.0 with a GPT-4 judge, here any ``Judge``): generate one response per
held-out prompt from the model and from the reference, let the judge decide each pair, report the win
rate (ties half) with a 95% interval, the length-controlled win rate, the mean judge score and mean
length, and the two score distributions (AlphaPO paper, Figure 3 right). With a scalar judge the summary
also has ``score_gain``: the mean per-prompt score difference (model minus reference) with a paired
bootstrap 95% interval (``metrics.paired_difference``), which uses the pairing that the win rate's
interval ignores.

- ``judge_head_to_head(judge, prompts, responses, reference_responses)``: the judging and metrics only
  (texts in, ``EvalResult`` out). Pass precomputed ``reference_scores`` to judge the reference once when
  comparing several models with the same reference (the quickstart does this).
- ``evaluate_model(model, tokenizer, prompts, judge, reference_responses=...)`` or ``reference=(model,
  tokenizer)``: generates (greedy by default; ``temperature > 0`` samples, seeded), then judges.
- ``evaluate_goal_conditioned(model, tokenizer, prompts, judge, goals, condition, ...)``: for
  reward-augmented models (Zhang et al. 2024, Table 7): for each goal score g, the prompts are rewritten
  with ``condition(prompt, g)`` (the goal system prompt), the model generates, and the judge scores the
  response against the *original* prompt (the goal instruction is not part of the task). Returns one
  ``EvalResult`` per goal.

A scalar judge gives preferences 1 / 0.5 / 0 from the two scores (``tie_tol`` decides ties); a
``PairwiseJudge`` gives soft preferences, asked in both orders and averaged (position bias), and no
per-response scores.

Lengths are characters of the response text (as AlpacaEval); ``mean_tokens`` adds generated tokens when
the responses were generated here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from alphapo.errors import UserError
from alphapo.evaluation.metrics import (
    LengthControlledWinRate,
    WinRate,
    length_controlled_win_rate,
    paired_difference,
    preferences_from_scores,
    win_rate,
)
from alphapo.generation.judges import Conversation, symmetric_compare
from alphapo.generation.sampling import generate_responses

__all__ = ["EvalResult", "judge_head_to_head", "evaluate_model", "evaluate_goal_conditioned", "goal_condition"]


@dataclass
class EvalResult:
    """Everything measured in one head-to-head comparison. ``summary()`` is the JSON-ready digest."""

    win: WinRate
    lc: LengthControlledWinRate
    preferences: list[float]
    responses: list[str]
    reference_responses: list[str]
    scores: list[float] | None  # None with a pairwise judge
    reference_scores: list[float] | None
    mean_tokens: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def mean_score(self) -> float | None:
        return float(np.mean(self.scores)) if self.scores is not None else None

    @property
    def mean_reference_score(self) -> float | None:
        return float(np.mean(self.reference_scores)) if self.reference_scores is not None else None

    @property
    def mean_length(self) -> float:
        return float(np.mean([len(r) for r in self.responses]))

    @property
    def mean_reference_length(self) -> float:
        return float(np.mean([len(r) for r in self.reference_responses]))

    def summary(self) -> dict:
        """Flat JSON-ready metrics: ``win_rate``, ``win_rate_ci`` [lo, hi], ``lc_win_rate``, ``mean_score``..."""
        return {
            "n": self.win.n,
            "win_rate": self.win.win_rate,
            "win_rate_ci": [self.win.ci_low, self.win.ci_high],
            "win_rate_ci_method": self.win.method,
            "n_wins": self.win.n_wins,
            "n_ties": self.win.n_ties,
            "n_losses": self.win.n_losses,
            "lc_win_rate": self.lc.lc_win_rate,
            "lc_win_rate_ci": [self.lc.ci_low, self.lc.ci_high],
            "lc_coefficients": self.lc.coefficients,
            "mean_score": self.mean_score,
            "mean_reference_score": self.mean_reference_score,
            "mean_length": self.mean_length,
            "mean_reference_length": self.mean_reference_length,
            "mean_tokens": self.mean_tokens,
            **self.extra,
        }


def judge_head_to_head(judge, prompts: Sequence[Conversation], responses: Sequence[str],
                       reference_responses: Sequence[str], *, scores: Sequence[float] | None = None,
                       reference_scores: Sequence[float] | None = None, tie_tol: float = 0.0,
                       difficulty: Sequence[float] | None = None, ci_method: str = "wilson",
                       confidence: float = 0.95, lc_n_boot: int = 200, seed: int = 0) -> EvalResult:
    """Judge model vs reference responses (one pair per prompt) and compute all head-to-head metrics.

    ``scores`` / ``reference_scores``: already computed judge scores (skips re-judging that side).
    ``difficulty``: optional per-prompt covariate for the LC GLM. ``seed`` fixes the bootstrap.
    """
    if not len(prompts) == len(responses) == len(reference_responses):
        raise UserError(f"judge_head_to_head: {len(prompts)} prompts, {len(responses)} responses, "
                        f"{len(reference_responses)} reference responses")
    if hasattr(judge, "score"):
        if scores is None:
            scores = judge.score(prompts, responses)
        if reference_scores is None:
            reference_scores = judge.score(prompts, reference_responses)
        scores = [float(s) for s in scores]
        reference_scores = [float(s) for s in reference_scores]
        prefs = preferences_from_scores(scores, reference_scores, tie_tol=tie_tol)
    elif hasattr(judge, "compare"):
        prefs = np.asarray(symmetric_compare(judge, prompts, responses, reference_responses))
        scores = reference_scores = None
    else:
        raise UserError(f"{type(judge).__name__} is not a judge: it needs a score() or compare() method")
    wr = win_rate(prefs, confidence=confidence, method=ci_method, seed=seed)
    lc = length_controlled_win_rate(prefs, [len(r) for r in responses], [len(r) for r in reference_responses],
                                    difficulty=difficulty, n_boot=lc_n_boot, confidence=confidence, seed=seed)
    extra = {}
    if scores is not None:  # paired: the same prompts on both sides
        gain = paired_difference(scores, reference_scores, confidence=confidence, seed=seed)
        extra = {"score_gain": gain.diff, "score_gain_ci": list(gain.ci)}
    return EvalResult(wr, lc, [float(p) for p in prefs], list(responses), list(reference_responses),
                      scores, reference_scores, extra=extra)


def evaluate_model(model, tokenizer, prompts: Sequence[Conversation], judge, *,
                   reference: tuple | None = None, reference_responses: Sequence[str] | None = None,
                   reference_scores: Sequence[float] | None = None, temperature: float = 0.0,
                   top_p: float = 1.0, max_new_tokens: int = 128, batch_size: int = 8, seed: int = 0,
                   progress: bool = True, **metric_kwargs) -> EvalResult:
    """Generate one response per prompt from ``model`` (and from ``reference=(model, tokenizer)`` unless
    ``reference_responses`` are given), then ``judge_head_to_head``. Greedy by default."""
    if (reference is None) == (reference_responses is None):
        raise UserError("evaluate_model: give exactly one of reference=(model, tokenizer) or reference_responses")
    gen_kwargs = dict(k=1, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                      batch_size=batch_size, seed=seed, progress=progress)
    gen = generate_responses(model, tokenizer, prompts, desc="eval: model", **gen_kwargs)
    ref_tokens = None
    if reference is not None:
        ref_gen = generate_responses(reference[0], reference[1], prompts, desc="eval: reference", **gen_kwargs)
        reference_responses = [r[0] for r in ref_gen.responses]
        ref_tokens = float(np.mean([t[0] for t in ref_gen.num_tokens]))
    result = judge_head_to_head(judge, prompts, [r[0] for r in gen.responses], reference_responses,
                                reference_scores=reference_scores, seed=seed, **metric_kwargs)
    result.mean_tokens = float(np.mean([t[0] for t in gen.num_tokens]))
    result.extra.update({"mean_reference_tokens": ref_tokens, "truncated_fraction": gen.truncated_fraction,
                         "samples_per_second": gen.samples_per_second, "temperature": temperature})
    return result


def goal_condition(tokenizer=None, *, placement: str = "auto",
                   template: str | None = None) -> Callable[[Conversation, float], Conversation]:
    """The reward-augmented goal prompt as ``condition(prompt, goal)``: ``alphapo.data.relabel.goal_prompt``.

    Same text and placement code as the training-side relabeling (appendix A.1 prompt, as a system
    message, or prefixed to the first user turn when ``placement="auto"`` finds no system role in the
    tokenizer's chat template). Goals are on the 1..10 goal scale of the relabeled data (after any
    normalisation ``alphapo data relabel`` applied).
    """
    from alphapo.data import relabel

    kwargs = {} if template is None else {"template": template}

    def condition(prompt: Conversation, goal: float) -> Conversation:
        return relabel.goal_prompt(prompt, scores=goal, placement=placement, tokenizer=tokenizer, **kwargs)

    return condition


def evaluate_goal_conditioned(model, tokenizer, prompts: Sequence[Conversation], judge, goals: Sequence[float],
                              condition: Callable[[Conversation, float], Conversation], *,
                              reference_responses: Sequence[str], reference_scores: Sequence[float] | None = None,
                              temperature: float = 0.0, top_p: float = 1.0, max_new_tokens: int = 128,
                              batch_size: int = 8, seed: int = 0, progress: bool = True,
                              **metric_kwargs) -> dict[float, EvalResult]:
    """One ``EvalResult`` per goal score: generate on ``condition(prompt, goal)``, judge on ``prompt``.

    ``condition`` is the reward-augmented goal prompt (``alphapo.data.relabel``'s function, or any
    callable returning the conditioned message list). The reference answers the original prompts.
    """
    if not goals:
        raise UserError("evaluate_goal_conditioned: give at least one goal score")
    if hasattr(judge, "score") and reference_scores is None:
        reference_scores = judge.score(prompts, reference_responses)
    results = {}
    for goal in goals:
        conditioned = [condition(list(p), goal) for p in prompts]
        gen = generate_responses(model, tokenizer, conditioned, k=1, temperature=temperature, top_p=top_p,
                                 max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed,
                                 progress=progress, desc=f"eval: goal {goal:g}")
        res = judge_head_to_head(judge, prompts, [r[0] for r in gen.responses], reference_responses,
                                 reference_scores=reference_scores, seed=seed, **metric_kwargs)
        res.mean_tokens = float(np.mean([t[0] for t in gen.num_tokens]))
        res.extra.update({"goal": goal, "truncated_fraction": gen.truncated_fraction})
        results[goal] = res
    return results
