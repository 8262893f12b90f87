"""The ``toy_ra`` job: reward-augmented data (Zhang et al., "Reward-Augmented Data Enhances Direct
Preference Alignment of LLMs") in the toy world, on an offline judge-scored dataset.

Stages (computed once per seed and shared by the runs of that seed):

- ``toy_sft``: the SFT policy of the ``toy`` job (same stage, same keys, so a recipe that runs both jobs
  into one ``--out`` trains it once).
- ``toy_ra_data``: an offline dataset built the UltraFeedback way. For each of the first
  ``n_pair_prompts`` training prompts, responses from several different policies: one noisy teacher per
  error rate in ``teacher_errors`` (``alphapo.toyworld.tasks.teacher_response``, verbose with probability
  ``teacher_verbose``) and ``sft_samples`` samples of the SFT policy at ``pair_temperature``. Each is
  scored by the pair judge (``gold``, or ``proxy``: the length-biased noisy ``ProxyJudge``, like the
  paper's weaker PairRM) and, always, by the gold judge. Binarized as UltraFeedback was
  (:func:`binarize`): chosen = the highest judge score (the first one on a tie), rejected = a random one
  of the responses scored strictly below it (seeded); a prompt whose responses all tie is left out and
  counted. ``pairs.jsonl`` is a normal preference file (``chosen_score`` / ``rejected_score``: the pair
  judge's scores) with each side's source policy and gold score (``sources``, ``gold_scores``). Empty
  responses (the SFT policy stopping at once) are left out of the binarization and counted.
  The **probe set** of the unlearning curve, ``probe.jsonl``: the next ``n_probe_prompts`` training
  prompts (in no training pair), built and binarized the same way, keeping the pairs whose rejected
  response has a gold score of at least ``probe_min_score`` (high-quality rejected responses, the
  paper's Figure 3). The stage also keeps the SFT policy's greedy answers on the evaluation prompts.

The job trains ``loss`` from the SFT policy on one version of the dataset, ``data``:

- ``binarized``: the pairs as they are (the paper's "DPO (UF)");
- ``ra``, ``ra-chosen``, ``half``: :func:`alphapo.data.relabel.relabel` in that mode (the paper's DPO
  (RA), RA+ of Table 8, and Half RA of Table 6), ties dropped.

The goal text. The toy tokenizer knows only the toy vocabulary (``alphapo.toyworld.tasks.VOCABULARY``),
so the paper's English goal prompt would be unknown tokens. The goal is the system-message prefix
``"helpful : N"`` (:data:`GOAL_TEMPLATE`) where ``N`` is the goal score to one decimal in vocabulary
words (:func:`score_words`: ``10 -> "10"``, ``9.875 -> "9 . 9"``, ``7.04 -> "7"``); two goals that
read the same are a tie. Gold scores are on the paper's 1..10 scale already; proxy scores are not
bounded, so with ``pair_judge: proxy`` they are min-max mapped onto 1..10 first (``normalize="minmax"``).

Evaluation (as the ``toy`` job: greedy answers on ``val`` and ``test`` against the SFT policy's greedy
answer, gold judge): ``s/win_rate``, ``s/lc_win_rate``, ``s/gold_score``, ``s/correctness``,
``s/correctness_gain``, ``s/length``, and per-prompt ``s/gold_score``, ``s/win``, ``s/correctness``. A
model trained on relabeled data answers under the goal prompt at the top score, 10 (the paper's
inference rule, appendix A.1); a model trained on ``binarized`` data gets the plain prompt.

Goal-conditioned controllability (the paper's Table 7): for each asked-for score ``g`` in
``control_goals``, greedy answers under the goal prompt ``g`` on the first ``n_control`` test prompts:
``control/g<g>/gold_score``, ``control/g<g>/correctness`` and ``control/g<g>/length`` (means, length in
words), and ``control/spread``, the gold score at the highest goal minus at the lowest. The default goals
span the toy world's kinds of answer: 10 = right and concise, 9.5 = right with filler, about 8 = off by
one, about 6 = off by two, 4 = rarer than anything in the data. Every run reports them, ``binarized``
ones too: the paper's check that the system prompt alone does not explain the gain.

Unlearning curve (the paper's Figure 3): the trainer's probe (``diagnostics.probe_path``) on
``probe.jsonl`` (the first ``probe_size`` pairs; ``None``: all), before the first step, every
``probe_steps`` optimizer steps and at the end, with the plain prompt for every run so that all runs
are measured on the same sequences. ``probe/rejected_lnorm`` is the mean length-normalised
log-likelihood of the high-scoring rejected responses; the run reports its end value and
``probe/rejected_lnorm_change`` (end minus start), and the whole curve is in
``work/train/metrics.jsonl``. Plus ``data/pairs`` (training pairs after relabeling),
``data/ties_dropped`` and ``data/not_used`` (the second half in ``half`` mode).

Deviations: the goal text is ``helpful : N`` in toy words, not the paper's appendix A.1 sentence; the
probe is on prompts held out from the preference data but seen in SFT (the toy world's held-out prompts
are the evaluation prompts); the paper's threshold on the rejected score is ``probe_min_score`` here, on
the gold scale; the paper does not say under which prompt its RA model's probe was computed, here it is
the plain prompt for every run.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path

from alphapo.errors import UserError
from alphapo.experiments.registry import Param, register_job, register_stage
from alphapo.experiments.toy import PARAMS as TOY_PARAMS
from alphapo.experiments.toy import (
    SFT_KEYS,
    _diagnostics,
    _greedy,
    _torch_threads,
    evaluate_split,
    train_config,
    write_sft_eval,
)

__all__ = ["GOAL_TEMPLATE", "DATA_VERSIONS", "DATA_KEYS", "binarize", "score_words", "parse_numbers",
           "goal_messages"]

GOAL_TEMPLATE = "helpful : {score}"
DATA_VERSIONS = ("binarized", "ra", "ra-chosen", "half")
TOP_GOAL = 10.0
DATA_KEYS = ("n_train", "n_heldout", "n_pair_prompts", "teacher_errors", "teacher_verbose", "sft_samples",
             "pair_temperature", "max_new_tokens", "pair_judge", "proxy_length_bias", "proxy_noise_std",
             "n_val", "n_test", "n_probe_prompts", "probe_min_score")

PARAMS = {
    **{k: TOY_PARAMS[k] for k in SFT_KEYS},  # the toy job's SFT stage, same defaults
    # the offline dataset
    "n_pair_prompts": Param(3000, int, low=1),
    "teacher_errors": Param("0.1,0.4,0.7", str, help="error rates of the noisy teachers, comma-separated"),
    "teacher_verbose": Param(0.5, float, low=0.0, high=1.0),
    "sft_samples": Param(1, int, low=0), "pair_temperature": Param(0.8, float, low=0.0),
    "max_new_tokens": Param(24, int, low=1), "pair_judge": Param("gold", str, choices=("gold", "proxy")),
    "proxy_length_bias": Param(0.2, float), "proxy_noise_std": Param(0.5, float, low=0.0),
    "n_probe_prompts": Param(300, int, low=1), "probe_min_score": Param(9.0, float),
    "n_val": Param(200, int, low=1), "n_test": Param(300, int, low=1),
    # preference training
    "data": Param("binarized", str, choices=DATA_VERSIONS),
    **{k: TOY_PARAMS[k] for k in ("loss", "beta", "gamma", "alpha", "eta", "learning_rate", "epochs",
                                  "batch_size", "warmup_ratio", "max_length", "reference_kl")},
    # diagnostics and controllability (never change training)
    "probe_size": Param(None, int, low=1), "probe_steps": Param(10, int, low=1),
    "control_goals": Param("4,6,8,9.5,10", str, help="asked-for scores of the controllability table"),
    "n_control": Param(100, int, low=1),
}


# -------------------------------------------------------------------------------------------- pure parts
def score_words(value: float) -> str:
    """A score in toy-vocabulary words, to one decimal: ``10 -> "10"``, ``9.875 -> "9 . 9"``, ``7.04 -> "7"``.

    Halves round up. The toy vocabulary spells the numbers 0..30, so a value outside [0, 30] is an error.
    """
    tenths = math.floor(float(value) * 10 + 0.5)
    whole, tenth = divmod(tenths, 10)
    if not 0 <= whole <= 30:
        raise UserError(f"toy_ra: score {value!r} cannot be written in toy-world words (0..30)")
    return str(whole) if tenth == 0 else f"{whole} . {tenth}"


def goal_messages(messages: Sequence[dict], goal: float) -> list[dict]:
    """``messages`` under the goal prompt for score ``goal`` (the text and placement relabeling uses)."""
    from alphapo.data.relabel import goal_prompt

    return goal_prompt(messages, scores=goal, placement="system", template=GOAL_TEMPLATE,
                       number_format=score_words)


def parse_numbers(text: str, key: str, low: float, high: float) -> list[float]:
    """``"0.1,0.4"`` -> ``[0.1, 0.4]``; a ``UserError`` naming ``key`` if empty, not numbers, or out of range."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"toy_ra: {key} must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise UserError(f"toy_ra: {key} is empty; give comma-separated numbers")
    bad = [v for v in values if not low <= v <= high]
    if bad:
        raise UserError(f"toy_ra: {key}: {bad[0]!r} is outside [{low:g}, {high:g}]")
    return values


