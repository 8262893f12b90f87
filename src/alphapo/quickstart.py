"""``alphapo quickstart``: the whole preference-alignment pipeline on the toy world, on a CPU, in minutes.

    alphapo quickstart --out runs/quickstart [--seed 0]        (``make quickstart`` runs this)

What it does, top to bottom (each stage is a call into the package's public API):

1. **SFT** (``alphapo.toyworld.sft.train_sft``): a tiny Llama trained from scratch on a noisy teacher's
   demonstrations. The teacher is wrong 55% of the time, and 80% of its mistakes are the task type's
   systematic one (count one too many, ...; ``alphapo.toyworld.tasks``), so the policy's most likely
   answer is often that mistake.
2. **On-policy pairs** (``alphapo.generation.pairs.generate_pairs``): k = 5 samples per training prompt at
   temperature 0.8 from the SFT policy, scored by the toy gold judge; best = chosen, worst = rejected
   (the AlphaPO / SimPO recipe). Prompts whose 5 scores tie are dropped and counted; empty responses are
   excluded from the choice and counted (the data loader rejects empty turns).
3. **Preference training** (``alphapo.training.train``) from the SFT policy with DPO, SimPO and AlphaPO,
   hyper-parameters in ``METHODS`` (chosen on a validation split, see there).
4. **Evaluation** on 2,000 held-out prompts (never seen in SFT or in the pairs): one greedy response per
   prompt from each trained model and from the SFT policy (the Arena-Hard protocol), judged by the gold
   judge. Per method: the **paired correctness gain** against SFT (mean over prompts of the method's
   correctness minus SFT's on the same prompt, with a seeded paired-bootstrap 95% CI,
   ``alphapo.evaluation.metrics.paired_difference``), greedy correctness per task type, the win rate
   vs SFT (ties half) with a Wilson 95% interval, the length-controlled win rate, mean gold score and
   length; and for every pair of methods the paired correctness difference with its CI. The same
   comparison with responses sampled at temperature 0.8 (AlpacaEval-style, same seed on both sides) is
   reported under ``"sampled"``. The SFT targets of the toy world (5 samples at T = 0.8 per held-out
   prompt: mean gold score, share of prompts with best-minus-worst >= 2) are measured on the same prompts.
5. **Report**: ``OUT/report.md`` (tables, one sentence per method saying whether its correctness CI
   excludes 0, figures, wall times), ``OUT/summary.json``, ``OUT/displacement.png`` (log-probability of
   chosen and rejected responses during training: the likelihood displacement the AlphaPO paper
   discusses), ``OUT/reward_histogram.png`` (gold-score distributions, AlphaPO Figure 3 right). All
   written atomically.

``--precision bf16-autocast`` runs SFT and preference training under CPU bfloat16 autocast with float32
master weights (``ToySFTConfig.precision``, the trainer's ``train.mixed_precision=bf16``); sampling and
evaluation stay float32. The default is float32 (docs/performance.md has both).

``--seed N`` seeds everything: the task sample and split, the teacher, SFT initialisation and batch order,
the pair sampling, the preference training and the evaluation sampling and bootstrap.

``summary.json`` layout: ``{"methods": {"dpo": {...}, "simpo": {...}, "alphapo": {...}}, "sft": {...},
"pairs": {...}, "method_differences": {"dpo-simpo": {"diff", "ci"}, ...}, "wall_time_s": ...,
"stage_seconds": {...}, "stage_cpu_seconds": {...}, "config": {...}}``; each method object has ``correctness_gain``,
``correctness_gain_ci`` ([low, high]), ``mean_correctness``, ``per_task`` (greedy correctness per task
type), ``win_rate``, ``win_rate_ci``, ``lc_win_rate``, ``mean_gold_score``, ``mean_length`` (words = toy
tokens), ``mean_length_chars``, ``n_wins/n_ties/n_losses``, ``train_seconds`` and the final training
metrics; ``sft`` has ``mean_correctness`` and ``per_task`` too. ``"A-B"`` differences are A minus B.

Runtime: see the README's quickstart section for measured wall times. Two torch threads were about 2x
*slower* for these tiny models on a loaded machine, hence ``--threads 1`` by default.
``QuickstartConfig`` shrinks everything for tests; ``QuickstartConfig(eval_split="validation")``
evaluates on prompts disjoint from both the training and the test prompts, which is how ``METHODS`` was
chosen. The run is deterministic: the same seed gives the same numbers on the same machine.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Hyper-parameters per method, chosen on the validation split (``eval_split="validation"``: 1,000 prompts
# disjoint from the SFT, pair and test prompts), seed 0, one SFT policy and one pair set, greedy paired
# correctness gain vs SFT (95% CI half-width about 0.013), 2 epochs unless noted. SimPO and AlphaPO keep the
# AlphaPO paper's Table 3 beta 2.5 and gamma/beta 0.1 (Mistral-Instruct row). The main sweep ran on a
# four-task mix that still had filter:
#   DPO   beta 0.1: lr 2e-4 -0.073. beta 0.3: lr 1e-4 -0.012, 2e-4 -0.023, 5e-4 -0.035, 1e-3 -0.065.
#         beta 1: lr 2e-4 +0.046, 5e-4 +0.036. beta 3: lr 3e-4 +0.046, 5e-4 +0.052, 1e-3 +0.016. beta 10: 5e-4 +0.049.
#   SimPO lr 1e-4 +0.055, 2e-4 +0.057, 3e-4 +0.054, 5e-4 +0.037 (1 epoch +0.033, 3 epochs +0.030), 1e-3 -0.010.
#   AlphaPO lr 5e-4: alpha 0.25 / 0.5 / 1 -> +0.040 / +0.046 / +0.048 (alpha 1, 3 epochs +0.049);
#         lr 3e-4: +0.055 / +0.056 / +0.053; alpha 0.5: lr 1e-4 +0.055, 2e-4 +0.060.
# Re-checked on the final three-task mix (sort, count, arithmetic): DPO beta 3 lr 5e-4 +0.088, SimPO lr 2e-4
# +0.075, AlphaPO lr 2e-4 alpha 0.25 / 0.5 / 1 -> +0.078 / +0.083 / +0.090, hence alpha 1.
# A small DPO beta lets the policy move far from the reference on these tiny models and loses correctness
# (arithmetic falls most); larger learning rates push the chosen log-probability down (displacement) and lose.
METHODS: dict[str, dict] = {
    "dpo": {"loss": "dpo", "params": {"beta": 3.0}, "learning_rate": 5e-4},
    "simpo": {"loss": "simpo", "params": {"beta": 2.5, "gamma": 0.25}, "learning_rate": 2e-4},
    "alphapo": {"loss": "alphapo", "params": {"beta": 2.5, "gamma": 0.25, "alpha": 1.0}, "learning_rate": 2e-4},
}


EVAL_SPLITS = ("test", "validation")
# the trainer's ``train.mixed_precision`` for each quickstart precision (bf16: CPU autocast, float32 weights)
TRAINER_PRECISION = {"float32": "no", "bf16-autocast": "bf16"}


def _default_sft():
    from alphapo.toyworld.sft import ToySFTConfig

    return ToySFTConfig()


@dataclass
class QuickstartConfig:
    """Sizes and hyper-parameters of the quickstart (defaults: the real run; tests pass tiny ones)."""

    seed: int = 0
    sft: object = field(default_factory=_default_sft)  # a ToySFTConfig (seed is overwritten by ``seed``)
    n_pair_prompts: int = 3000  # training prompts used for on-policy pairs
    k: int = 5
    temperature: float = 0.8
    max_new_tokens: int = 24
    n_eval: int = 2000  # held-out prompts (<= sft.n_heldout)
    eval_split: str = "test"  # "test": the held-out prompts; "validation": disjoint ones for tuning
    eval_temperature: float = 0.0  # headline evaluation: greedy (Arena-Hard protocol)
    sampled_eval_temperature: float | None = 0.8  # a second, sampled evaluation (AlpacaEval-style); None: skip
    epochs: int = 2
    batch_size: int = 32
    methods: dict = field(default_factory=lambda: json.loads(json.dumps(METHODS)))
    threads: int = 1  # torch threads; tiny models run faster on one (thread sync costs more than it saves)
    precision: str = "float32"  # SFT and preference training: float32, or bf16-autocast (sft.precision is overwritten)
    progress: bool = True


def _log(msg: str) -> None:
    print(f"[quickstart {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _words(text: str) -> int:
    return len(text.split())


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def _responses(model, tokenizer, prompts, temperature: float, config: QuickstartConfig) -> list[str]:
    """One response per prompt (greedy at temperature 0), seeded by the run's seed."""
    from alphapo.generation.sampling import generate_responses

    gen = generate_responses(model, tokenizer, prompts, k=1, temperature=temperature,
                             max_new_tokens=config.max_new_tokens, batch_size=100, seed=config.seed + 1,
                             progress=False)
    return [r[0] for r in gen.responses]


