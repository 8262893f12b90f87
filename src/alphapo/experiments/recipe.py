"""Recipe files: what ``alphapo experiment`` and ``alphapo sweep`` run, validated strictly.

A recipe is a YAML mapping (the full format, with examples, is in ``docs/experiments.md``)::

    name: synthetic-demo            # optional, printed in the tables
    job: synthetic                  # a registered job (alphapo.experiments.registry)
    seeds: [0, 1, 2]
    threads: 1                      # CPU threads each run uses (default 1); --jobs defaults to cores // threads
    params: {n_prompts: 40}         # job parameters shared by every run
    grid: {learning_rate: [1e-3, 3e-3]}   # crossed with every method (alphapo experiment only)
    methods:                        # name -> its fixed params and its own grid
      simpo: {params: {alpha: 0.0}}
      alphapo: {params: {alpha: 0.25}, grid: {gamma: [0.1, 0.5]}}
    metrics: [test/score]           # table columns (default: every metric all runs return)
    compare:                        # paired per-prompt comparisons, A minus B
      metric: test/score
      pairs: [[alphapo, simpo]]
    sweep:                          # alphapo sweep only (see alphapo.experiments.sweep)
      select: val/score
      report: test/score
      mode: max
      budget: 8                     # optional: every method trains exactly 8 configurations
      tune_seeds: [0]               # optional: search on these seeds, report the choice on all seeds

Every key is checked: an unknown key is an error naming the nearest valid key; job parameters are
checked against the job's declared ``Param`` (type and range); the run's parameters are the job's
defaults, then ``params``, then the method's ``params``, then the grid values (a key may not be both in
the recipe's ``grid`` and a method's ``grid``). Each (method, grid point) is a **configuration**; each
configuration runs once per seed. A method's ``search``, ``space`` and ``start_from`` keys belong to
``alphapo sweep``; ``grid`` belongs to ``alphapo experiment``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alphapo.errors import UserError
from alphapo.experiments.registry import Job, get_job, nearest

__all__ = ["Recipe", "MethodSpec", "SweepSpec", "CompareSpec", "RunSpec", "load_recipe", "parse_recipe",
           "resolve_runs", "expand_grid", "SEARCH_STRATEGIES"]

TOP_KEYS = ("name", "job", "seeds", "threads", "params", "grid", "methods", "metrics", "compare", "sweep")
METHOD_KEYS = ("params", "grid", "search", "space", "start_from")
SWEEP_KEYS = ("select", "report", "mode", "budget", "tune_seeds")
COMPARE_KEYS = ("metric", "pairs")
SEARCH_STRATEGIES = ("grid", "greedy", "a6")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class MethodSpec:
    name: str
    params: dict[str, Any]
    grid: dict[str, list]
    search: str | None = None
    space: dict[str, list] = field(default_factory=dict)
    start_from: str | None = None


@dataclass(frozen=True)
class SweepSpec:
    select: str  # metric the search maximises (or minimises): a validation-split metric
    report: str  # metric reported for the chosen setting: a test-split metric
    mode: str = "max"
    budget: int | None = None  # configurations each method's search trains (None: whatever its space gives)
    tune_seeds: tuple[int, ...] | None = None  # seeds the search runs on (None: every seed)


@dataclass(frozen=True)
class CompareSpec:
    metric: str
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Recipe:
    path: str
    name: str
    job: Job
    seeds: tuple[int, ...]
    threads: int
    params: dict[str, Any]
    grid: dict[str, list]
    methods: dict[str, MethodSpec]
    metrics: tuple[str, ...] | None
    compare: CompareSpec | None
    sweep: SweepSpec | None


@dataclass(frozen=True)
class RunSpec:
    """One run: a configuration of a method at one seed. ``rel_dir`` is its folder under ``OUT/runs``."""

    method: str
    config: str  # human label: "alphapo" or "alphapo (gamma=0.5, learning_rate=0.003)"
    overrides: dict[str, Any]  # the grid / search values that define the configuration
    params: dict[str, Any]  # every job parameter (no seed)
    seed: int
    job: str
    config_hash: str

    @property
    def rel_dir(self) -> str:
        return f"{self.method}/{_slug(self.overrides)}-{self.config_hash[:10]}/seed{self.seed}"


def _fmt_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _slug(overrides: dict[str, Any]) -> str:
    if not overrides:
        return "default"
    s = ",".join(f"{k}={_fmt_value(v)}" for k, v in overrides.items())
    return re.sub(r"[^A-Za-z0-9_.=,+-]", "_", s)[:80]


def config_label(method: str, overrides: dict[str, Any]) -> str:
    if not overrides:
        return method
    return f"{method} ({', '.join(f'{k}={_fmt_value(v)}' for k, v in overrides.items())})"


def _unknown(where: str, keys, allowed) -> None:
    for key in keys:
        if key not in allowed:
            raise UserError(f"{where}: unknown key {key!r}{nearest(key, allowed)}; valid keys: {list(allowed)}")


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _check_params(job: Job, values: dict, where: str) -> dict:
    out = {}
    for key, value in _mapping(values, where).items():
        if key == "seed":
            raise UserError(f"{where}.seed: the seed is not a parameter; list seeds under the top-level 'seeds'")
        if key == "threads":
            raise UserError(f"{where}.threads: set the CPU threads per run with the top-level 'threads'")
        if key not in job.params:
            raise UserError(f"{where}: unknown parameter {key!r} of job {job.name!r}{nearest(key, job.params)}; "
                            f"its parameters: {sorted(job.params)}")
        out[key] = job.params[key].check(value, f"{where}.{key}")
    return out


def _check_grid(job: Job, values: Any, where: str) -> dict[str, list]:
    out = {}
    for key, vals in _mapping(values, where).items():
        if key not in job.params:
            raise UserError(f"{where}: unknown parameter {key!r} of job {job.name!r}{nearest(key, job.params)}; "
                            f"its parameters: {sorted(job.params)}")
        if not isinstance(vals, list) or not vals:
            raise UserError(f"{where}.{key}: expected a non-empty list of values, got {vals!r}")
        checked = [job.params[key].check(v, f"{where}.{key}[{i}]") for i, v in enumerate(vals)]
        if len(set(map(json.dumps, checked))) != len(checked):
            raise UserError(f"{where}.{key}: repeated value in {vals!r}")
        out[key] = checked
    return out


def _metric_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise UserError(f"{where}: expected a metric name (a string), got {value!r}")
    return value


def parse_recipe(data: Any, path: str = "<recipe>") -> Recipe:
    """Validate a recipe mapping (already parsed from YAML); ``path`` prefixes every error."""
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe is a YAML mapping with keys {list(TOP_KEYS)}")
    _unknown(path, data, TOP_KEYS)
    for key in ("job", "seeds", "methods"):
        if key not in data:
            raise UserError(f"{path}: missing required key {key!r}")
    if not isinstance(data["job"], str):
        raise UserError(f"{path}: job: expected a job name, got {data['job']!r}")
    try:
        job = get_job(data["job"])
    except UserError as err:
        raise UserError(f"{path}: job: {err}") from err
    name = data.get("name", Path(path).stem)
    if not isinstance(name, str):
        raise UserError(f"{path}: name: expected a string, got {name!r}")

    seeds, threads = _parse_seeds(data, path)

    params = _check_params(job, data.get("params"), f"{path}: params")
    grid = _check_grid(job, data.get("grid"), f"{path}: grid")

    methods = _parse_methods(job, data["methods"], grid, path)

    metrics = data.get("metrics")
    if metrics is not None:
        if not isinstance(metrics, list) or not metrics:
            raise UserError(f"{path}: metrics: expected a non-empty list of metric names, got {metrics!r}")
        metrics = tuple(_metric_name(m, f"{path}: metrics[{i}]") for i, m in enumerate(metrics))

    compare = _parse_compare(data["compare"], methods, path) if data.get("compare") is not None else None
    sweep = _parse_sweep(data["sweep"], path) if data.get("sweep") is not None else None
    if sweep is not None and sweep.tune_seeds is not None:
        extra = [s for s in sweep.tune_seeds if s not in seeds]
        if extra:
            raise UserError(f"{path}: sweep.tune_seeds: {extra} not in seeds {seeds}; tune on some of the seeds "
                            "the choice is reported on")

    return Recipe(path, name, job, tuple(seeds), threads, params, grid, methods, metrics, compare, sweep)


def _parse_seeds(data: dict, path: str) -> tuple[list[int], int]:
    seeds = data["seeds"]
    if not isinstance(seeds, list) or not seeds:
        raise UserError(f"{path}: seeds: expected a non-empty list of integers, got {seeds!r}")
    for i, s in enumerate(seeds):
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise UserError(f"{path}: seeds[{i}]: expected an integer >= 0, got {s!r}")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{path}: seeds: repeated seed in {seeds!r}")
    threads = data.get("threads", 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UserError(f"{path}: threads: expected an integer >= 1, got {threads!r}")
    return seeds, threads


def _parse_methods(job, raw, grid: dict, path: str) -> dict[str, MethodSpec]:
    raw_methods = _mapping(raw, f"{path}: methods")
    if not raw_methods:
        raise UserError(f"{path}: methods: at least one method is needed")
    methods: dict[str, MethodSpec] = {}
    for mname, spec in raw_methods.items():
        where = f"{path}: methods.{mname}"
        if not isinstance(mname, str) or not _NAME.match(mname):
            raise UserError(f"{where}: a method name is letters, digits, '_', '.', '-' (got {mname!r})")
        spec = _mapping(spec, where)
        _unknown(where, spec, METHOD_KEYS)
        mgrid = _check_grid(job, spec.get("grid"), f"{where}.grid")
        both = sorted(set(mgrid) & set(grid))
        if both:
            raise UserError(f"{where}.grid: {both} also in the top-level grid; list each key in one grid only")
        search = spec.get("search")
        if search is not None and search not in SEARCH_STRATEGIES:
            raise UserError(f"{where}.search: {search!r} is not one of {list(SEARCH_STRATEGIES)}"
                            f"{nearest(search, SEARCH_STRATEGIES)}")
        space = _check_grid(job, spec.get("space"), f"{where}.space")
        start_from = spec.get("start_from")
        if start_from is not None and start_from not in raw_methods:
            raise UserError(f"{where}.start_from: no method {start_from!r}{nearest(start_from, raw_methods)}")
        methods[mname] = MethodSpec(mname, _check_params(job, spec.get("params"), f"{where}.params"), mgrid,
                                    search, space, start_from)
    return methods


def _parse_compare(raw, methods: dict[str, MethodSpec], path: str) -> CompareSpec:
    raw = _mapping(raw, f"{path}: compare")
    _unknown(f"{path}: compare", raw, COMPARE_KEYS)
    if "metric" not in raw or "pairs" not in raw:
        raise UserError(f"{path}: compare: needs 'metric' and 'pairs'")
    pairs = raw["pairs"]
    if not isinstance(pairs, list) or not pairs:
        raise UserError(f"{path}: compare.pairs: expected a list of [method_a, method_b]")
    for i, pair in enumerate(pairs):
        if not isinstance(pair, list) or len(pair) != 2:
            raise UserError(f"{path}: compare.pairs[{i}]: expected [method_a, method_b], got {pair!r}")
        for m in pair:
            if m not in methods:
                raise UserError(f"{path}: compare.pairs[{i}]: no method {m!r}{nearest(m, methods)}")
        if pair[0] == pair[1]:
            raise UserError(f"{path}: compare.pairs[{i}]: a method compared with itself")
    return CompareSpec(_metric_name(raw["metric"], f"{path}: compare.metric"), tuple((a, b) for a, b in pairs))


def _parse_sweep(raw, path: str) -> SweepSpec:
    raw = _mapping(raw, f"{path}: sweep")
    _unknown(f"{path}: sweep", raw, SWEEP_KEYS)
    for key in ("select", "report"):
        if key not in raw:
            raise UserError(f"{path}: sweep: missing required key {key!r}")
    mode = raw.get("mode", "max")
    if mode not in ("max", "min"):
        raise UserError(f"{path}: sweep.mode: expected 'max' or 'min', got {mode!r}")
    select = _metric_name(raw["select"], f"{path}: sweep.select")
    report = _metric_name(raw["report"], f"{path}: sweep.report")
    if select == report:
        raise UserError(f"{path}: sweep: select and report are both {select!r}; select on a validation "
                        "metric and report a test metric")
    budget = raw.get("budget")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        raise UserError(f"{path}: sweep.budget: expected an integer >= 1 (configurations per method), got {budget!r}")
    tune = raw.get("tune_seeds")
    if tune is not None:
        tune, _ = _parse_seeds({"seeds": tune}, f"{path}: sweep.tune_seeds")
        tune = tuple(tune)
    return SweepSpec(select, report, mode, budget, tune)


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"recipe {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserError(f"{p}: not valid YAML ({err})") from err
    return parse_recipe(data, str(p))


def config_hash(job: str, params: dict[str, Any]) -> str:
    blob = json.dumps({"job": job, "params": params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def resolve_runs(recipe: Recipe, method: str, overrides: dict[str, Any], where: str = "") -> list[RunSpec]:
    """The runs (one per seed) of ``method`` with ``overrides`` on top of its params, all checked."""
    job = recipe.job
    m = recipe.methods[method]
    where = where or f"{recipe.path}: methods.{method}"
    checked = _check_params(job, overrides, where)
    params = {k: p.default for k, p in job.params.items()}
    params.update(recipe.params)
    params.update(m.params)
    params.update(checked)
    h = config_hash(job.name, params)
    label = config_label(method, checked)
    return [RunSpec(method, label, dict(checked), dict(params), seed, job.name, h) for seed in recipe.seeds]


def expand_grid(recipe: Recipe) -> list[RunSpec]:
    """Every run of ``alphapo experiment``: methods x (recipe grid x method grid) x seeds."""
    runs: list[RunSpec] = []
    for name, m in recipe.methods.items():
        for key in ("search", "space", "start_from"):
            if getattr(m, key):
                raise UserError(f"{recipe.path}: methods.{name}.{key} is a sweep key; run this recipe with "
                                "'alphapo sweep', or use 'grid' for 'alphapo experiment'")
        grid = {**recipe.grid, **m.grid}
        keys = list(grid)
        for combo in itertools.product(*(grid[k] for k in keys)):
            runs += resolve_runs(recipe, name, dict(zip(keys, combo)))
    return runs