def binarize(scores: Sequence[float], rng: random.Random) -> tuple[int, int] | None:
    """UltraFeedback binarization of one prompt's scored responses: ``(chosen index, rejected index)``.

    Chosen: the highest score (the first on a tie). Rejected: ``rng.choice`` among the responses scored
    strictly below it (one draw per call that returns a pair). ``None`` when every score ties: such a
    prompt carries no preference. Deviation: UltraFeedback's binarization drew the rejected response
    from all the others; ties with the chosen one are left out here, as they would contradict it.
    """
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    lower = [i for i, s in enumerate(scores) if s < scores[best]]
    if not lower:
        return None
    return best, rng.choice(lower)


# --------------------------------------------------------------------------------------------- the stage
def _check_sizes(params: dict, n_train_tasks: int) -> None:
    if params["n_val"] + params["n_test"] > params["n_heldout"]:
        raise UserError(f"toy_ra job: n_val + n_test = {params['n_val'] + params['n_test']} exceeds "
                        f"n_heldout = {params['n_heldout']}")
    if params.get("n_control", 0) > params["n_test"]:
        raise UserError(f"toy_ra job: n_control = {params['n_control']} exceeds n_test = {params['n_test']} (the "
                        "controllability table uses the first n_control test prompts)")
    need = params["n_pair_prompts"] + params["n_probe_prompts"]
    if need > n_train_tasks:
        raise UserError(f"toy_ra job: n_pair_prompts + n_probe_prompts = {need} exceeds the {n_train_tasks} "
                        f"training prompts (n_train = {params['n_train']}); lower them or raise n_train")