def _per_task(kinds: list[str], values: list[float]) -> dict[str, float]:
    """Mean of ``values`` per task type (keys in sorted order)."""
    by: dict[str, list[float]] = {}
    for kind, v in zip(kinds, values):
        by.setdefault(kind, []).append(v)
    return {k: _mean(v) for k, v in sorted(by.items())}


def _head_to_head(judge, prompts, responses, ref_responses, ref_scores, ref_correctness, kinds, seed: int) -> dict:
    """Gold-judge head-to-head vs the SFT responses: the metrics that go into summary.json.

    Also returns the per-prompt ``scores`` and ``correctness`` lists (the caller pops them).
    """
    from alphapo.evaluation.evaluate import judge_head_to_head
    from alphapo.evaluation.metrics import paired_difference

    ev = judge_head_to_head(judge, prompts, responses, ref_responses, reference_scores=ref_scores, seed=seed)
    s = ev.summary()
    correctness = [a["correctness"] for a in judge.score_attributes(prompts, responses)]
    gain = paired_difference(correctness, ref_correctness, seed=seed)
    return {
        "win_rate": s["win_rate"], "win_rate_ci": s["win_rate_ci"], "lc_win_rate": s["lc_win_rate"],
        "lc_win_rate_ci": s["lc_win_rate_ci"], "n_wins": s["n_wins"], "n_ties": s["n_ties"],
        "n_losses": s["n_losses"], "mean_gold_score": s["mean_score"],
        "mean_length": _mean([_words(r) for r in responses]), "mean_length_chars": s["mean_length"],
        "mean_correctness": _mean(correctness),
        "correctness_gain": gain.diff, "correctness_gain_ci": list(gain.ci),
        "per_task": _per_task(kinds, correctness),
        "scores": ev.scores, "correctness": correctness,
    }


