"""``alphapo toy ...``: the toy world's commands.

    alphapo toy prompts --out heldout.jsonl --split heldout --seed 0   # prompts for generate / eval
    alphapo toy sft --out runs/toy/sft --seed 0 [--steps 2000] [--set p_error=0.5 ...]
    alphapo toy check --model runs/toy/sft                             # SFT targets on held-out prompts
    alphapo toy reward-model --out runs/toy/rm --seed 0 [--init runs/toy/sft]
    alphapo toy score --prompt "what is 3 pear plus 4 pear" --response "sure ! 7"  # gold score + attributes

The seed fixes the task split: ``toy prompts --split heldout --seed S`` gives exactly the prompts that
``toy sft --seed S`` never trained on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _set_items(items: list[str]) -> dict:
    from alphapo.errors import UserError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set expects key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def register(subparsers) -> None:
    toy = subparsers.add_parser("toy", help="the toy world: tasks, SFT policy, reward model, gold judge",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = toy.add_subparsers(dest="toy_command", metavar="TOY_COMMAND")

    p = sub.add_parser("prompts", help="write toy prompts (JSONL with id, prompt, kind, answer)")
    p.add_argument("--out", required=True)
    p.add_argument("--split", choices=("train", "heldout"), default="heldout")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=4000, help="as in toy sft (default 4000)")
    p.add_argument("--n-heldout", type=int, default=2000, help="as in toy sft (default 2000)")
    p.set_defaults(func=run_prompts)

    p = sub.add_parser("sft", help="train the tiny Llama SFT policy from scratch on noisy-teacher demos")
    p.add_argument("--out", required=True, help="output model folder (HF format)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default 2000)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override ToySFTConfig fields, e.g. p_error=0.4 hidden_size=96")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_sft)

    p = sub.add_parser("check", help="measure the SFT targets (mean gold score, best-worst spread)")
    p.add_argument("--model", required=True)
    p.add_argument("--seed", type=int, default=None,
                   help="task-split seed (default: read from the policy's sft_summary.json)")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--sample-seed", type=int, default=1234)
    p.set_defaults(func=run_check)

    p = sub.add_parser("reward-model", help="train a Bradley-Terry reward model on gold-labelled pairs")
    p.add_argument("--out", required=True, help="output folder (HF sequence-classification model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default 600)")
    p.add_argument("--init", default=None, help="start from this toy SFT policy folder (default: random)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override RewardModelConfig fields")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_reward_model)

    p = sub.add_parser("score", help="gold score and attributes of one response")
    p.add_argument("--prompt", required=True, help="a toy user message")
    p.add_argument("--response", required=True)
    p.set_defaults(func=run_score)

    toy.set_defaults(func=lambda args: (toy.print_help(), 2)[1])


def run_prompts(args: argparse.Namespace) -> int:
    from alphapo.io import write_jsonl_atomic
    from alphapo.toyworld.tasks import split_tasks

    train, heldout = split_tasks(args.seed, args.n_train, args.n_heldout)
    tasks = heldout if args.split == "heldout" else train
    rows = [{"id": f"toy-{args.split}-{i}", "prompt": t.messages(), "kind": t.kind, "answer": " ".join(t.answer)}
            for i, t in enumerate(tasks)]
    write_jsonl_atomic(args.out, rows)
    print(f"wrote {len(rows)} {args.split} prompts to {args.out}")
    return 0


def run_sft(args: argparse.Namespace) -> int:
    from alphapo.toyworld.sft import ToySFTConfig, train_sft

    values = _set_items(args.set)
    values["seed"] = args.seed
    if args.steps is not None:
        values["steps"] = args.steps
    config = ToySFTConfig.from_dict(values)
    summary = train_sft(config, args.out, progress=not args.no_progress)
    print(f"toy SFT: {summary['n_parameters']} parameters, final loss {summary['final_loss']:.3f}, "
          f"{summary['wall_time_s']:.0f} s -> {args.out}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from alphapo.toyworld.sft import measure_targets

    m = measure_targets(args.model, seed=args.seed, k=args.k, temperature=args.temperature,
                        sample_seed=args.sample_seed)
    ok_mean = 3.5 <= m["mean_gold_score"] <= 7
    ok_spread = m["frac_spread_ge_2"] >= 0.7
    print(f"mean gold score {m['mean_gold_score']:.2f} (target 3.5..7: {'ok' if ok_mean else 'MISSED'}); "
          f"prompts with best-worst >= 2: {m['frac_spread_ge_2']:.0%} (target >= 70%: "
          f"{'ok' if ok_spread else 'MISSED'}); by task: "
          + ", ".join(f"{k} {v:.2f}" for k, v in m["mean_by_task"].items()))
    return 0 if ok_mean and ok_spread else 1


def run_reward_model(args: argparse.Namespace) -> int:
    import dataclasses

    from alphapo.errors import UserError
    from alphapo.toyworld.reward_model import RewardModelConfig, train_reward_model

    values = _set_items(args.set)
    names = {f.name for f in dataclasses.fields(RewardModelConfig)}
    if set(values) - names:
        raise UserError(f"unknown reward-model config key(s) {sorted(set(values) - names)}; valid: {sorted(names)}")
    values["seed"] = args.seed
    if args.steps is not None:
        values["steps"] = args.steps
    if args.init is not None:
        if not (Path(args.init) / "config.json").is_file():
            raise UserError(f"--init {args.init!r} is not a model folder (no config.json)")
        values["init"] = args.init
    s = train_reward_model(RewardModelConfig(**values), args.out, progress=not args.no_progress)
    print(f"toy reward model: held-out pair accuracy {s['heldout_accuracy']:.3f} on {s['n_heldout_pairs']} "
          f"pairs (Pearson r with gold {s['heldout_pearson_with_gold']:.2f}), {s['wall_time_s']:.0f} s -> "
          f"{args.out}  (use it as --judge hf:{args.out})")
    return 0


def run_score(args: argparse.Namespace) -> int:
    from alphapo.toyworld.judge import grade, parse_task

    attrs = grade(parse_task(args.prompt), args.response)
    print(json.dumps(attrs))
    return 0
