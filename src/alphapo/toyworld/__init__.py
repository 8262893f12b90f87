"""The toy world: a CPU-sized instruction-following lab with a judge whose score *is* the truth.

The papers evaluate with GPT-4 judges on 7B-9B models; the RPO paper argues for a controlled
"ground-truth judge" set-up instead, so that alignment methods can be compared cleanly. This package is
that set-up, small enough to run end to end on a laptop CPU in minutes:

- ``tasks``: synthetic instruction task types (sort, count and arithmetic in the default mix; reverse
  and filter by category on request), each with an exact reference answer, and a noisy teacher that
  writes demonstrations (with the SFT defaults: wrong 55% of the time, 80% of those mistakes the task
  type's systematic one, and verbose half the time, independently of correctness).
- ``tokenizer``: a word-level tokenizer built locally with ``tokenizers``; chat template with a system role.
- ``judge``: ``GoldJudge`` (score 1..10 with partial credit, ``1 + 8.5 * correctness + 0.5 *
  conciseness``; attributes ``correctness``, ``conciseness``, ``length``) and ``ProxyJudge`` (gold +
  length bias + deterministic noise).
- ``sft``: ``alphapo toy sft`` trains a tiny Llama policy from scratch on the teacher's demonstrations.
- ``reward_model``: ``alphapo toy reward-model`` trains a small Bradley-Terry reward model on
  gold-labelled pairs (a learned, imperfect judge, saved as an HF sequence-classification model).

Judge specs for ``alphapo generate --judge`` / ``alphapo eval --judge``: ``toy-gold`` and
``toy-proxy:noise_std=0.5,length_bias=0.2,seed=0``. The ``alphapo`` command registers them; in Python call
``register_judges()`` before ``alphapo.generation.make_judge("toy-gold")``.
"""

from __future__ import annotations

from alphapo.errors import UserError
from alphapo.toyworld.judge import ATTRIBUTES, GoldJudge, ProxyJudge, grade, parse_task
from alphapo.toyworld.tasks import TASK_TYPES, Task, make_task, make_tasks, split_tasks, teacher_response

__all__ = ["ATTRIBUTES", "GoldJudge", "ProxyJudge", "grade", "parse_task", "TASK_TYPES", "Task", "make_task",
           "make_tasks", "split_tasks", "teacher_response", "proxy_judge_from_spec", "register_judges"]


def proxy_judge_from_spec(arg: str) -> ProxyJudge:
    """``"noise_std=0.5,length_bias=0.2,seed=0"`` -> ``ProxyJudge`` (every key optional)."""
    kwargs: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in arg.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in ("noise_std", "length_bias", "seed"):
            raise UserError(f"toy-proxy judge: bad item {item!r}; use noise_std=X,length_bias=Y,seed=N")
        try:
            kwargs[key] = int(value) if key == "seed" else float(value)
        except ValueError as err:
            raise UserError(f"toy-proxy judge: {key}={value!r} is not a number") from err
    return ProxyJudge(**kwargs)


def register_judges() -> None:
    """Add the ``toy-gold`` and ``toy-proxy`` judge specs to ``alphapo.generation.make_judge``."""
    from alphapo.generation.judge_registry import register_judge

    register_judge("toy-gold", lambda arg: GoldJudge(), help="toy-gold - the toy world's gold judge (1..10)")
    register_judge("toy-proxy", proxy_judge_from_spec,
                   help="toy-proxy:noise_std=X,length_bias=Y,seed=N - gold + length bias + fixed noise")