def method_differences(correctness: dict[str, list[float]], seed: int) -> dict[str, dict]:
    """``{"A-B": {"diff", "ci"}}``: paired correctness difference (A minus B) for every pair of methods.

    Pairs follow the order of ``correctness`` (A before B); paired bootstrap over prompts, seeded.
    """
    from alphapo.evaluation.metrics import paired_difference

    names = list(correctness)
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            d = paired_difference(correctness[a], correctness[b], seed=seed)
            out[f"{a}-{b}"] = {"diff": d.diff, "ci": list(d.ci)}
    return out


def _smooth(values: list[float], window: int = 5) -> list[float]:
    """Trailing moving average (the first points average over what exists so far)."""
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1):i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def plot_displacement(curves: dict[str, list[dict]], path: Path) -> Path:
    """Mean summed log-prob of chosen (solid) and rejected (dashed) responses vs step, one colour per method."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from alphapo.io import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, records) in enumerate(curves.items()):
        rows = [r for r in records if r.get("split", "train") == "train" and "logps_sum/chosen" in r]
        steps = [r["step"] for r in rows]
        c = colors[i % len(colors)]
        axes[0].plot(steps, _smooth([r["logps_sum/chosen"] for r in rows]), color=c, label=f"{name} chosen")
        axes[0].plot(steps, _smooth([r["logps_sum/rejected"] for r in rows]), color=c, linestyle="--",
                     label=f"{name} rejected")
        if rows and "rewards/margins" in rows[0]:
            axes[1].plot(steps, _smooth([r["rewards/margins"] for r in rows]), color=c, label=name)
    axes[0].set_title("log-probability of chosen (solid) / rejected (dashed)")
    axes[0].set_xlabel("optimizer step")
    axes[0].set_ylabel("mean summed log-prob")
    axes[1].set_title("implicit reward margin")
    axes[1].set_xlabel("optimizer step")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _fmt(x, digits=3):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _decoding(temperature: float) -> str:
    return "greedy decoding" if temperature == 0 else f"sampled at temperature {temperature:g}"


def _table(summary: dict, key: str) -> list[str]:
    """The per-method markdown table; ``key`` "" is the headline evaluation, "sampled" the second one."""
    sft = summary["sft"] if not key else summary["sft"][key]
    rows = [
        "| method | mean correctness | correctness gain vs SFT [95% CI] | win rate vs SFT | 95% CI | LC win rate | "
        "W / T / L | mean gold score | mean length | train time |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| SFT (reference) | {_fmt(sft['mean_correctness'])} | - | - | - | - | - | {_fmt(sft['mean_gold_score'], 2)} | "
        f"{_fmt(sft['mean_length'], 1)} | {summary['sft']['train_seconds']:.0f} s |",
    ]
    for name, method in summary["methods"].items():
        m = method if not key else method[key]
        lo, hi = m["win_rate_ci"]
        rows.append(
            f"| {name} | {_fmt(m['mean_correctness'])} | {_signed_ci(m['correctness_gain'], m['correctness_gain_ci'])} | "
            f"{_fmt(m['win_rate'])} | [{_fmt(lo)}, {_fmt(hi)}] | {_fmt(m['lc_win_rate'])} | "
            f"{m['n_wins']} / {m['n_ties']} / {m['n_losses']} | {_fmt(m['mean_gold_score'], 2)} | "
            f"{_fmt(m['mean_length'], 1)} | {method['train_seconds']:.0f} s |")
    return rows


def _signed_ci(diff: float, ci) -> str:
    return f"{diff:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"


def _verdict(name: str, m: dict, sft_correctness: float) -> str:
    """One sentence: what moved for ``name`` and whether the paired CI of the correctness gain excludes 0."""
    lo, hi = m["correctness_gain_ci"]
    if lo > 0:
        ci_words = "the 95% CI excludes 0: a real improvement in correctness"
    elif hi < 0:
        ci_words = "the 95% CI excludes 0: a real loss of correctness"
    else:
        ci_words = "the 95% CI includes 0: no measurable change in correctness"
    return (f"- **{name}**: greedy correctness {m['mean_correctness']:.3f} vs SFT {sft_correctness:.3f}, "
            f"a paired gain of {_signed_ci(m['correctness_gain'], m['correctness_gain_ci'])}; {ci_words} "
            f"(gold win rate {m['win_rate']:.3f}, LC win rate {m['lc_win_rate']:.3f}, "
            f"{m['mean_length']:.1f} words per response).")


def _per_task_table(summary: dict) -> list[str]:
    sft = summary["sft"]["per_task"]
    names = list(summary["methods"])
    rows = ["| task | SFT | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
    for kind in sft:
        rows.append(f"| {kind} | {sft[kind]:.3f} | "
                    + " | ".join(f"{summary['methods'][n]['per_task'][kind]:.3f}" for n in names) + " |")
    return rows


def render_report(summary: dict) -> str:
    """``report.md`` from the summary dict (pure: every number in the report comes from ``summary``)."""
    cfg, sft, pairs = summary["config"], summary["sft"], summary["pairs"]
    lines = [
        "# alphapo quickstart report",
        "",
        f"Toy world, seed {cfg['seed']}. Wall time **{summary['wall_time_s']:.0f} s** "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in summary['stage_seconds'].items())})"
        + (f"; CPU time {', '.join(f'{k} {v:.0f} s' for k, v in summary['stage_cpu_seconds'].items())}"
           if "stage_cpu_seconds" in summary else "") + ".",
        "",
        f"Each trained policy vs the SFT policy on {summary['n_eval']} "
        f"{'held-out' if summary.get('eval_split', 'test') == 'test' else 'validation'} prompts (never seen "
        f"in SFT or in the pairs), one response each ({_decoding(cfg['eval_temperature'])}), judged by the toy gold judge "
        "(score 1..10). Win rate counts ties as half; the interval is a Wilson 95% interval. LC win rate: "
        "AlpacaEval-2.0-style length-controlled win rate (length in characters). Mean correctness: the gold "
        "judge's correctness attribute (0..1). Length in words (= toy tokens). The gold score is "
        "1 + 8.5 * correctness + 0.5 * conciseness, so a win from brevity alone is a small one; the LC win "
        "rate removes the part of the win rate that goes with length.",
        "",
    ]
    lines += _table(summary, "")
    lines += ["", "Correctness gain: the mean over prompts of (method's correctness - SFT's correctness) on the "
              "same prompt, with a paired bootstrap 95% CI (2,000 resamples of prompts, seeded).", ""]
    lines += [_verdict(name, m, sft["mean_correctness"]) for name, m in summary["methods"].items()]
    lines += ["", "Greedy correctness per task type:", ""] + _per_task_table(summary)
    if summary.get("method_differences"):
        lines += ["", "Method against method: paired correctness difference (A - B) on the same prompts, "
                  "paired bootstrap 95% CI:", "", "| A - B | difference [95% CI] |", "|---|---|"]
        lines += [f"| {k} | {_signed_ci(v['diff'], v['ci'])} |" for k, v in summary["method_differences"].items()]
    if all("sampled" in m for m in summary["methods"].values()) and "sampled" in sft:
        temp = next(iter(summary["methods"].values()))["sampled"]["eval_temperature"]
        lines += ["", f"Same comparison with sampled responses ({_decoding(temp)}, same seed for both sides):", ""]
        lines += _table(summary, "sampled")
    tg = sft["targets"]
    lines += ["", f"SFT policy on the same held-out prompts, {tg['k']} samples each at temperature "
              f"{tg['temperature']}: mean gold score {tg['mean_gold_score']:.2f}, "
              f"{tg['frac_spread_ge_2']:.0%} of prompts with best-minus-worst >= 2 (target >= 70%)."]
    lines += [
        "",
        "Hyper-parameters: " + "; ".join(
            f"{name}: {m['loss']} {json.dumps(m['params'])}, lr {m['learning_rate']:g}"
            for name, m in summary["methods"].items())
        + f"; {cfg['epochs']} epoch(s), batch {cfg['batch_size']}, cosine schedule, warmup 0.1.",
        "",
        "## Data",
        "",
        f"SFT: {sft['n_parameters']:,} parameters, {sft['steps']} steps on {sft['n_demonstrations']} "
        f"noisy-teacher demonstrations (final loss {sft['final_loss']:.3f}).",
        "",
        f"On-policy pairs: {pairs['n_prompts']} prompts x k={cfg['k']} samples at temperature "
        f"{cfg['temperature']}, gold judge, best vs worst: {pairs['n_pairs']} pairs kept, "
        f"{pairs['n_dropped_all_equal']} prompts dropped (all scores equal), {pairs['n_dropped_empty']} "
        f"dropped (fewer than two non-empty responses; {pairs['n_empty_responses']} empty responses in all). Mean gold score of the samples {_fmt(pairs['mean_score'], 2)}, mean "
        f"best-minus-worst {_fmt(pairs['mean_best_minus_worst'], 2)}; {pairs['samples_per_second']:.0f} "
        "samples/s.",
        "",
        "## Displacement curves",
        "",
        "Mean summed log-probability of the chosen and rejected responses in each training batch, and the "
        "implicit reward margin (moving average over 5 logged points; the raw values are in "
        "`<method>/metrics.jsonl`). Likelihood displacement shows as the chosen log-probability falling "
        "while the margin grows.",
        "",
        "![displacement](displacement.png)",
        "",
        "## Gold reward distributions",
        "",
        "![reward histogram](reward_histogram.png)",
        "",
        "## Example responses (first held-out prompts)",
        "",
    ]
    for ex in summary.get("examples", []):
        lines.append(f"- **{ex['user']}** (answer: `{ex['answer']}`)")
        for name, (resp, score) in ex["responses"].items():
            lines.append(f"  - {name}: `{resp}` ({score:.2f})")
    lines.append("")
    return "\n".join(lines)


def run_quickstart(out_dir: str | Path, config: QuickstartConfig | None = None) -> dict:
    """Run the pipeline into ``out_dir``; returns the summary (also ``OUT/summary.json``)."""
    import torch

    config = config or QuickstartConfig()
    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _run(Path(out_dir), config)
    finally:
        torch.set_num_threads(old_threads)


@dataclass
class _ReferenceSide:
    """The SFT policy's side of the evaluation, computed once and compared against every method."""

    tasks: list  # held-out (or validation) tasks
    prompts: list  # their chat messages
    kinds: list[str]  # task type per prompt
    temps: dict[str, float]  # "" = greedy headline evaluation, "sampled" = the sampled comparison
    responses: dict[str, list[str]]
    scores: dict[str, list[float]]
    correctness: dict[str, list[float]]
    target_scores: list[list[float]]  # k = 5 samples at T = 0.8 per prompt (the SFT targets)


