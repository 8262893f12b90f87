"""The plain registries of experiment jobs and shared stages.

A **job** is the unit of work of one run: a function ``run(params: dict, shared: dict, out_dir: Path) ->
dict`` registered under a name, with the hyper-parameters it accepts (``Param``: default, type, range)
and the names of the shared stages it needs. ``params`` holds every declared parameter (defaults filled
in) plus ``seed`` and ``threads`` (the recipe's CPU threads per run); ``shared`` maps each needed
stage's name to what that stage returned; ``out_dir`` is the run's own empty folder. The job returns::

    {"metrics": {"val/score": 0.61, "test/score": 0.58, ...},          # name -> float
     "per_prompt": {"test/score": [0.5, 1.0, ...], ...}}               # optional: name -> list of floats

``per_prompt`` lists are what the paired method-vs-method comparisons use: all runs of one seed must
score the same prompts in the same order.

A **shared stage** is computed once per seed (and per value of the parameters it reads, ``keys``) and
reused by every run that needs it: ``run(params, shared, out_dir) -> dict`` where ``params`` holds only
``keys``, ``seed`` and ``threads``, ``shared`` the stages listed before it, and ``out_dir`` the stage's
own folder. It returns a JSON-able dict (typically paths into ``out_dir``).

Register with the decorators::

    @register_job("mine", params={"lr": Param(1e-3, float, low=0.0)}, stages=("data",))
    def mine(params, shared, out_dir): ...

The built-in jobs (``synthetic``, ``toy``, ``toy_ra``) are registered when ``get_job`` first looks a name up.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alphapo.errors import UserError

__all__ = ["Param", "Job", "Stage", "register_job", "register_stage", "get_job", "get_stage", "job_names",
           "nearest"]

JobFn = Callable[[dict, dict, Path], dict]

def nearest(name: str, choices) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


@dataclass(frozen=True)
class Param:
    """One hyper-parameter a job accepts: default, type (float, int, str or bool) and allowed values.

    A number written as a string is read as a number (YAML reads ``1e-4``, without a dot, as a string).
    """

    default: Any
    type: type = float
    low: float | None = None  # inclusive bounds for numbers
    high: float | None = None
    choices: tuple | None = None
    help: str = ""

    def check(self, value: Any, where: str) -> Any:
        """``value`` converted to the parameter's type; a ``UserError`` naming ``where`` if it is not allowed."""
        if self.type is bool:
            if not isinstance(value, bool):
                raise UserError(f"{where}: expected true or false, got {value!r}")
            return value
        if self.type in (int, float):
            if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
                try:
                    value = float(value.strip())
                except ValueError:
                    raise UserError(f"{where}: expected a number, got {value!r}") from None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UserError(f"{where}: expected a number, got {value!r}")
            if self.type is int and value != int(value):
                raise UserError(f"{where}: expected an integer, got {value!r}")
            value = self.type(value)
            if not math.isfinite(value):
                raise UserError(f"{where}: expected a finite number, got {value!r}")
            if self.low is not None and value < self.low:
                raise UserError(f"{where}: {value!r} is below the minimum {self.low!r}")
            if self.high is not None and value > self.high:
                raise UserError(f"{where}: {value!r} is above the maximum {self.high!r}")
        elif self.type is str:
            if not isinstance(value, str):
                raise UserError(f"{where}: expected a string, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise UserError(f"{where}: {value!r} is not one of {list(self.choices)}{nearest(value, self.choices)}")
        return value


@dataclass(frozen=True)
class Job:
    name: str
    fn: JobFn
    params: dict[str, Param] = field(default_factory=dict)
    stages: tuple[str, ...] = ()
    help: str = ""


@dataclass(frozen=True)
class Stage:
    name: str
    fn: JobFn
    keys: tuple[str, ...] = ()  # the job parameters this stage reads (besides the seed)


JOBS: dict[str, Job] = {}
STAGES: dict[str, Stage] = {}


def register_job(name: str, *, params: dict[str, Param] | None = None, stages: tuple[str, ...] = (),
                 help: str = "") -> Callable[[JobFn], JobFn]:
    """Decorator: register ``fn`` as the job ``name`` (a later registration under the same name replaces it)."""
    for reserved in ("seed", "threads"):
        if reserved in (params or {}):
            raise ValueError(f"job {name!r}: {reserved!r} is reserved (the runner sets it from the recipe)")

    def deco(fn: JobFn) -> JobFn:
        JOBS[name] = Job(name, fn, dict(params or {}), tuple(stages), help)
        return fn

    return deco


def register_stage(name: str, *, keys: tuple[str, ...] = ()) -> Callable[[JobFn], JobFn]:
    """Decorator: register ``fn`` as the shared stage ``name``, computed once per seed and ``keys`` values."""

    def deco(fn: JobFn) -> JobFn:
        STAGES[name] = Stage(name, fn, tuple(keys))
        return fn

    return deco


def _load_builtins() -> None:
    """Import the shipped job modules, which register themselves (lazily: they import this module)."""
    from alphapo.experiments import synthetic, toy, toy_ra  # noqa: F401


def get_job(name: str) -> Job:
    if name not in JOBS:
        _load_builtins()
    if name not in JOBS:
        raise UserError(f"unknown job {name!r}{nearest(name, JOBS)}; registered jobs: {sorted(JOBS)}")
    job = JOBS[name]
    for stage in job.stages:
        get_stage(stage)
    return job


def get_stage(name: str) -> Stage:
    if name not in STAGES:
        _load_builtins()
    if name not in STAGES:
        raise UserError(f"unknown shared stage {name!r}{nearest(name, STAGES)}")
    return STAGES[name]


def job_names() -> list[str]:
    _load_builtins()
    return sorted(JOBS)
