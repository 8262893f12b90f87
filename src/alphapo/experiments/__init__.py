"""Experiments: recipes of methods x hyper-parameters x seeds, run in parallel and resumably, with CIs.

- ``recipe``: the recipe YAML format and its strict validation; expansion into runs.
- ``registry``: the plain registries of jobs (``run(params, shared, out_dir) -> dict``) and shared stages.
- ``runner``: ``alphapo experiment`` -- parallel, resumable execution and the results tables.
- ``sweep``: ``alphapo sweep`` -- grid search and the coordinate-wise greedy search of the AlphaPO paper
  (appendix A.6), selecting on a validation metric and reporting a test metric.
- ``stats``: means with Student-t intervals, paired per-prompt differences.
- ``synthetic``: a fast deterministic job (tests, demos); ``toy``: the toy-world job (SFT, on-policy pairs,
  preference training, gold-judge evaluation); ``toy_ra``: reward-augmented data on an offline judge-scored
  toy dataset (it reuses ``toy``'s SFT stage and helpers). These two call the toy-world pipeline.

The user manual is ``docs/experiments.md``.
"""

from __future__ import annotations

from alphapo.experiments.recipe import Recipe, RunSpec, expand_grid, load_recipe, parse_recipe
from alphapo.experiments.registry import Param, get_job, register_job, register_stage
from alphapo.experiments.stats import mean_ci, paired_difference, t_quantile

__all__ = ["Recipe", "RunSpec", "expand_grid", "load_recipe", "parse_recipe", "Param", "get_job", "register_job",
           "register_stage", "mean_ci", "paired_difference", "t_quantile"]