def _run(out: Path, config: QuickstartConfig) -> dict:
    """The pipeline, one named step each: SFT, pairs, the SFT side of the evaluation, then train and
    evaluate each method, then the report."""
    from alphapo.errors import UserError
    from alphapo.toyworld import GoldJudge
    from alphapo.toyworld.sft import PRECISIONS
    from alphapo.training.plotting import read_metrics

    sft_cfg = config.sft
    sft_cfg.seed = config.seed
    if config.precision not in PRECISIONS:
        raise UserError(f"precision={config.precision!r}: use one of {', '.join(PRECISIONS)}")
    sft_cfg.precision = config.precision
    if config.n_eval > sft_cfg.n_heldout:
        raise UserError(f"n_eval={config.n_eval} exceeds the held-out split (sft.n_heldout={sft_cfg.n_heldout})")
    if config.eval_split not in EVAL_SPLITS:
        raise UserError(f"eval_split={config.eval_split!r}: use one of {', '.join(EVAL_SPLITS)}")
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    stage: dict[str, float] = {}
    cpu: dict[str, float] = {}  # process CPU seconds per stage: the compute, whatever else runs on the machine
    judge = GoldJudge()

    t, c = time.time(), time.process_time()
    sft_summary = _sft_stage(out, config)
    stage["sft"], cpu["sft"] = time.time() - t, time.process_time() - c
    t, c = time.time(), time.process_time()
    policy, tokenizer, pairs_info = _pairs_stage(out, config, judge)
    stage["pairs"], cpu["pairs"] = time.time() - t, time.process_time() - c
    t, c = time.time(), time.process_time()
    ref = _reference_side(policy, tokenizer, config, judge)
    stage["evaluation"], cpu["evaluation"] = time.time() - t, time.process_time() - c
    del policy

    methods: dict[str, dict] = {}
    curves: dict[str, list[dict]] = {}
    eval_scores = {"SFT": ref.scores[""]}
    eval_responses = {"SFT": ref.responses[""]}
    eval_correctness: dict[str, list[float]] = {}
    stage["training"] = cpu["training"] = 0.0
    for i, (name, m) in enumerate(config.methods.items(), 1):
        _log(f"3/4 train {name} ({i}/{len(config.methods)}): {m['loss']} {m['params']} lr {m['learning_rate']:g}")
        t, c = time.time(), time.process_time()
        result = _train_method(out, config, name, m)
        train_seconds = time.time() - t
        stage["training"] += train_seconds
        cpu["training"] += time.process_time() - c
        curves[name] = read_metrics(out / name)
        t, c = time.time(), time.process_time()
        methods[name], greedy = _evaluate_method(result, m, ref, config, judge, train_seconds)
        eval_scores[name], eval_responses[name], eval_correctness[name] = greedy
        stage["evaluation"] += time.time() - t
        cpu["evaluation"] += time.process_time() - c
        r = methods[name]
        _log(f"4/4 {name}: correctness gain vs SFT {r['correctness_gain']:+.3f} "
             f"[{r['correctness_gain_ci'][0]:+.3f}, {r['correctness_gain_ci'][1]:+.3f}], win rate "
             f"{r['win_rate']:.3f}, LC {r['lc_win_rate']:.3f}, mean gold {r['mean_gold_score']:.2f} "
             f"(SFT {_mean(ref.scores['']):.2f})")

    summary = _summary(config, ref, methods, eval_scores, eval_responses, eval_correctness, sft_summary,
                       pairs_info, stage)
    summary["stage_cpu_seconds"] = {k: round(v, 1) for k, v in cpu.items()}
    _write_outputs(out, summary, curves, eval_scores, start)
    return summary


