"""``alphapo generate``: on-policy preference pairs from a local policy and a judge.

    alphapo generate --model runs/sft/final --prompts prompts.jsonl --judge hf:models/rm \\
        --k 5 --temperature 0.8 --out pairs.jsonl [--mode all] [--judge-noise 0.5 --judge-seed 1]

Writes the dataset (JSONL, our schema) and ``<out>.stats.json`` (counts, dropped prompts, samples/s)
together (``alphapo.io.atomic_group``: both files change, or neither), and prints a one-line summary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


class _ListJudges(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from alphapo.generation.judge_registry import available_judges

        for prefix, help_text in available_judges().items():
            print(f"{prefix:12s} {help_text}")
        parser.exit(0)


def add_judge_arguments(parser: argparse.ArgumentParser) -> None:
    """``--judge SPEC`` plus proxy wrappers; shared by ``alphapo generate`` and ``alphapo eval``."""
    parser.add_argument("--judge", required=True,
                        help="judge spec: hf:PATH (local reward model), length, py:MODULE:ATTR, toy-gold or "
                             "toy-proxy:... (see --list-judges)")
    parser.add_argument("--judge-noise", type=float, default=0.0,
                        help="add seeded Gaussian noise of this std to the judge's scores (proxy judge)")
    parser.add_argument("--judge-length-bias", type=float, default=0.0,
                        help="add this much score per response character (proxy judge with a length bias)")
    parser.add_argument("--judge-seed", type=int, default=0, help="seed of --judge-noise")
    parser.add_argument("--list-judges", action=_ListJudges, help="list judge spec prefixes and exit")


def judge_from_args(args: argparse.Namespace):
    """The judge of ``--judge`` with its proxy wrappers. With ``--no-progress`` (which ``generate`` and
    ``eval`` both take) transformers' progress bars go off first: the judge's and the weight-loading ones."""
    from transformers.utils import logging as hf_logging

    from alphapo.generation.judge_registry import make_judge
    from alphapo.generation.judges import LengthBiasedJudge, NoisyJudge

    if args.no_progress:
        hf_logging.disable_progress_bar()
    judge = make_judge(args.judge)
    if args.judge_length_bias:
        judge = LengthBiasedJudge(judge, args.judge_length_bias)
    if args.judge_noise:
        judge = NoisyJudge(judge, args.judge_noise, seed=args.judge_seed)
    return judge


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate", help="sample k responses per prompt, judge them, write preference pairs",
        description="On-policy pairs: sample k responses per prompt from a local causal LM (chat template, "
                    "batched, KV cache, seeded), score them with a judge, keep best as chosen and worst as "
                    "rejected (or all k with --mode all). Prompts whose k scores are all equal are dropped "
                    "and counted.")
    p.add_argument("--model", required=True, help="local Hugging Face causal LM folder (with tokenizer)")
    p.add_argument("--prompts", required=True, help="JSONL with a 'prompt' field (string or messages)")
    add_judge_arguments(p)
    p.add_argument("--out", required=True, help="output JSONL")
    p.add_argument("--k", type=int, default=5, help="responses per prompt (default 5)")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generate() call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", choices=("pairs", "all"), default="pairs",
                   help="pairs: best vs worst (default); all: keep all k responses with scores")
    p.add_argument("--tie-tol", type=float, default=0.0,
                   help="drop a prompt when best - worst score <= this (default 0: only exact ties)")
    p.add_argument("--empty-responses", choices=("exclude", "keep"), default="exclude",
                   help="exclude (default; counted) or keep empty responses; alphapo.data rejects empty turns")
    p.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from alphapo.generation.io import read_prompts
    from alphapo.generation.pairs import generate_pairs
    from alphapo.generation.sampling import load_policy
    from alphapo.io import atomic_group, dump_jsonl, json_text

    ids, prompts = read_prompts(args.prompts, limit=args.limit)
    judge = judge_from_args(args)
    model, tokenizer = load_policy(args.model, device=args.device)
    result = generate_pairs(model, tokenizer, prompts, judge, ids=ids, k=args.k, temperature=args.temperature,
                            top_p=args.top_p, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                            seed=args.seed, mode=args.mode, tie_tol=args.tie_tol,
                            empty_responses=args.empty_responses,
                            progress=not args.no_progress)
    out = Path(args.out)
    stats = {"model": str(args.model), "prompts": str(args.prompts), "judge": args.judge, "k": args.k,
             "temperature": args.temperature, "seed": args.seed, "mode": args.mode, **result.stats.to_dict()}
    with atomic_group(out, out.with_name(out.name + ".stats.json")) as (tmp_pairs, tmp_stats):
        with tmp_pairs.open("w", encoding="utf-8") as fh:
            dump_jsonl(result.records, fh)
        tmp_stats.write_text(json_text(stats), encoding="utf-8")
    s = result.stats
    print(json.dumps({"out": str(out), "kept": s.n_kept, "dropped_all_equal": s.n_dropped_all_equal,
                      "dropped_empty": s.n_dropped_empty, "empty_responses": s.n_empty_responses,
                      "prompts": s.n_prompts, "samples_per_second": round(s.samples_per_second, 2),
                      "mean_score": round(s.mean_score, 4)}))
    return 0
