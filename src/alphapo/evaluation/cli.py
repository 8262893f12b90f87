"""``alphapo eval``: a model against a reference model on held-out prompts, judged by any judge.

    alphapo eval --model runs/alphapo/final --reference runs/sft/final --prompts heldout.jsonl \\
        --judge toy-gold --out runs/eval/alphapo [--temperature 0.8 --seed 0] \\
        [--unlearning-data heldout_pairs.jsonl] [--goals 10,7,4]

Writes to ``--out`` (all atomically):

- ``summary.json``: win rate (ties half) + CI, LC win rate (+ bootstrap CI and GLM coefficients), mean
  judge score and length for model and reference, and, when asked, the unlearning check and one block per
  goal score;
- ``rewards.png``: judge-score distributions of model and reference (AlphaPO Figure 3, right);
- ``generations.jsonl``: per prompt, both responses, their scores and the preference;
- ``unlearning.png`` (with ``--unlearning-data``): mean log-prob of high-scoring rejected responses under
  reference and model (reward-augmented paper, Figure 3).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from alphapo.generation.cli import add_judge_arguments, judge_from_args


def _goals(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--goals must be comma-separated numbers, got {text!r}") from err


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="win rate / LC win rate / scores of a model against a reference, judged by a judge",
        description="Generate one response per held-out prompt from the model and the reference, judge both, "
                    "and write summary.json (win rate with ties half and a 95% CI, length-controlled win "
                    "rate as AlpacaEval 2.0, mean score and length), rewards.png and generations.jsonl.")
    p.add_argument("--model", required=True, help="local causal LM folder to evaluate")
    p.add_argument("--reference", required=True, help="local causal LM folder to compare against (e.g. SFT)")
    p.add_argument("--prompts", required=True, help="JSONL with a 'prompt' field (held-out prompts)")
    add_judge_arguments(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--name", default="model", help="label of the model in the figure (default: model)")
    p.add_argument("--reference-name", default="reference", help="label of the reference in the figure")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="sampling and bootstrap seed")
    p.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    p.add_argument("--tie-tol", type=float, default=0.0, help="|score difference| <= this is a tie")
    p.add_argument("--ci-method", choices=("wilson", "normal", "bootstrap"), default="wilson")
    p.add_argument("--unlearning-data", default=None,
                   help="pairs JSONL with score_rejected: report log-probs of high-scoring rejected responses "
                        "under model vs reference (reward-augmented paper, Fig. 3)")
    p.add_argument("--unlearning-min-score", type=float, default=None,
                   help="score threshold for the unlearning check (default: 75th percentile)")
    p.add_argument("--goals", type=_goals, default=None,
                   help="comma-separated goal scores: also evaluate the model conditioned on each (reward-"
                        "augmented models), with the goal prompt of alphapo.data.relabel")
    p.add_argument("--goal-placement", choices=("auto", "system", "prefix"), default="auto",
                   help="where the goal text goes: a system message, or a prefix of the user turn (auto: "
                        "system if the model's chat template has a system role)")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from alphapo.errors import UserError
    from alphapo.evaluation.evaluate import evaluate_goal_conditioned, evaluate_model, goal_condition
    from alphapo.evaluation.logprobs import rejected_from_records, unlearning_check
    from alphapo.evaluation.plots import plot_reward_histogram, plot_unlearning
    from alphapo.generation.io import read_prompts
    from alphapo.generation.sampling import load_policy
    from alphapo.io import write_json_atomic, write_jsonl_atomic

    if args.name == args.reference_name:
        raise UserError("--name and --reference-name must differ (they label the figure)")
    ids, prompts = read_prompts(args.prompts, limit=args.limit)
    judge = judge_from_args(args)
    unlearn_records = _read_jsonl(args.unlearning_data) if args.unlearning_data else None
    model, tokenizer = load_policy(args.model, device=args.device)
    reference, ref_tokenizer = load_policy(args.reference, device=args.device)
    condition = goal_condition(tokenizer, placement=args.goal_placement) if args.goals else None
    gen = dict(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
               batch_size=args.batch_size, seed=args.seed, progress=not args.no_progress)
    res = evaluate_model(model, tokenizer, prompts, judge, reference=(reference, ref_tokenizer),
                         tie_tol=args.tie_tol, ci_method=args.ci_method, **gen)
    out = Path(args.out)
    summary = {"model": str(args.model), "reference": str(args.reference), "prompts": str(args.prompts),
               "judge": args.judge, **res.summary()}
    if unlearn_records is not None:
        u_prompts, u_texts, u_scores = rejected_from_records(unlearn_records)
        unlearning = unlearning_check(model, reference, tokenizer, u_prompts, u_texts, u_scores,
                                      min_score=args.unlearning_min_score, reference_tokenizer=ref_tokenizer,
                                      batch_size=args.batch_size)
        summary["unlearning"] = unlearning.to_dict()
        plot_unlearning({args.name: unlearning}, out / "unlearning.png", reference_name=args.reference_name)
        summary["unlearning_figure"] = "unlearning.png"
    hist = {args.name: res.scores, args.reference_name: res.reference_scores} if res.scores is not None else {}
    if condition is not None:
        per_goal = evaluate_goal_conditioned(model, tokenizer, prompts, judge, args.goals, condition,
                                             reference_responses=res.reference_responses,
                                             reference_scores=res.reference_scores, tie_tol=args.tie_tol,
                                             ci_method=args.ci_method, **gen)
        summary["goals"] = {f"{g:g}": r.summary() for g, r in per_goal.items()}
        for g, r in per_goal.items():
            if r.scores is not None:
                hist[f"{args.name} | goal {g:g}"] = r.scores
    rows = [{"id": i, "prompt": p, "response": r, "reference_response": rr, "preference": pref,
             "score": None if res.scores is None else res.scores[n],
             "reference_score": None if res.reference_scores is None else res.reference_scores[n]}
            for n, (i, p, r, rr, pref) in enumerate(zip(ids, prompts, res.responses, res.reference_responses,
                                                        res.preferences))]
    write_jsonl_atomic(out / "generations.jsonl", rows)
    if hist:
        plot_reward_histogram(hist, out / "rewards.png", title=f"Judge scores ({args.judge})")
        summary["figure"] = "rewards.png"
    write_json_atomic(out / "summary.json", summary)
    print(json.dumps({k: summary[k] for k in ("win_rate", "win_rate_ci", "lc_win_rate", "mean_score",
                                              "mean_reference_score", "score_gain", "score_gain_ci", "mean_length")
                      if k in summary}))
    return 0


def _read_jsonl(path: str) -> list[dict]:
    from alphapo.errors import UserError

    p = Path(path)
    if not p.is_file():
        raise UserError(f"--unlearning-data file {path!r} does not exist")
    rows = []
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
    return rows