def _sft_stage(out: Path, config: QuickstartConfig) -> dict:
    """1. The SFT policy, a tiny Llama trained from scratch on the teacher's demonstrations."""
    from alphapo.toyworld.sft import train_sft

    _log(f"1/4 SFT: tiny Llama from scratch, {config.sft.steps} steps")
    return train_sft(config.sft, out / "sft", progress=config.progress)


def _pairs_stage(out: Path, config: QuickstartConfig, judge):
    """2. On-policy pairs: k samples per prompt, gold judge, best vs worst -> OUT/pairs.jsonl.

    Returns the loaded SFT policy and tokenizer (the evaluation reuses them) and the pairing counts."""
    from alphapo.generation.pairs import generate_pairs
    from alphapo.generation.sampling import load_policy
    from alphapo.io import write_jsonl_atomic
    from alphapo.toyworld.tasks import split_tasks

    train_tasks, _ = split_tasks(config.seed, config.sft.n_train, config.sft.n_heldout)
    pair_tasks = train_tasks[:config.n_pair_prompts]
    _log(f"2/4 on-policy pairs: {len(pair_tasks)} prompts x k={config.k} at T={config.temperature}")
    policy, tokenizer = load_policy(out / "sft", device="cpu")
    gen = generate_pairs(policy, tokenizer, [x.messages() for x in pair_tasks], judge,
                         ids=[f"toy-train-{i}" for i in range(len(pair_tasks))], k=config.k,
                         temperature=config.temperature, max_new_tokens=config.max_new_tokens, batch_size=64,
                         seed=config.seed, progress=config.progress)
    # generate_pairs already excludes empty responses (alphapo.data rejects empty assistant turns) and counts them
    write_jsonl_atomic(out / "pairs.jsonl", gen.records)
    return policy, tokenizer, {**gen.stats.to_dict(), "n_pairs": len(gen.records)}


