"""``alphapo sweep RECIPE.yaml --out OUT``: hyper-parameter search that selects on validation, reports test.

A sweep recipe is an experiment recipe (``alphapo.experiments.recipe``) with a ``sweep`` section and, for
every method, a search strategy and a search space instead of a ``grid``::

    sweep: {select: val/score, report: test/score, mode: max}
    methods:
      simpo:
        params: {alpha: 0.0}
        search: grid
        space: {gamma: [0.1, 0.25, 0.5], learning_rate: [3e-4, 1e-3]}
      alphapo:
        start_from: simpo           # begin at simpo's chosen values (AlphaPO paper, appendix A.6)
        search: a6
        space: {alpha: [0.1, 0.25, 0.5], gamma: [0.1, 0.25, 0.5], learning_rate: [3e-4, 1e-3]}

Strategies:

- ``grid``: every combination of ``space``; the best by the mean over seeds of ``select``.
- ``greedy``: coordinate-wise greedy search. Start at the method's parameters (with ``start_from: M``:
  the values method ``M``'s search chose, for the keys ``M`` searched, on top). Then, for each key of
  ``space`` in the order written, evaluate every listed value with all other keys at the best point so
  far, and move to the best of them. The current value is always among the candidates (evaluated once,
  at the start), and a candidate replaces it only if it is strictly better, so the selection score never
  decreases; ties between candidates go to the first listed.
- ``a6``: the coordinate-wise greedy search of the AlphaPO paper (Gupta et al., 2025, appendix A.6):
  start from the best SimPO settings (give them with ``start_from``, or as the method's ``params``),
  then tune ``alpha``, then ``gamma``, then the learning rate, one at a time, each time keeping the best
  so far. It is ``greedy`` with the order fixed to ``alpha, gamma, learning_rate`` whatever order the
  space is written in; ``space`` may hold only those keys.

Equal search budgets (AlphaPO Table 1: every method "tuned with the same search budget"):

- ``sweep.budget: N``: every method's search trains exactly ``N`` configurations (distinct points; each
  on the tuning seeds). A grid trains every combination; a greedy or a6 search trains its starting point
  and then, per coordinate, every listed value other than the current one, so it trains
  ``1 + sum over keys of (values listed - 1 if the starting value is listed, else values listed)``. The
  recipe is checked before anything runs: a method whose search trains another number is an error naming
  both numbers. With ``start_from``, a key taken over from the other method must list all of that
  method's values for it (or none of them), so the count does not depend on what the other search
  chooses. The configurations a ``start_from`` method inherits are not counted against its budget (the
  paper's AlphaPO search also starts from the tuned SimPO point).
- ``sweep.tune_seeds: [S, ...]``: the search runs on these seeds only (``select`` is the mean over them);
  the chosen point of every method then runs on every seed of ``seeds``, and ``report`` (and the
  ``compare`` pairs) are over all of them. Tuning on one seed and reporting on three costs a third of
  the search.

Selection reads only the ``select`` metric: the selector is handed a list of (candidate, mean select
score) and nothing else; ``report`` is read only for the chosen point, once the search has ended (mean
and Student-t 95% interval over seeds). With ``mode: min`` smaller ``select`` is better.

Runs go to ``OUT/runs`` exactly as for ``alphapo experiment`` (same folders, same resume: a point already
evaluated, by this sweep or by an interrupted one, is read back, not re-run; each round of candidates
runs in parallel with ``--jobs``). Outputs (atomic): ``OUT/sweep.json`` (per method: the trace of every
step with each candidate's select score, the chosen point, its select score and its report mean and CI;
the paired comparisons of the chosen configurations if the recipe has ``compare``) and ``OUT/sweep.md``.

Deviations: the paper tunes on the benchmark it reports (AlpacaEval 2, Arena-Hard); we select on a
validation split and report a separate test split, so the reported number is not inflated by the search.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alphapo.errors import UserError
from alphapo.experiments.recipe import Recipe, RunSpec, config_label, load_recipe, resolve_runs
from alphapo.experiments.runner import (
    _json_safe,
    comparisons,
    comparisons_csv,
    default_jobs,
    file_lock,
    run_all,
)
from alphapo.experiments.stats import mean_ci
from alphapo.io import write_text_atomic

__all__ = ["run_sweep", "A6_ORDER", "select_best", "coordinate_order", "render_sweep_markdown", "planned_points"]

A6_ORDER = ("alpha", "gamma", "learning_rate")


def select_best(candidates: Sequence[tuple[Any, float]], mode: str = "max") -> int:
    """Index of the best candidate by its select score; ties go to the first. NaN scores never win."""
    best = None
    for i, (_, score) in enumerate(candidates):
        if math.isnan(score):
            continue
        if best is None or (score > candidates[best][1] if mode == "max" else score < candidates[best][1]):
            best = i
    if best is None:
        raise UserError("sweep: every candidate's select score is NaN; nothing to choose from")
    return best


def coordinate_order(recipe: Recipe, method: str) -> list[str]:
    m = recipe.methods[method]
    if m.search == "a6":
        extra = [k for k in m.space if k not in A6_ORDER]
        if extra:
            raise UserError(f"{recipe.path}: methods.{method}.space: the a6 search tunes only {list(A6_ORDER)} "
                            f"(AlphaPO appendix A.6), not {extra}; use search: greedy for another order")
        return [k for k in A6_ORDER if k in m.space]
    return list(m.space)


def _methods_in_order(recipe: Recipe) -> list[str]:
    """Methods so that a ``start_from`` target is searched before the method starting from it."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise UserError(f"{recipe.path}: methods.{name}.start_from: a cycle of start_from references")
        visiting.add(name)
        target = recipe.methods[name].start_from
        if target is not None:
            visit(target)
        visiting.discard(name)
        order.append(name)

    for name in recipe.methods:
        visit(name)
    return order


