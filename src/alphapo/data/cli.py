"""``alphapo data ...``: validate, stats, convert, tokenize, relabel, unrelabel.

Examples::

    alphapo data validate prefs.jsonl                       # exit 0 + one line, or exit 1 + every issue
    alphapo data stats prefs.jsonl --tokenizer ./my-model   # counts, token-length percentiles, histograms
    alphapo data convert raw.parquet clean.jsonl --column prompt=question --skip-invalid
    alphapo data relabel prefs.jsonl ra.jsonl --mode ra --tokenizer ./my-model
    alphapo data relabel prefs.jsonl ira.jsonl --mode implicit --model ./dpo --ref-model ./sft --beta 0.1
    alphapo data unrelabel ra.jsonl prefs-again.jsonl

Every command that writes a file writes it atomically and only after all rows validated (strict by
default; ``--skip-invalid`` drops bad rows and prints how many per reason).
"""

from __future__ import annotations

import argparse
import sys


def _columns(pairs: list[str] | None) -> dict[str, str] | None:
    from alphapo.errors import UserError

    if not pairs:
        return None
    out = {}
    for item in pairs:
        key, sep, col = item.partition("=")
        if not sep or not key or not col:
            raise UserError(f"--column takes FIELD=COLUMN (e.g. prompt=question), got {item!r}")
        out[key] = col
    return out


def _add_source(p: argparse.ArgumentParser, *, skip: bool = True) -> None:
    p.add_argument("--column", action="append", metavar="FIELD=COLUMN",
                   help="map a canonical field (prompt, chosen, rejected, chosen_score, rejected_score, "
                        "responses, scores, id, chosen_attributes, rejected_attributes) to a source column")
    p.add_argument("--split", default="train", help="split of a DatasetDict / hub dataset (default: train)")
    if skip:
        p.add_argument("--skip-invalid", action="store_true",
                       help="drop invalid rows (counted per reason) instead of stopping with an error")


def _add_chat_template(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chat-template", choices=("auto", "always", "never"), default="auto",
                   help="auto (default, TRL's rule): template conversational rows, use plain strings as they "
                        "are; always / never: template every row / no row")


def _load(args):
    from alphapo.data.loading import load_preferences

    records = load_preferences(args.source, columns=_columns(args.column), split=args.split,
                               skip_invalid=getattr(args, "skip_invalid", False))
    for line in records.report.notices():
        print(line, file=sys.stderr)
    return records


def _tokenizer(path):
    if path is None:
        return None
    from transformers import AutoTokenizer

    from alphapo.errors import UserError

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise UserError(f"could not load a tokenizer from {path}: {err}") from err


def run_validate(args) -> int:
    from alphapo.data.loading import validate

    report = validate(args.source, columns=_columns(args.column), split=args.split, progress=True)
    warnings = "".join(f"\nwarning: {w}" for w in report.warnings)
    if report.invalid_rows:
        print(report.full_report() + warnings)
        return 1
    print(report.summary() + warnings)
    return 0


def run_stats(args) -> int:
    from alphapo.data.stats import compute_stats

    records = _load(args)
    print(compute_stats(records, _tokenizer(args.tokenizer), chat_template=args.chat_template).render())
    return 0


def run_convert(args) -> int:
    from alphapo.data.writer import write_jsonl

    n = write_jsonl(args.out, _load(args))
    print(f"wrote {n} canonical records to {args.out}")
    return 0


def run_tokenize(args) -> int:
    from alphapo.data.tokenize import tokenize_preferences
    from alphapo.data.writer import write_jsonl

    examples, report = tokenize_preferences(_load(args), _tokenizer(args.tokenizer), max_length=args.max_length,
                                            max_prompt_length=args.max_prompt_length,
                                            prompt_truncation=args.prompt_truncation,
                                            chat_template=args.chat_template,
                                            on_identical="skip" if args.skip_invalid else "error")
    print(report)
    if args.out:
        write_jsonl(args.out, examples)
        print(f"wrote {len(examples)} tokenised examples to {args.out}")
    return 0


def _implicit_scores(args, records):
    from alphapo.data.implicit import implicit_rewards, rewards_from_logps
    from alphapo.errors import UserError

    if args.logps:
        from alphapo.data.writer import read_jsonl

        table = {str(row.get("id")): row for row in read_jsonl(args.logps)}
        return rewards_from_logps(records, table, beta=args.beta)
    if not (args.model and args.ref_model):
        raise UserError("--mode implicit needs --model and --ref-model (or precomputed --logps FILE)")
    from transformers import AutoModelForCausalLM

    from alphapo.data.tokenize import tokenize_preferences

    tokenizer = _tokenizer(args.tokenizer or args.model)
    examples, _ = tokenize_preferences(records, tokenizer, max_length=args.max_length)
    model = AutoModelForCausalLM.from_pretrained(args.model).eval()
    ref = AutoModelForCausalLM.from_pretrained(args.ref_model).eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return implicit_rewards(examples, model, ref, beta=args.beta, pad_id=pad, batch_size=args.batch_size)