def _reference_side(policy, tokenizer, config: QuickstartConfig, judge) -> _ReferenceSide:
    """The SFT policy's responses on the held-out prompts (greedy, and sampled with the same seed as the
    trained models: common random numbers lower the variance), their scores, and the SFT targets."""
    from alphapo.generation.sampling import generate_responses
    from alphapo.toyworld.tasks import split_tasks, validation_tasks

    sft_cfg = config.sft
    _, heldout = split_tasks(config.seed, sft_cfg.n_train, sft_cfg.n_heldout)
    if config.eval_split == "validation":  # for choosing hyper-parameters without looking at the test prompts
        heldout = validation_tasks(config.seed, sft_cfg.n_train, sft_cfg.n_heldout, config.n_eval)
    tasks = heldout[:config.n_eval]
    prompts = [x.messages() for x in tasks]
    temps = {"": config.eval_temperature}
    if config.sampled_eval_temperature is not None:
        temps["sampled"] = config.sampled_eval_temperature
    responses = {key: _responses(policy, tokenizer, prompts, temp, config) for key, temp in temps.items()}
    scores = {key: judge.score(prompts, r) for key, r in responses.items()}
    correctness = {key: [a["correctness"] for a in judge.score_attributes(prompts, r)]
                   for key, r in responses.items()}
    # the toy world's SFT targets: k = 5 samples at T = 0.8 per held-out prompt
    targets = generate_responses(policy, tokenizer, prompts, k=5, temperature=0.8,
                                 max_new_tokens=config.max_new_tokens, batch_size=100, seed=config.seed + 2,
                                 progress=False).responses
    target_scores = [judge.score([p] * len(rs), rs) for p, rs in zip(prompts, targets)]
    return _ReferenceSide(tasks, prompts, [x.kind for x in tasks], temps, responses, scores, correctness,
                          target_scores)