def planned_points(recipe: Recipe, method: str) -> int:
    """How many configurations ``method``'s search trains (see the module docstring); a ``UserError`` when
    that depends on what a ``start_from`` search chooses."""
    m = recipe.methods[method]
    coords = coordinate_order(recipe, method)
    if m.search == "grid":
        return math.prod(len(m.space[k]) for k in coords)
    base = resolve_runs(recipe, method, {})[0].params
    inherited = set(recipe.methods[m.start_from].space) if m.start_from is not None else set()
    n = 1
    for k in coords:
        values = m.space[k]
        if k in inherited:
            theirs = recipe.methods[m.start_from].space[k]
            if all(v in values for v in theirs):
                listed = True
            elif not any(v in values for v in theirs):
                listed = False
            else:
                raise UserError(f"{recipe.path}: methods.{method}.space.{k}: with sweep.budget, list all of "
                                f"{m.start_from}'s values {theirs} (or none), so that the number of "
                                f"configurations does not depend on what {m.start_from}'s search chooses")
        else:
            listed = base[k] in values
        n += len(values) - (1 if listed else 0)
    return n


def _validate(recipe: Recipe) -> None:
    if recipe.sweep is None:
        raise UserError(f"{recipe.path}: no 'sweep' section (select, report, mode); run a recipe without one "
                        "with 'alphapo experiment'")
    if recipe.grid:
        raise UserError(f"{recipe.path}: grid: a sweep recipe searches each method's 'space'; move the grid "
                        "into the methods' space")
    for name, m in recipe.methods.items():
        if m.grid:
            raise UserError(f"{recipe.path}: methods.{name}.grid: a sweep searches 'space'; rename grid to space")
        if m.search is None:
            raise UserError(f"{recipe.path}: methods.{name}: missing 'search' (grid, greedy or a6)")
        if not m.space:
            raise UserError(f"{recipe.path}: methods.{name}: missing 'space' (parameter -> list of values)")
        if m.search == "grid" and m.start_from is not None:
            raise UserError(f"{recipe.path}: methods.{name}.start_from: a grid search has no starting point; "
                            "use search: greedy or a6")
        coordinate_order(recipe, name)
    budget = recipe.sweep.budget
    if budget is not None:
        counts = {name: planned_points(recipe, name) for name in recipe.methods}
        off = {name: n for name, n in counts.items() if n != budget}
        if off:
            raise UserError(f"{recipe.path}: sweep.budget is {budget} configurations per method, but the searches "
                            f"train {off}; change their spaces (or the budget) so that every method gets the "
                            "same budget")



def run_metric(result: dict, run, metric: str, key: str) -> float:
    """``metric`` of a finished run's ``result``; a run that does not report it is an error naming the recipe
    ``key`` (``sweep.select`` or ``sweep.report``), the nearest metric it does report and all of them."""
    from alphapo.experiments.registry import nearest

    metrics = result["metrics"]
    if metric not in metrics:
        raise UserError(f"{key}: run {run.config} seed {run.seed} reports no metric {metric!r}"
                        f"{nearest(metric, metrics)}; it reports {sorted(metrics)}")
    return metrics[metric]