def run_relabel(args) -> int:
    from alphapo.data.relabel import relabel, resolve_placement
    from alphapo.data.writer import write_jsonl

    records = _load(args)
    tokenizer = _tokenizer(args.tokenizer)
    placement = resolve_placement(args.goal_placement, tokenizer)
    template = args.goal_template
    if args.goal_template_file:
        with open(args.goal_template_file, encoding="utf-8") as f:
            template = f.read()
    scores = _implicit_scores(args, records) if args.mode == "implicit" else None
    normalize = args.normalize or ("minmax" if args.mode == "implicit" else "none")
    attributes = [a for a in args.attributes.split(",") if a] if args.attributes else None
    out, report = relabel(records, mode=args.mode, placement=placement, template=template,
                          attributes=attributes, normalize=normalize,
                          score_range=tuple(args.score_range) if args.score_range else None,
                          ties=args.ties, scores=scores)
    write_jsonl(args.out, out)
    print(f"{report}; goal placement: {placement}; wrote {args.out}")
    return 0


def run_unrelabel(args) -> int:
    from alphapo.data.relabel import unrelabel
    from alphapo.data.writer import write_jsonl

    out = unrelabel(_load(args))
    write_jsonl(args.out, out)
    print(f"wrote {len(out)} records to {args.out}")
    return 0


def register(subparsers) -> None:
    from alphapo.data.relabel import DEFAULT_GOAL_TEMPLATE, MODES, NORMALIZATIONS, TIE_POLICIES

    data = subparsers.add_parser("data", help="validate, inspect, convert, tokenise and relabel preference data",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = sub.add_parser("validate", help="check every row; exit 1 with the full report on bad data")
    p.add_argument("source", help="file (.jsonl .json .parquet .csv .tsv), save_to_disk folder or hub name")
    _add_source(p, skip=False)
    p.set_defaults(func=run_validate)

    p = sub.add_parser("stats", help="counts, length percentiles (tokens with --tokenizer), score histograms")
    p.add_argument("source")
    p.add_argument("--tokenizer", help="tokenizer folder: lengths in tokens instead of characters")
    _add_chat_template(p)
    _add_source(p)
    p.set_defaults(func=run_stats)

    p = sub.add_parser("convert", help="write canonical JSONL records")
    p.add_argument("source")
    p.add_argument("out")
    _add_source(p)
    p.set_defaults(func=run_convert)

    p = sub.add_parser("tokenize", help="tokenise and report truncation (optionally write the token ids)")
    p.add_argument("source")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--max-length", type=int)
    p.add_argument("--max-prompt-length", type=int)
    p.add_argument("--prompt-truncation", choices=("keep_end", "keep_start"), default="keep_end")
    _add_chat_template(p)
    p.add_argument("--out", help="write the tokenised examples as JSONL")
    _add_source(p)
    p.set_defaults(func=run_tokenize)

    p = sub.add_parser("relabel", help="reward-augmented relabeling (ra, ra-chosen, half, implicit)",
                       description="Reward-augmented relabeling (Zhang et al.). The goal is a system message, or "
                                   "a prefix of the first user turn for templates without a system role "
                                   "(--goal-placement auto tries the --tokenizer's template).")
    p.add_argument("source")
    p.add_argument("out")
    p.add_argument("--mode", choices=MODES, default="ra")
    p.add_argument("--goal-placement", choices=("auto", "system", "prefix"), default="auto",
                   help="auto: system role if --tokenizer's chat template renders one, else prefix "
                        "(system when no --tokenizer)")
    p.add_argument("--tokenizer", help="tokenizer folder (placement detection; tokenising for --mode implicit)")
    p.add_argument("--goal-template", default=DEFAULT_GOAL_TEMPLATE,
                   help="goal text with {scores} (default: the paper's appendix A.1 prompt)")
    p.add_argument("--goal-template-file", help="read the goal template from a file")
    p.add_argument("--attributes", help="comma-separated attribute names for multi-attribute goals "
                                        "(from chosen_attributes / rejected_attributes)")
    p.add_argument("--normalize", choices=NORMALIZATIONS,
                   help="map scores to 1..10 (default: none; minmax for --mode implicit)")
    p.add_argument("--score-range", type=float, nargs=2, metavar=("LO", "HI"), help="for --normalize range")
    p.add_argument("--ties", choices=TIE_POLICIES, default="drop",
                   help="pairs whose two goals are equal: drop (default, counted), keep, or error")
    p.add_argument("--model", help="--mode implicit: the trained policy folder")
    p.add_argument("--ref-model", help="--mode implicit: the reference model folder")
    p.add_argument("--logps", help="--mode implicit: JSONL of id, chosen_logp, rejected_logp, ref_chosen_logp, "
                                   "ref_rejected_logp (instead of --model / --ref-model)")
    p.add_argument("--beta", type=float, default=0.1, help="--mode implicit: reward scale (default 0.1)")
    p.add_argument("--max-length", type=int, help="--mode implicit: truncate sequences for scoring")
    p.add_argument("--batch-size", type=int, default=8)
    _add_source(p)
    p.set_defaults(func=run_relabel)

    p = sub.add_parser("unrelabel", help="undo relabel: strip goals, swap back, merge the copies of each pair")
    p.add_argument("source")
    p.add_argument("out")
    _add_source(p)
    p.set_defaults(func=run_unrelabel)
