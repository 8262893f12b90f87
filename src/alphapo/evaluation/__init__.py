"""Evaluation: a model against a reference, judged by any judge; plus the "unlearning" check.

Public API (stable; the quickstart builds on it):

Metrics (``alphapo.evaluation.metrics``, pure numpy)
    ``preferences_from_scores(model_scores, reference_scores, tie_tol=0)`` -> 1 / 0.5 / 0 per prompt;
    ``win_rate(preferences, method="wilson"|"normal"|"bootstrap") -> WinRate`` (ties count half,
    ``.win_rate``, ``.ci``, counts); ``length_controlled_win_rate(preferences, model_lengths,
    reference_lengths, difficulty=None, n_boot=200) -> LengthControlledWinRate`` (AlpacaEval 2.0's GLM
    with the ``tanh(normalised length difference)`` term set to zero; differences documented there).
Head-to-head (``alphapo.evaluation.evaluate``)
    ``judge_head_to_head(judge, prompts, responses, reference_responses, reference_scores=None) ->
    EvalResult``; ``evaluate_model(model, tokenizer, prompts, judge, reference=(model, tok) |
    reference_responses=[...], temperature=0.0) -> EvalResult``; ``evaluate_goal_conditioned(model,
    tokenizer, prompts, judge, goals, condition, reference_responses=...) -> {goal: EvalResult}``.
    ``EvalResult.summary()`` has ``win_rate``, ``win_rate_ci``, ``lc_win_rate``, ``lc_win_rate_ci``,
    ``mean_score``, ``mean_reference_score``, ``mean_length``, ``mean_reference_length``, counts.
Log-probabilities (``alphapo.evaluation.logprobs``)
    ``completion_logps_from_text(model, tokenizer, prompts, completions) -> (logps, lengths)``;
    ``unlearning_check(model, reference_model, tokenizer, prompts, responses, scores, min_score=None)
    -> UnlearningResult`` (reward-augmented paper, Figure 3); ``rejected_from_records(records)``.
Figures (``alphapo.evaluation.plots``)
    ``plot_reward_histogram({"SFT": scores, "AlphaPO": scores}, path)`` (AlphaPO paper, Figure 3 right);
    ``plot_unlearning({"DPO": UnlearningResult, ...}, path)`` (reward-augmented paper, Figure 3).

Command line: ``alphapo eval --model DIR --reference DIR --prompts FILE --judge SPEC --out DIR``.
"""

from alphapo.evaluation.evaluate import (
    EvalResult,
    evaluate_goal_conditioned,
    evaluate_model,
    judge_head_to_head,
)
from alphapo.evaluation.logprobs import (
    UnlearningResult,
    completion_logps_from_text,
    rejected_from_records,
    unlearning_check,
)
from alphapo.evaluation.metrics import (
    LengthControlledWinRate,
    WinRate,
    length_controlled_win_rate,
    preferences_from_scores,
    win_rate,
)
from alphapo.evaluation.plots import plot_reward_histogram, plot_unlearning

__all__ = [
    "EvalResult", "evaluate_goal_conditioned", "evaluate_model", "judge_head_to_head", "UnlearningResult",
    "completion_logps_from_text", "rejected_from_records", "unlearning_check", "LengthControlledWinRate", "WinRate",
    "length_controlled_win_rate", "preferences_from_scores", "win_rate", "plot_reward_histogram", "plot_unlearning",
]