class _Evaluator:
    """Runs points (overrides) over seeds and returns their mean select score; keeps every result."""

    def __init__(self, recipe: Recipe, out: Path, jobs: int, progress: bool, shared_dir: Path | None = None) -> None:
        self.recipe, self.out, self.jobs, self.progress, self.shared_dir = recipe, out, jobs, progress, shared_dir
        self.results: dict[str, dict] = {}
        self.runs: dict[str, RunSpec] = {}
        self.select = recipe.sweep.select

    def all_seeds(self, method: str, point: dict) -> list[RunSpec]:
        return resolve_runs(self.recipe, method, point, where=f"{self.recipe.path}: methods.{method}")

    def runs_of(self, method: str, point: dict) -> list[RunSpec]:
        """The point's runs on the tuning seeds."""
        tune = self.recipe.sweep.tune_seeds
        return [r for r in self.all_seeds(method, point) if tune is None or r.seed in tune]

    def run(self, runs: Sequence[RunSpec], label: str) -> None:
        self.results.update(run_all(runs, self.out, jobs=self.jobs, threads=self.recipe.threads,
                                    progress=self.progress, label=label, shared_dir=self.shared_dir))
        for r in runs:
            self.runs[r.rel_dir] = r

    def select_scores(self, method: str, points: Sequence[dict]) -> list[float]:
        """Mean over seeds of the select metric at each point (runs the missing ones in parallel)."""
        per_point = [self.runs_of(method, p) for p in points]
        self.run([r for rs in per_point for r in rs], f"sweep {method}")
        scores = []
        for rs in per_point:
            vals = [run_metric(self.results[r.rel_dir], r, self.select, "sweep.select") for r in rs]
            scores.append(sum(vals) / len(vals))
        return scores


def _search(ev: _Evaluator, recipe: Recipe, method: str, start: dict,
            choose: Callable[[Sequence[tuple[Any, float]]], int]) -> tuple[dict, float, list[dict]]:
    """One method's search; returns (chosen point, its select score, trace)."""
    m = recipe.methods[method]
    coords = coordinate_order(recipe, method)
    if m.search == "grid":
        points = [dict(zip(coords, combo)) for combo in itertools.product(*(m.space[k] for k in coords))]
        scores = ev.select_scores(method, points)
        best = choose(list(zip(range(len(points)), scores)))
        trace = [{"step": "grid", "candidates": [{"point": p, "select": s} for p, s in zip(points, scores)],
                  "chosen": points[best]}]
        return points[best], scores[best], trace

    base = ev.runs_of(method, start)[0].params  # every parameter at the starting point
    extra = sorted(k for k in start if k not in coords)
    point = {**{k: base[k] for k in coords}, **{k: start[k] for k in extra}}
    unset = [k for k in coords if point[k] is None]
    if unset:
        raise UserError(f"{recipe.path}: methods.{method}: the {m.search} search starts from the method's "
                        f"parameters, and {unset} is unset there; give its starting value in params (for "
                        "AlphaPO from the SimPO point: alpha: 0.0, where AlphaPO's loss equals SimPO's)")
    (score,) = ev.select_scores(method, [point])
    trace = [{"step": "start", "point": dict(point), "select": score}]
    for k in coords:
        values = list(m.space[k])
        if point[k] not in values:
            values.insert(0, point[k])
        points = [{**point, k: v} for v in values]
        scores = ev.select_scores(method, points)
        # the current point competes; a candidate replaces it only if strictly better
        current = values.index(point[k])
        ranked = [(values[current], scores[current])] + [(v, s) for i, (v, s) in enumerate(zip(values, scores))
                                                         if i != current]
        best = choose(ranked)
        point = {**point, k: ranked[best][0]}
        score = ranked[best][1]
        trace.append({"step": k, "candidates": [{"value": v, "select": s} for v, s in zip(values, scores)],
                      "chosen": ranked[best][0], "point": dict(point), "select": score})
    return point, score, trace


