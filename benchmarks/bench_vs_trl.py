"""Benchmark: alphapo's trainer against TRL 1.16 on the same tiny Llama, data and hyper-parameters.

Three pairs of runs, each trained from the same initial weights on the same synthetic preference pairs,
in the same order, with the same optimizer, schedule and loss hyper-parameters:

=========  =====================================  =====================================================
pair       ours (``alphapo.training.train``)      TRL
=========  =====================================  =====================================================
dpo        ``loss.name=dpo`` (beta)               ``DPOTrainer``, ``loss_type="sigmoid"``
simpo      ``loss.name=simpo`` (beta, gamma)      experimental ``CPOTrainer``, ``loss_type="simpo"``,
                                                  ``cpo_alpha=0`` (no NLL term), ``simpo_gamma=gamma``
alphapo    ``loss.name=alphapo`` (beta, gamma,    experimental ``CPOTrainer``, ``loss_type="alphapo"``
           alpha)                                 (sets ``cpo_alpha=0``), ``alpha``, ``simpo_gamma=gamma``
=========  =====================================  =====================================================

TRL's CPO computes ``-logsig(beta * (r_w - r_l - simpo_gamma / beta))`` = ``-logsig(beta r_w - beta r_l -
simpo_gamma)``, so ``simpo_gamma`` is the *absolute* margin, our ``gamma``; the first-step losses below
check that numerically.

Every run is its own subprocess (``--worker``), launched alternately (ours, TRL, ours, TRL, ...) so that
slow drifts of a shared machine hit both sides alike. Per pair the table shows:

- **steps/s**: optimizer steps per second in the training loop. A global
  ``torch.optim.Optimizer`` step post-hook (``register_optimizer_step_post_hook``) timestamps every
  optimizer step in both frameworks, so the same definition applies to both: ``(n - 1) / (t_n - t_1)``,
  i.e. everything between two updates (data collation, forward, backward, logging) after the first step.
  The table gives the median over repeats with the min-max range; the ratio is of the medians.
- **steps/CPU-s**: the same with the process's CPU time (``time.process_time``) instead of the wall
  clock. With one torch thread per worker this is the compute cost per step, and it stays stable on a
  shared machine where wall-clock rates swing with the load; read it when the two disagree.
- **train MiB**: peak memory of training on CPU, measured as the worker's peak resident set size
  (``VmHWM`` in ``/proc/self/status``, the same as ``ru_maxrss`` on Linux) minus its resident size just
  before the run. Before that baseline, both workers import the same union of libraries
  (``UNION_MODULES``: transformers' modelling code, accelerate, datasets, TRL, alphapo), so the
  difference is what the run itself allocated: model, reference model or reference log-probs,
  gradients, AdamW state, activations, data. (``tracemalloc`` is not used: it does not see torch's
  allocator.) The per-run JSON (``--json``) lists any module still imported during the run.
- **import footprint** (line under the table): resident size after importing only what each side
  needs (``SIDE_MODULES``), measured once in its own process: the library cost a user pays on top.
- **wall s**: the whole worker process (imports, tokenisation, reference pass, training, saving the
  final model), for context: ours precomputes reference log-probs before the loop (TRL's DPO computes
  them inside every step by default), so the loop-only steps/s alone would hide that cost.
- **loss@1**: the loss of the first optimizer step from both; they must agree to ``--tol`` (1e-5), else
  the script exits with status 1. **max |dloss|** is the largest difference over the whole trajectory
  (float rounding differences grow slowly with the number of updates).

Identical inputs, checked rather than assumed: the synthetic prompts start with a literal ``<|bos|>``
and end with a newline, completions start with a letter, and the tokenizer has no chat template, so
TRL's tokenisation (prompt+completion, split at the common prefix; CPO adds BOS only when missing and
EOS once) and ours (prompt and completion separately, EOS appended) give the same token ids; each TRL
worker compares its tokenised dataset with ours and the table reports it (``tokens equal``). Data order:
TRL reads the examples sequentially in the order of our trainer's batch plan for epoch 0
(``alphapo.training.data.plan_epoch``), so step ``s`` sees the same examples in both. No dropout (the
tiny Llama has none; TRL's ``disable_dropout`` stays on), float32, no gradient checkpointing, fused
AdamW on both sides (ours selects ``torch.optim.AdamW(fused=True)`` for unsharded runs, TRL gets
``optim="adamw_torch_fused"``, so both run the same kernel), betas
(0.9, 0.999), eps 1e-8, weight decay 0, clipping at 1.0, cosine schedule with warmup ratio 0.1.
Nothing is downloaded: the model (``alphapo.tiny_models``'s tiny Llama and tokenizer, output vocabulary
widened to ``--vocab-size``) is written into a temporary folder.

Run (a few minutes on 2 cores)::

    .venv/bin/python benchmarks/bench_vs_trl.py                  # all pairs, defaults below
    .venv/bin/python benchmarks/bench_vs_trl.py --pairs dpo --steps 10 --repeats 1   # quick look
    .venv/bin/python benchmarks/bench_vs_trl.py --json results.json   # also write the raw numbers
    .venv/bin/python benchmarks/bench_vs_trl.py --shape uf      # UltraFeedback-like lengths, 32k vocabulary

Flags: ``--shape`` (``default``: hidden 128, 4 layers, vocabulary 8192, prompts of 4-14 words, completions
of 3-30; ``uf``: hidden 256, vocabulary 32000, prompts of 50-98 words (about 196 tokens), completions of
8-30 words (about 50 tokens)), ``--steps`` (optimizer steps per run), ``--repeats`` (runs per side and
pair), ``--batch-size``, ``--hidden-size`` / ``--layers`` / ``--vocab-size`` (model size, override the
shape), ``--prompt-words`` / ``--completion-words`` (``LO,HI`` word counts, override the shape),
``--threads`` (torch threads per worker, default 1), ``--lr``, ``--beta-dpo``, ``--beta``, ``--gamma``,
``--alpha``, ``--seed``, ``--tol``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULT_PREFIX = "BENCH_RESULT "
PAIRS = ("dpo", "simpo", "alphapo")
WORDS = ("the quick brown fox jumps over lazy dog apple banana cherry answer list word letters "
         "preference response judge hello world reverse sort numbers model chosen rejected").split()


# --------------------------------------------------------------------------------------------------
# shared set-up (parent process)


# Size presets (``--shape``). "uf": UltraFeedback-like lengths (prompts of about 196 tokens, completions
# of about 50; the tokenizer gives about 2.6 tokens per word) on a wider model with a 32k vocabulary.
SHAPES = {
    "default": {"hidden_size": 128, "layers": 4, "vocab_size": 8192, "prompt_words": (4, 14),
                "completion_words": (3, 30)},
    "uf": {"hidden_size": 256, "layers": 4, "vocab_size": 32000, "prompt_words": (50, 98),
           "completion_words": (8, 30)},
}


def synthetic_pairs(n: int, seed: int, *, prompt_words: tuple[int, int] = (4, 14),
                    completion_words: tuple[int, int] = (3, 30)) -> list[dict[str, str]]:
    """``n`` plain-text pairs; prompts ``<|bos|>Sentence.\\n`` and completions, word counts uniform in the
    given inclusive ranges (default 4-14 and 3-30)."""
    rng = random.Random(seed)

    def sentence(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."

    return [{"id": f"pair-{i}", "prompt": "<|bos|>" + sentence(*prompt_words) + "\n",
             "chosen": sentence(*completion_words), "rejected": sentence(*completion_words)} for i in range(n)]


def model_kwargs(args) -> dict[str, int]:
    heads = max(2, args.hidden_size // 32)
    return {"hidden_size": args.hidden_size, "layers": args.layers, "heads": heads,
            "kv_heads": max(1, heads // 2), "intermediate_size": 2 * args.hidden_size}


def write_model(out: Path, args) -> Path:
    """The tiny Llama + tokenizer of ``alphapo.tiny_models``, with an output vocabulary of ``--vocab-size``.

    The tokenizer has 384 tokens; rows beyond it are never targets but take part in every softmax, as
    in real checkpoints whose embedding matrix is padded. A realistic vocabulary makes the LM head and
    the log-softmax, where the two implementations differ most, weigh as they do in real models.
    """
    from alphapo.tiny_models import save_tiny_model

    try:
        return save_tiny_model(out, seed=args.seed, chat_template=None, vocab_size=args.vocab_size,
                               **model_kwargs(args))
    except ValueError as err:  # --vocab-size smaller than the tokenizer
        raise SystemExit(f"--vocab-size: {err}") from None


def loss_params(pair: str, args) -> dict[str, float]:
    if pair == "dpo":
        return {"beta": args.beta_dpo}
    if pair == "simpo":
        return {"beta": args.beta, "gamma": args.gamma}
    return {"beta": args.beta, "gamma": args.gamma, "alpha": args.alpha}


def our_examples_and_order(data_path: Path, model_dir: Path, args) -> tuple[list[dict], list[int]]:
    """Our tokenised examples and the order in which our trainer visits them in epoch 0."""
    from transformers import AutoTokenizer

    from alphapo.training.data import layout_tokens, load_examples, plan_epoch

    tok = AutoTokenizer.from_pretrained(model_dir)
    examples = load_examples(str(data_path), tok, split="train", columns=None, skip_invalid=False,
                             max_length=args.max_length, max_prompt_length=None, prompt_truncation="keep_end")
    lengths = [layout_tokens(e, "shared") for e in examples]  # the trainer's key for the prefix-shared forward
    plan = plan_epoch(lengths, global_batch=args.batch_size, seed=args.seed, epoch=0, group_by_length=True)
    return examples, [i for batch in plan for i in batch]


# --------------------------------------------------------------------------------------------------
# worker side: one training run, measured


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class StepClock:
    """Timestamps every optimizer step in the process (both frameworks call ``optimizer.step()``)."""

    def __init__(self):
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.fused: set[bool] = set()  # which AdamW kernel actually stepped (both sides must be fused)
        self.handle = register_optimizer_step_post_hook(self._tick)

    def _tick(self, optimizer, args, kwargs) -> None:
        self.times.append(time.perf_counter())
        self.cpu_times.append(time.process_time())
        self.fused.add(bool(optimizer.defaults.get("fused")))

    @staticmethod
    def _rate(stamps: list[float]) -> float:
        return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")

    def steps_per_second(self) -> float:
        return self._rate(self.times)

    def steps_per_cpu_second(self) -> float:
        return self._rate(self.cpu_times)


def run_ours(spec: dict, clock: StepClock) -> list[float]:
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

    out = Path(spec["out_dir"])
    config = TrainConfig(
        model=ModelConfig(name_or_path=spec["model_dir"]),
        data=DataConfig(train_path=spec["data_path"], max_length=spec["max_length"]),
        loss=LossConfig(name=spec["pair"], params=dict(spec["loss_params"])),
        reference=ReferenceConfig(cache_dir=str(out / "ref-cache")),  # fresh: no reuse across repeats
        train=OptimConfig(epochs=1, max_steps=spec["steps"], per_device_batch_size=spec["batch_size"],
                          gradient_accumulation_steps=1, learning_rate=spec["lr"], lr_scheduler="cosine",
                          warmup_ratio=0.1, weight_decay=0.0, max_grad_norm=1.0, seed=spec["seed"]),
        logging=LoggingConfig(logging_steps=1, tensorboard=False, progress_bar=False),
        output_dir=str(out / "run"),
    )
    train(config)
    records = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines() if line]
    return [r["loss"] for r in sorted(records, key=lambda r: r["step"]) if r.get("split") == "train"]


def run_trl(spec: dict, clock: StepClock) -> tuple[list[float], bool]:
    from datasets import Dataset
    from transformers import AutoTokenizer

    pair = spec["pair"]
    rows = json.loads(Path(spec["trl_rows_path"]).read_text())
    ours = json.loads(Path(spec["our_tokens_path"]).read_text())
    dataset = Dataset.from_list(rows)
    tok = AutoTokenizer.from_pretrained(spec["model_dir"])
    p = spec["loss_params"]
    common = dict(
        output_dir=str(Path(spec["out_dir"]) / "run"), per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1, max_steps=spec["steps"], learning_rate=spec["lr"],
        lr_scheduler_type="cosine", warmup_steps=0.1, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999,
        adam_epsilon=1e-8, max_grad_norm=1.0, optim="adamw_torch_fused", seed=spec["seed"], data_seed=spec["seed"],
        train_sampling_strategy="sequential", bf16=False, fp16=False, gradient_checkpointing=False,
        use_cpu=True, report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True,
        dataloader_num_workers=0, max_length=spec["max_length"], disable_dropout=True,
    )
    if pair == "dpo":
        from trl import DPOConfig, DPOTrainer

        cfg = DPOConfig(**common, beta=p["beta"], loss_type=["sigmoid"],
                        precompute_ref_log_probs=spec["trl_precompute_ref"],
                        use_weighting=False, ld_alpha=None, label_smoothing=0.0)
        trainer = DPOTrainer(model=spec["model_dir"], args=cfg, train_dataset=dataset, processing_class=tok)
        ds = trainer.train_dataset
        theirs = [(r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]) for r in ds]
    else:
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        cfg = CPOConfig(**common, beta=p["beta"], simpo_gamma=p["gamma"], cpo_alpha=0.0, label_smoothing=0.0,
                        loss_type="simpo" if pair == "simpo" else "alphapo", alpha=p.get("alpha", 0.0))
        trainer = CPOTrainer(model=spec["model_dir"], args=cfg, train_dataset=dataset, processing_class=tok)
        assert trainer.cpo_alpha == 0.0 and trainer.loss_type == "simpo"
        theirs = []
        for r in trainer.train_dataset:
            n = len(r["prompt_input_ids"])
            theirs.append((r["prompt_input_ids"], r["chosen_input_ids"][n:], r["rejected_input_ids"][n:]))
    tokens_match = [list(map(list, t)) for t in theirs] == [list(map(list, t)) for t in ours]
    trainer.train()
    trainer.save_model(str(Path(spec["out_dir"]) / "run" / "final"))  # ours saves final/ too
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h and "train_loss" not in h]
    return losses, tokens_match


# Imported by both workers before the memory baseline, so "train MiB" counts training, not libraries
# (ours imports torch._dynamo & co. lazily through transformers.modeling_utils, TRL at ``import trl``).
UNION_MODULES = (
    "accelerate", "datasets", "psutil", "safetensors.torch", "tqdm.auto", "rich.progress",
    "transformers", "transformers.modeling_utils", "transformers.models.llama.modeling_llama",
    "trl", "trl.trainer.dpo_trainer", "trl.experimental.cpo",
    "alphapo.data", "alphapo.losses", "alphapo.training.trainer", "alphapo.training.reference",
)
# What each side needs on its own: the import footprint a user pays (measured once, import only).
SIDE_MODULES = {
    "ours": ("accelerate", "transformers.models.llama.modeling_llama", "alphapo.data", "alphapo.losses",
             "alphapo.training.trainer", "alphapo.training.reference"),
    "trl": ("accelerate", "transformers.models.llama.modeling_llama", "datasets", "trl",
            "trl.trainer.dpo_trainer", "trl.experimental.cpo"),
}


def preimport(names) -> None:
    import importlib

    for name in names:
        importlib.import_module(name)


def footprint(side: str) -> None:
    """Print the resident size after importing only what ``side`` needs (MiB)."""
    preimport(("torch",) + SIDE_MODULES[side])
    print(RESULT_PREFIX + json.dumps({"side": side, "import_rss_mib": _rss_kib("VmRSS") / 1024}), flush=True)


def worker(spec_path: str) -> None:
    """Run one measured training in this process and print its result as one JSON line."""
    spec = json.loads(Path(spec_path).read_text())
    t_start = time.perf_counter()
    import torch

    torch.set_num_threads(spec["threads"])
    preimport(UNION_MODULES)  # both sides load the same libraries before the baseline below
    clock = StepClock()
    before = set(sys.modules)
    baseline_kib = _rss_kib("VmRSS")
    tokens_match = None
    if spec["side"] == "trl":
        losses, tokens_match = run_trl(spec, clock)
    else:
        losses = run_ours(spec, clock)
    peak_kib = _rss_kib("VmHWM")
    result = {"side": spec["side"], "pair": spec["pair"], "losses": losses, "steps": len(clock.times),
              "steps_per_second": clock.steps_per_second(), "steps_per_cpu_second": clock.steps_per_cpu_second(),
              "peak_rss_mib": peak_kib / 1024,
              "train_rss_mib": (peak_kib - baseline_kib) / 1024, "tokens_match": tokens_match,
              "wall_s": time.perf_counter() - t_start, "fused_adamw": clock.fused == {True},
              "late_imports": sorted(set(sys.modules) - before)}
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------------
# parent: set-up, alternate runs, table


def _subprocess(argv: list[str], threads: int, tag: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), CUDA_VISIBLE_DEVICES="",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
               TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.run([sys.executable, __file__, *argv], env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"worker {tag} failed with exit code {proc.returncode}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def launch(spec: dict, work: Path, tag: str) -> dict:
    spec_path = work / f"spec-{tag}.json"
    spec_path.write_text(json.dumps(spec))
    return _subprocess(["--worker", str(spec_path)], spec["threads"], tag)


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def summarise(pair: str, runs: list[dict], tol: float) -> dict:
    ours = [r for r in runs if r["side"] == "ours"]
    trl = [r for r in runs if r["side"] == "trl"]
    med = statistics.median
    o_loss, t_loss = ours[0]["losses"], trl[0]["losses"]
    n = min(len(o_loss), len(t_loss))
    diffs = [abs(a - b) for a, b in zip(o_loss[:n], t_loss[:n])]
    row = {
        "pair": pair,
        # median over repeats, with the range (a shared machine makes single runs noisy)
        "ours_steps_s": med(r["steps_per_second"] for r in ours),
        "trl_steps_s": med(r["steps_per_second"] for r in trl),
        "ours_steps_s_range": (min(r["steps_per_second"] for r in ours), max(r["steps_per_second"] for r in ours)),
        "trl_steps_s_range": (min(r["steps_per_second"] for r in trl), max(r["steps_per_second"] for r in trl)),
        "ours_steps_cpu_s": med(r["steps_per_cpu_second"] for r in ours),
        "trl_steps_cpu_s": med(r["steps_per_cpu_second"] for r in trl),
        "ours_train_mib": med(r["train_rss_mib"] for r in ours),
        "trl_train_mib": med(r["train_rss_mib"] for r in trl),
        "ours_wall_s": med(r["wall_s"] for r in ours),
        "trl_wall_s": med(r["wall_s"] for r in trl),
        "ours_loss1": o_loss[0] if o_loss else float("nan"),
        "trl_loss1": t_loss[0] if t_loss else float("nan"),
        "max_dloss": max(diffs) if diffs else float("nan"),
        "tokens_match": all(r["tokens_match"] for r in trl),
        "steps": (len(o_loss), len(t_loss)),
    }
    row["loss1_ok"] = (bool(n) and abs(row["ours_loss1"] - row["trl_loss1"]) <= tol
                       and len(o_loss) == len(t_loss))
    return row


def markdown(rows: list[dict], tol: float) -> str:
    head = ("| pair | steps/s ours | steps/s TRL | steps/s ratio | steps/CPU-s ratio | train MiB ours "
            "| train MiB TRL | memory ratio | wall s ours / TRL | loss@1 ours | loss@1 TRL | max abs dloss "
            "| tokens equal |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        ok = "" if r["loss1_ok"] else f" (DIFFERS > {tol:g})"
        lines.append(
            f"| {r['pair']} | {r['ours_steps_s']:.2f} ({r['ours_steps_s_range'][0]:.2f}-"
            f"{r['ours_steps_s_range'][1]:.2f}) | {r['trl_steps_s']:.2f} ({r['trl_steps_s_range'][0]:.2f}-"
            f"{r['trl_steps_s_range'][1]:.2f}) | "
            f"{ratio(r['ours_steps_s'], r['trl_steps_s']):.2f} | "
            f"{ratio(r['ours_steps_cpu_s'], r['trl_steps_cpu_s']):.2f} | {r['ours_train_mib']:.0f} | "
            f"{r['trl_train_mib']:.0f} | {ratio(r['ours_train_mib'], r['trl_train_mib']):.2f} | "
            f"{r['ours_wall_s']:.1f} / {r['trl_wall_s']:.1f} | {r['ours_loss1']:.7f} | "
            f"{r['trl_loss1']:.7f}{ok} | {r['max_dloss']:.1e} | {'yes' if r['tokens_match'] else 'NO'} |")
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--footprint", choices=("ours", "trl"), help=argparse.SUPPRESS)
    ap.add_argument("--pairs", default=",".join(PAIRS), help="comma-separated subset of dpo,simpo,alphapo")
    ap.add_argument("--steps", type=int, default=15, help="optimizer steps per run (default 15)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per side and pair, alternated (default 2)")
    ap.add_argument("--batch-size", type=int, default=8, help="per-device batch = global batch (default 8)")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="default",
                    help="size preset: default (hidden 128, vocab 8192, short texts) or uf (hidden 256, vocab "
                         "32000, prompts of about 196 tokens, completions of about 50)")
    ap.add_argument("--hidden-size", type=int, help="tiny Llama width (default: the shape's)")
    ap.add_argument("--layers", type=int, help="tiny Llama depth (default: the shape's)")
    ap.add_argument("--vocab-size", type=int,
                    help="model output vocabulary, >= the tokenizer's 384 tokens (default: the shape's)")
    ap.add_argument("--prompt-words", type=_word_range, help="LO,HI words per prompt (default: the shape's)")
    ap.add_argument("--completion-words", type=_word_range,
                    help="LO,HI words per completion (default: the shape's)")
    ap.add_argument("--max-length", type=int, default=512, help="max prompt+completion tokens (no truncation)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--beta-dpo", type=float, default=0.1, help="DPO beta (default 0.1)")
    ap.add_argument("--beta", type=float, default=2.5, help="SimPO/AlphaPO beta (default 2.5)")
    ap.add_argument("--gamma", type=float, default=1.0, help="SimPO/AlphaPO absolute margin (default 1.0)")
    ap.add_argument("--alpha", type=float, default=0.25, help="AlphaPO alpha (default 0.25)")
    ap.add_argument("--trl-precompute-ref", action="store_true",
                    help="DPO: let TRL precompute reference log-probs before training too (TRL's default "
                         "is a reference forward in every step; ours always precomputes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-5, help="first-step loss tolerance (default 1e-5)")
    ap.add_argument("--json", help="also write all raw results to this file")
    args = ap.parse_args(argv)
    for key, value in SHAPES[args.shape].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def _word_range(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (two integers), got {text!r}") from None
    if not 1 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"expected 1 <= LO <= HI, got {text!r}")
    return lo, hi


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    if args.footprint:
        footprint(args.footprint)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
    bad = [p for p in pairs if p not in PAIRS]
    if bad:
        raise SystemExit(f"--pairs: unknown {bad}; choose from {list(PAIRS)}")
    work = Path(tempfile.mkdtemp(prefix="alphapo-bench-"))
    model_dir = write_model(work / "model", args)
    rows = synthetic_pairs(args.steps * args.batch_size, args.seed, prompt_words=args.prompt_words,
                           completion_words=args.completion_words)
    data_path = work / "pairs.jsonl"
    data_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples, order = our_examples_and_order(data_path, model_dir, args)
    trl_rows = [{k: rows[i][k] for k in ("prompt", "chosen", "rejected")} for i in order]
    (work / "trl_rows.json").write_text(json.dumps(trl_rows))
    our_tokens = [[examples[i][k] for k in ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids")]
                  for i in order]
    (work / "our_tokens.json").write_text(json.dumps(our_tokens))
    longest = max(len(p) + max(len(c), len(r)) for p, c, r in our_tokens)
    if longest > args.max_length:
        raise SystemExit(f"--max-length {args.max_length} < longest sequence {longest}: raise it (no truncation)")

    print(f"# alphapo vs TRL, shape {args.shape}: tiny Llama (hidden {args.hidden_size}, {args.layers} layers, "
          f"vocab {args.vocab_size}), prompts of {args.prompt_words[0]}-{args.prompt_words[1]} words, completions "
          f"of {args.completion_words[0]}-{args.completion_words[1]}, "
          f"{len(rows)} pairs, batch {args.batch_size}, {args.steps} steps, {args.repeats} repeat(s), "
          f"{args.threads} thread(s), longest sequence {longest} tokens, fused AdamW on both sides; "
          f"work dir {work}", flush=True)
    results, table = [], []
    for pair in pairs:
        runs = []
        for rep in range(args.repeats):
            for side in ("ours", "trl"):
                spec = {"side": side, "pair": pair, "model_dir": str(model_dir), "data_path": str(data_path),
                        "trl_rows_path": str(work / "trl_rows.json"),
                        "our_tokens_path": str(work / "our_tokens.json"),
                        "out_dir": str(work / f"{pair}-{side}-{rep}"), "steps": args.steps,
                        "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                        "max_length": args.max_length, "threads": args.threads,
                        "trl_precompute_ref": args.trl_precompute_ref,
                        "loss_params": loss_params(pair, args)}
                r = launch(spec, work, f"{pair}-{side}-{rep}")
                if r["steps"] != args.steps or len(r["losses"]) != args.steps:
                    raise SystemExit(f"{pair}/{side}: {r['steps']} optimizer steps and {len(r['losses'])} "
                                     f"logged losses, expected {args.steps}")
                if not r["fused_adamw"]:
                    raise SystemExit(f"{pair}/{side}: the optimizer did not run the fused AdamW kernel")
                print(f"  {pair:8s} {side:4s} #{rep}: {r['steps_per_second']:.2f} steps/s "
                      f"({r['steps_per_cpu_second']:.2f} per CPU-s), train "
                      f"{r['train_rss_mib']:.0f} MiB (process peak {r['peak_rss_mib']:.0f}), wall {r['wall_s']:.1f}s, "
                      f"loss@1 {r['losses'][0] if r['losses'] else float('nan'):.7f}", flush=True)
                runs.append(r)
        results.extend(runs)
        table.append(summarise(pair, runs, args.tol))
    imports = {side: _subprocess(["--footprint", side], args.threads, f"footprint-{side}")["import_rss_mib"]
               for side in ("ours", "trl")}
    print()
    print(markdown(table, args.tol))
    print()
    print(f"Import footprint (RSS after importing only what each side needs): ours {imports['ours']:.0f} MiB, "
          f"TRL {imports['trl']:.0f} MiB.")
    print("ratio = ours / TRL (steps/s: higher is better for us; memory: lower is better for us). "
          "Speeds: median (min-max) over repeats, ratios of medians; memory and wall time: median.")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": results, "table": table,
                                               "import_rss_mib": imports}, indent=1))
    failed = [r["pair"] for r in table if not (r["loss1_ok"] and r["tokens_match"])]
    if failed:
        print(f"FAILED: first-step loss or tokens differ for {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