def _scored_pairs(tasks, policy, tokenizer, params: dict, judge, *, id_prefix: str, rng_name: str):
    """Responses from every source policy for ``tasks``, scored and binarized: (records, counts, source
    names, gold scores prompt-major). Empty responses (the policy emitted EOS at once) are left out of
    the binarization and counted (``empty``); a prompt left without a preference is counted (``dropped``)."""
    from alphapo.generation.sampling import generate_responses
    from alphapo.toyworld import GoldJudge
    from alphapo.toyworld.tasks import teacher_response

    errors = parse_numbers(params["teacher_errors"], "teacher_errors", 0.0, 1.0)
    if len(errors) + params["sft_samples"] < 2:
        raise UserError("toy_ra job: a prompt needs at least 2 responses: give more teacher_errors or sft_samples")
    seed = params["seed"]
    sources = [f"teacher_p{e:g}" for e in errors] + ["sft"] * params["sft_samples"]
    responses = [[] for _ in tasks]
    for j, p_error in enumerate(errors):
        rng = random.Random(f"toy-ra-teacher-{seed}-{rng_name}-{j}")
        for i, task in enumerate(tasks):
            responses[i].append(teacher_response(task, rng, p_error=p_error, p_verbose=params["teacher_verbose"]))
    prompts = [t.messages() for t in tasks]
    if params["sft_samples"]:
        gen = generate_responses(policy, tokenizer, prompts, k=params["sft_samples"],
                                 temperature=params["pair_temperature"], max_new_tokens=params["max_new_tokens"],
                                 batch_size=64, seed=seed, progress=False)
        for i, samples in enumerate(gen.responses):
            responses[i].extend(samples)
    flat_prompts = [p for p, rs in zip(prompts, responses) for _ in rs]
    flat = [r for rs in responses for r in rs]
    gold_flat = GoldJudge().score(flat_prompts, flat)
    judge_flat = gold_flat if params["pair_judge"] == "gold" else judge.score(flat_prompts, flat)
    n = len(sources)
    rng = random.Random(f"toy-ra-binarize-{seed}-{rng_name}")
    records, dropped, empty = [], 0, 0
    for i, (prompt, rs) in enumerate(zip(prompts, responses)):
        scores, gold = judge_flat[i * n:(i + 1) * n], gold_flat[i * n:(i + 1) * n]
        kept = [j for j, r in enumerate(rs) if r.strip()]  # an empty answer cannot be a preference record
        empty += n - len(kept)
        picked = binarize([scores[j] for j in kept], rng)
        if picked is None:
            dropped += 1
            continue
        c, r = kept[picked[0]], kept[picked[1]]
        records.append({"id": f"{id_prefix}-{i}", "prompt": prompt,
                        "chosen": [{"role": "assistant", "content": rs[c]}],
                        "rejected": [{"role": "assistant", "content": rs[r]}],
                        "chosen_score": float(scores[c]), "rejected_score": float(scores[r]),
                        "sources": [sources[c], sources[r]], "gold_scores": [float(gold[c]), float(gold[r])]})
    return records, {"dropped": dropped, "empty": empty}, sources, gold_flat