def render_sweep_markdown(summary: dict) -> str:
    """``sweep.md`` from the summary (pure)."""
    sel, rep = summary["select"], summary["report"]

    def f(x):
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"

    lines = [f"# Sweep: {summary['name']}", "",
             f"Selected on `{sel}` ({summary['mode']}, mean over seeds {summary['tune_seeds']}); reported on "
             f"`{rep}` (mean over seeds {summary['seeds']} and Student-t 95% interval), read only for the chosen "
             "setting." + (f" Every method's search trained {summary['budget']} configurations."
                           if summary.get("budget") else ""), "",
             f"| method | search | chosen setting | {sel} | {rep} | 95% CI | points evaluated |",
             "|---|---|---|---|---|---|---|"]
    for name, m in summary["methods"].items():
        r = m["report"]
        lines.append(f"| {name} | {m['search']} | {m['chosen']} | {f(m['select_mean'])} | {f(r['mean'])} | "
                     f"[{f(r['ci_low'])}, {f(r['ci_high'])}] | {m['n_points']} |")
    for name, m in summary["methods"].items():
        lines += ["", f"## {name}: {m['search']} search", ""]
        for step in m["trace"]:
            if step["step"] == "start":
                lines.append(f"- start at {step['point']}: {sel} {f(step['select'])}")
            elif step["step"] == "grid":
                best = step["chosen"]
                for c in step["candidates"]:
                    mark = " **(chosen)**" if c["point"] == best else ""
                    lines.append(f"- {c['point']}: {f(c['select'])}{mark}")
            else:
                cands = ", ".join(f"{c['value']:g}: {f(c['select'])}" if isinstance(c["value"], float)
                                  else f"{c['value']}: {f(c['select'])}" for c in step["candidates"])
                lines.append(f"- tune `{step['step']}` ({cands}) -> keep {step['chosen']}")
    if summary["comparisons"]:
        lines += ["", "## Paired comparisons of the chosen settings (A - B, per-prompt differences)", "",
                  "| A | B | metric | mean difference | 95% CI over prompts | 95% CI over seeds |",
                  "|---|---|---|---|---|---|"]
        for c in summary["comparisons"]:
            lines.append(f"| {c['a']} | {c['b']} | {c['metric']} | {f(c['mean_diff'])} | "
                         f"[{f(c['ci_prompts'][0])}, {f(c['ci_prompts'][1])}] | "
                         f"[{f(c['ci_seeds'][0])}, {f(c['ci_seeds'][1])}] |")
    return "\n".join(lines) + "\n"


def run_sweep(recipe: str | Path | Recipe, out: str | Path, *, jobs: int | None = None,
              progress: bool = True, shared_dir: str | Path | None = None) -> dict:
    """Search every method of the recipe into ``out``; returns the summary (also ``OUT/sweep.json``).
    Shared stages go to ``shared_dir`` (default ``out/shared``)."""
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    _validate(recipe)
    jobs = default_jobs(recipe.threads) if jobs is None else jobs
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = recipe.sweep

    def choose(candidates):  # sees (candidate, select score) pairs only
        return select_best(candidates, spec.mode)

    with file_lock(out / ".lock", blocking=False):
        start_time = time.time()
        ev = _Evaluator(recipe, out, jobs, progress, None if shared_dir is None else Path(shared_dir))
        methods: dict[str, dict] = {}
        chosen_runs: list[RunSpec] = []
        for name in _methods_in_order(recipe):
            m = recipe.methods[name]
            start = {}
            if m.start_from is not None:
                src = methods[m.start_from]
                start = {k: v for k, v in src["chosen_overrides"].items() if k in recipe.methods[m.start_from].space}
            n_before = len({r.config_hash for r in ev.runs.values() if r.method == name})
            point, score, trace = _search(ev, recipe, name, start, choose)
            n_points = len({r.config_hash for r in ev.runs.values() if r.method == name}) - n_before
            if spec.budget is not None and n_points != spec.budget:  # planned_points said otherwise: a bug
                raise RuntimeError(f"sweep: {name} trained {n_points} configurations, budget {spec.budget}")
            runs = ev.all_seeds(name, point)
            ev.run(runs, f"sweep {name}: chosen setting on every seed")
            chosen_runs += runs
            # the search has ended: only now is the report metric read, for the chosen point only
            values = [run_metric(ev.results[r.rel_dir], r, spec.report, "sweep.report") for r in runs]
            mean, lo, hi = mean_ci(values)
            methods[name] = {
                "search": m.search, "start_from": m.start_from, "order": coordinate_order(recipe, name),
                "chosen_overrides": point, "chosen": config_label(name, point), "params": runs[0].params,
                "select_mean": score, "report": {"mean": mean, "ci_low": lo, "ci_high": hi, "per_seed": values},
                "n_points": n_points,
                "trace": trace,
            }
        comps = []
        if recipe.compare is not None:
            comps = comparisons(chosen_runs, ev.results, recipe.compare.pairs, recipe.compare.metric)
        summary = {"name": recipe.name, "job": recipe.job.name, "select": spec.select, "report": spec.report,
                   "mode": spec.mode, "seeds": list(recipe.seeds), "budget": spec.budget,
                   "tune_seeds": list(spec.tune_seeds or recipe.seeds), "methods": methods, "comparisons": comps,
                   "n_runs": len(ev.runs), "wall_time_s_this_invocation": round(time.time() - start_time, 2)}
        write_text_atomic(out / "sweep.json", json.dumps(_json_safe(summary), indent=1))
        write_text_atomic(out / "sweep.md", render_sweep_markdown(summary))
        if comps:
            write_text_atomic(out / "sweep_comparisons.csv", comparisons_csv(comps))
    return summary