def _train_method(out: Path, config: QuickstartConfig, name: str, m: dict):
    """3. Preference training of one method from the SFT policy on OUT/pairs.jsonl -> OUT/NAME/."""
    from alphapo.training import (
        DataConfig,
        LoggingConfig,
        LossConfig,
        ModelConfig,
        OptimConfig,
        ReferenceConfig,
        TrainConfig,
        train,
    )

    return train(TrainConfig(
        model=ModelConfig(str(out / "sft")),
        data=DataConfig(train_path=str(out / "pairs.jsonl"), max_length=128),
        loss=LossConfig(m["loss"], dict(m["params"])),
        reference=ReferenceConfig(cache_dir=str(out / ".reference_cache")),
        train=OptimConfig(epochs=config.epochs, per_device_batch_size=config.batch_size,
                          global_batch_size=config.batch_size, learning_rate=m["learning_rate"],
                          warmup_ratio=0.1, lr_scheduler="cosine", seed=config.seed,
                          mixed_precision=TRAINER_PRECISION[config.precision]),
        logging=LoggingConfig(logging_steps=2, tensorboard=False, progress_bar=config.progress),
        output_dir=str(out / name), overwrite=True))  # a re-run of the quickstart replaces its runs


def _evaluate_method(result, m: dict, ref: _ReferenceSide, config: QuickstartConfig, judge,
                     train_seconds: float) -> tuple[dict, tuple[list, list, list]]:
    """4. One trained method against the SFT policy on the same prompts: (its summary entry, its greedy
    (scores, responses, correctness))."""
    from alphapo.generation.sampling import load_policy

    model, tok = load_policy(result.final_dir, device="cpu")
    results, greedy = {}, None
    for key, temp in ref.temps.items():
        responses = _responses(model, tok, ref.prompts, temp, config)
        results[key] = _head_to_head(judge, ref.prompts, responses, ref.responses[key], ref.scores[key],
                                     ref.correctness[key], ref.kinds, config.seed)
        scores, correctness = results[key].pop("scores"), results[key].pop("correctness")
        if key == "":
            greedy = (scores, responses, correctness)
    entry = {
        "loss": m["loss"], "params": m["params"], "learning_rate": m["learning_rate"],
        **results[""], "eval_temperature": config.eval_temperature,
        "train_seconds": round(train_seconds, 2), "train_steps": result.global_step,
        "final_train_metrics": {k: v for k, v in result.train_metrics.items()
                                if k.startswith(("loss", "rewards/", "logps/", "logps_sum/"))},
    }
    if "sampled" in results:
        entry["sampled"] = {**results["sampled"], "eval_temperature": ref.temps["sampled"]}
    return entry, greedy