@register_stage("toy_ra_data", keys=DATA_KEYS)
def data_stage(params: dict, shared: dict, out_dir: Path) -> dict:
    from alphapo.generation.sampling import load_policy
    from alphapo.io import write_jsonl_atomic
    from alphapo.toyworld import GoldJudge, ProxyJudge
    from alphapo.toyworld.tasks import split_tasks

    _torch_threads(params)
    out = Path(out_dir)
    train_tasks, heldout = split_tasks(params["seed"], params["n_train"], params["n_heldout"])
    _check_sizes(params, len(train_tasks))
    n_pairs, n_probe = params["n_pair_prompts"], params["n_probe_prompts"]
    judge = GoldJudge() if params["pair_judge"] == "gold" else ProxyJudge(
        noise_std=params["proxy_noise_std"], length_bias=params["proxy_length_bias"], seed=params["seed"])
    policy, tokenizer = load_policy(shared["toy_sft"]["model"], device="cpu")
    records, counts, sources, gold = _scored_pairs(train_tasks[:n_pairs], policy, tokenizer, params, judge,
                                                 id_prefix="toy-ra", rng_name="train")
    if not records:
        raise UserError(f"toy_ra job: no pairs from {n_pairs} prompts (every prompt's responses tied or were "
                        "empty); give more teacher_errors or sft_samples")
    probe_all, _, _, _ = _scored_pairs(train_tasks[n_pairs:n_pairs + n_probe], policy, tokenizer, params, judge,
                                       id_prefix="toy-ra-probe", rng_name="probe")
    probe = [r for r in probe_all if r["gold_scores"][1] >= params["probe_min_score"]]
    if not probe:
        raise UserError(f"toy_ra job: none of the {len(probe_all)} probe pairs has a rejected gold score >= "
                        f"probe_min_score = {params['probe_min_score']}; lower probe_min_score or raise "
                        "n_probe_prompts")
    write_jsonl_atomic(out / "pairs.jsonl", records)
    write_jsonl_atomic(out / "probe.jsonl", probe)
    n, per_source = len(sources), {}
    for name in dict.fromkeys(sources):  # mean gold score of each source policy's responses
        values = [g for j, s in enumerate(sources) if s == name for g in gold[j::n]]
        per_source[f"gold/{name}"] = sum(values) / len(values)
    evals = {"val": heldout[:params["n_val"]], "test": heldout[params["n_val"]:params["n_val"] + params["n_test"]]}
    write_sft_eval(policy, tokenizer, evals, params, out / "sft_eval.json")
    stats = {"prompts": n_pairs, "pairs": len(records), **counts, "sources": sources,
             "probe_pairs": len(probe), "probe_candidates": len(probe_all),
             "gold/chosen": sum(r["gold_scores"][0] for r in records) / len(records),
             "gold/rejected": sum(r["gold_scores"][1] for r in records) / len(records), **per_source}
    return {"pairs": str(out / "pairs.jsonl"), "probe": str(out / "probe.jsonl"),
            "sft_eval": str(out / "sft_eval.json"), "stats": stats}


# ----------------------------------------------------------------------------------------------- the job
def training_data(params: dict, pairs_path: str, work: Path) -> tuple[str, dict[str, float]]:
    """The training file for ``params["data"]`` and its counts (``data/pairs``, ``data/ties_dropped``,
    ``data/not_used``): the pairs as they are, or relabeled into ``work/train_pairs.jsonl``."""
    from alphapo.data import load_preferences
    from alphapo.data.relabel import relabel
    from alphapo.io import write_jsonl_atomic

    records = list(load_preferences(pairs_path))
    if params["data"] == "binarized":
        return pairs_path, {"data/pairs": float(len(records)), "data/ties_dropped": 0.0, "data/not_used": 0.0}
    normalize = "none" if params["pair_judge"] == "gold" else "minmax"
    out, report = relabel(records, mode=params["data"], placement="system", template=GOAL_TEMPLATE,
                          normalize=normalize, ties="drop", number_format=score_words)
    if not out:
        raise UserError(f"toy_ra job: relabeling ({params['data']}) left no pairs: {report}")
    path = work / "train_pairs.jsonl"
    write_jsonl_atomic(path, out)
    return str(path), {"data/pairs": float(len(out)), "data/ties_dropped": float(report.ties_dropped),
                       "data/not_used": float(report.not_used)}


def _train_config(params: dict, shared: dict, train_path: str, work: Path):
    return train_config(params, shared["toy_sft"]["model"], train_path, work / "reference_cache", work / "train",
                        probe_path=shared["toy_ra_data"]["probe"])


@register_job("toy_ra", params=PARAMS, stages=("toy_sft", "toy_ra_data"),
              help="toy world, reward-augmented data: offline UltraFeedback-style pairs, DPO on them or on "
                   "their RA / RA-chosen / half-RA relabelings, gold-judge metrics, controllability, unlearning")
def toy_ra_job(params: dict, shared: dict, out_dir: Path) -> dict:
    from alphapo.generation.sampling import load_policy
    from alphapo.toyworld.tasks import split_tasks
    from alphapo.training import train

    _torch_threads(params)
    goals = parse_numbers(params["control_goals"], "control_goals", 1.0, 10.0)
    train_tasks, heldout = split_tasks(params["seed"], params["n_train"], params["n_heldout"])
    _check_sizes(params, len(train_tasks))
    work = Path(out_dir)
    data = shared["toy_ra_data"]
    train_path, counts = training_data(params, data["pairs"], work)
    result = train(_train_config(params, shared, train_path, work))

    n_val, n_test = params["n_val"], params["n_test"]
    evals = {"val": heldout[:n_val], "test": heldout[n_val:n_val + n_test]}
    model, tokenizer = load_policy(result.final_dir, device="cpu")
    sft_eval = json.loads(Path(data["sft_eval"]).read_text(encoding="utf-8"))
    relabeled = params["data"] != "binarized"
    metrics: dict[str, float] = {"train/steps": float(result.global_step), **counts, **_diagnostics(result)}
    per_prompt: dict[str, list[float]] = {}
    saved: dict[str, list[str]] = {}
    for split, tasks in evals.items():
        prompts = [t.messages() for t in tasks]  # what the judge grades
        asked = [goal_messages(p, TOP_GOAL) for p in prompts] if relabeled else prompts  # what the model sees
        saved[split] = evaluate_split(split, model, tokenizer, prompts, asked, sft_eval[split], params, metrics,
                                      per_prompt)
    control = controllability(model, tokenizer, evals["test"][:params["n_control"]], goals, params)
    metrics.update(control["metrics"])
    saved.update(control["responses"])
    (work / "responses.json").write_text(json.dumps(saved), encoding="utf-8")
    return {"metrics": metrics, "per_prompt": per_prompt}


def control_key(goal: float) -> str:
    """``control/g<goal>``: ``8 -> "control/g8"``, ``7.5 -> "control/g7.5"``."""
    from alphapo.data.relabel import format_score

    return f"control/g{format_score(goal)}"


def controllability(model, tokenizer, tasks, goals: Sequence[float], params: dict) -> dict:
    """Greedy answers under the goal prompt for each asked-for score: ``{"metrics", "responses"}`` with
    ``control/g<g>/gold_score``, ``/correctness`` and ``/length`` (means over ``tasks``) and ``control/spread``."""
    from alphapo.toyworld import GoldJudge

    judge = GoldJudge()
    prompts = [t.messages() for t in tasks]
    metrics: dict[str, float] = {}
    responses: dict[str, list[str]] = {}
    for goal in goals:
        answers = _greedy(model, tokenizer, [goal_messages(p, goal) for p in prompts], params)
        attrs = judge.score_attributes(prompts, answers)
        scores = judge.score(prompts, answers)
        key = control_key(goal)
        metrics[f"{key}/gold_score"] = sum(scores) / len(scores)
        metrics[f"{key}/correctness"] = sum(a["correctness"] for a in attrs) / len(attrs)
        metrics[f"{key}/length"] = sum(len(a.split()) for a in answers) / len(answers)
        responses[key] = answers
    metrics["control/spread"] = (metrics[f"{control_key(max(goals))}/gold_score"]
                                 - metrics[f"{control_key(min(goals))}/gold_score"])
    return {"metrics": metrics, "responses": responses}