def _summary(config: QuickstartConfig, ref: _ReferenceSide, methods: dict, eval_scores: dict,
             eval_responses: dict, eval_correctness: dict, sft_summary: dict, pairs_info: dict,
             stage: dict) -> dict:
    """The ``summary.json`` content (layout in the module docstring), without the wall time."""
    sft_cfg = config.sft

    def side(key: str) -> dict:
        return {"mean_gold_score": _mean(ref.scores[key]),
                "mean_length": _mean([_words(r) for r in ref.responses[key]]),
                "mean_correctness": _mean(ref.correctness[key]),
                "per_task": _per_task(ref.kinds, ref.correctness[key])}

    return {
        "methods": methods,
        "sft": {**side(""),
                **({"sampled": side("sampled")} if "sampled" in ref.responses else {}),
                "targets": {"k": 5, "temperature": 0.8,
                            "mean_gold_score": _mean([x for row in ref.target_scores for x in row]),
                            "frac_spread_ge_2": _mean([float(max(row) - min(row) >= 2)
                                                       for row in ref.target_scores])},
                "train_seconds": round(stage["sft"], 2), "n_parameters": sft_summary["n_parameters"],
                "steps": sft_cfg.steps, "n_demonstrations": sft_summary["n_demonstrations"],
                "final_loss": sft_summary["final_loss"]},
        "pairs": pairs_info,
        "method_differences": method_differences(eval_correctness, config.seed),
        "n_eval": len(ref.prompts),
        "eval_split": config.eval_split,
        "examples": [{"user": ref.tasks[j].user, "answer": " ".join(ref.tasks[j].answer),
                      "responses": {n: (eval_responses[n][j], eval_scores[n][j]) for n in eval_responses}}
                     for j in range(min(5, len(ref.prompts)))],
        "config": {**{k: v for k, v in asdict(config).items() if k not in ("sft", "methods")},
                   "sft": asdict(sft_cfg)},
        "stage_seconds": {k: round(v, 1) for k, v in stage.items()},
    }


def _write_outputs(out: Path, summary: dict, curves: dict, eval_scores: dict, start: float) -> None:
    """5. The report: figures, ``summary.json`` (with the wall time) and ``report.md``, each atomically."""
    from alphapo.evaluation.plots import plot_reward_histogram
    from alphapo.io import write_json_atomic, write_text_atomic

    plot_displacement(curves, out / "displacement.png")
    plot_reward_histogram(eval_scores, out / "reward_histogram.png",
                          title="Gold score of held-out samples", xlabel="gold score (1..10)", bins=18)
    summary["wall_time_s"] = round(time.time() - start, 1)
    write_json_atomic(out / "summary.json", summary)
    write_text_atomic(out / "report.md", render_report(summary))
    _log(f"done in {summary['wall_time_s']:.0f} s: {out / 'report.md'}")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "quickstart", help="toy SFT -> on-policy pairs -> DPO/SimPO/AlphaPO -> gold-judge report (CPU, minutes)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/quickstart", help="output folder (default runs/quickstart)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: fastest for these tiny models; 0 = torch's default)")
    p.add_argument("--precision", choices=("float32", "bf16-autocast"), default="float32",
                   help="SFT and preference-training compute: float32 (default) or bf16-autocast (float32 "
                        "master weights; slower than float32 at this size on CPU, see docs/performance.md)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    summary = run_quickstart(args.out, QuickstartConfig(seed=args.seed, threads=args.threads,
                                                            precision=args.precision,
                                                            progress=not args.no_progress))
    best = max(summary["methods"].items(), key=lambda kv: kv[1]["correctness_gain"])
    lo, hi = best[1]["correctness_gain_ci"]
    print(f"best method: {best[0]} (greedy correctness gain vs SFT {best[1]['correctness_gain']:+.3f} "
          f"[{lo:+.3f}, {hi:+.3f}], gold win rate {best[1]['win_rate']:.3f}); report: {Path(args.out) / 'report.md'}")
    return 0
