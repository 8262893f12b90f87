"""Benchmark our own code paths against each other, in one process, interleaved: the speedups that carry to GPUs.

Compared, on the tiny Llama of ``alphapo.tiny_models`` and the synthetic pairs of ``bench_vs_trl.py``
(same ``--shape`` presets):

- **train**: one training step (forward, backward, fused AdamW) of a SimPO loss on a length-grouped
  batch of pairs (``alphapo.training.data.plan_epoch``, as the trainer batches), with the log-probs from
  the layouts of ``alphapo.training.logps``: ``plain`` (one right-padded row per response, the prompt
  encoded twice), ``shared`` (one row per pair, prompt once, block mask), ``packed`` (several
  prefix-shared pairs per row, rows as wide as the longest pair) and ``packed_2x`` (rows twice as wide:
  less padding, more attention). Each variant trains its own copy of the same initial weights on the
  same batches.
- **generate**: ``alphapo.generation.sampling`` sampling ``k`` responses per prompt with one prefill per
  prompt (the default) against ``generate(num_return_sequences=k)``, which repeats each prompt ``k``
  times before the prefill.
- **matmul**: a float32 ``(n x n) @ (n x n)`` matrix product (``--matmul-n``), the FLOP/s ceiling the
  step's FLOP/s is read against (measured after every training repeat).
- **tail** (``--modes tail``): the log-prob tail alone on ``(800, vocab)`` logits, forward + backward:
  log-softmax + gather, ``F.cross_entropy(reduction="none")`` and the chunked function of
  ``alphapo.training.logps``.
- **tokens** (``--modes tokens``): the useful-token fraction of each layout over the planned batches,
  without running the model (what ``tokens/useful_fraction`` reports in training).
- **sft** (``--modes sft``): the quickstart's toy SFT step (``alphapo.toyworld.sft``) in float32, in
  float32 with foreach AdamW and clipping (the same weights bit for bit), and under
  ``precision="bf16-autocast"``; CPU time paired per repeat, and the loss each reaches.
- **bf16** (``--modes bf16``, not run by default): the shared-layout training step in float32 against
  CPU ``torch.autocast(dtype=bfloat16)`` with float32 master weights, and the largest relative change
  of a summed log-prob. The trainer offers it as ``train.mixed_precision=bf16``; no default uses it.

Timing on a shared machine: in training, every variant runs the same batch back to back (the order
rotating), so each step has a partner measured at the same moment; the speedup column is the median
(min-max) of these paired ratios. Times are both wall-clock and process CPU time (one torch thread:
CPU time is the compute a step costs, and moves much less than wall time when other processes take
the cores). Sampling variants alternate per repeat; their CPU-time speedup is paired per repeat. Tables give medians with the min-max over repeats.
The script exits 1 when the layouts' first-step losses differ by more than 1e-5 or greedy outputs
differ between the two prefill paths.

Step FLOP/CPU-s counts the FLOPs the step executes: ``6 x`` (linear-layer parameters x processed
positions + LM head x completion rows) + ``3 x 4 x`` (rows x width^2 x hidden x layers) for attention
(a masked kernel computes every query-key pair), i.e. the usual ``6 N`` rule per token; embedding
lookups, norms, softmax and the optimizer are not counted. It is read against the float32 matmul's
FLOP/CPU-s measured after every repeat in the same process.

Run (one thread, as the other benchmark)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_paths.py --shape uf
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_paths.py --shape default --modes train --repeats 3

Flags: ``--shape`` (``uf``: hidden 256, 4 layers, vocabulary 32000, prompts of about 196 tokens,
completions of about 50; ``default``: the TRL benchmark's default shape), ``--hidden-size`` /
``--layers`` / ``--vocab-size`` (override the shape's model), ``--modes`` (subset of
train,generate,tail,bf16,tokens,sft; default train,generate), ``--repeats``, ``--batches`` (training
batches per repeat), ``--batch-size``, ``--length-key`` (the batch plan's length key: ``shared``, the
trainer's, or ``plain``, the older one that counts the prompt once per response), ``--sft-steps``
(toy SFT steps per repeat), ``--k`` / ``--gen-prompts`` / ``--gen-tokens`` (generation), ``--threads``,
``--seed``, ``--json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vs_trl import SHAPES, model_kwargs, synthetic_pairs  # noqa: E402

LAYOUT_VARIANTS = ("plain", "shared", "packed", "packed_2x")
GEN_VARIANTS = ("repeat", "prefill_once")


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def tokenised_pairs(args, tok) -> list[tuple[list[int], list[int], list[int]]]:
    """Synthetic pairs as token ids: prompt, chosen + EOS, rejected + EOS (our data contract)."""
    rows = synthetic_pairs(args.batches * args.batch_size, args.seed, prompt_words=args.prompt_words,
                           completion_words=args.completion_words)
    eos = tok.eos_token_id
    out = []
    for r in rows:
        p = tok(r["prompt"], add_special_tokens=False)["input_ids"]
        out.append((p, tok(r["chosen"], add_special_tokens=False)["input_ids"] + [eos],
                    tok(r["rejected"], add_special_tokens=False)["input_ids"] + [eos]))
    return out


def planned_batches(args, pairs) -> list[tuple[list[list[int]], list[list[list[int]]]]]:
    """The epoch's length-grouped batches as the trainer plans them (``plan_epoch``), keyed by
    ``layout_tokens(example, args.length_key)``: ``shared`` is the trainer's key for the prefix-shared
    forward (prompt once), ``plain`` the older key (prompt once per response)."""
    from alphapo.training.data import layout_tokens, plan_epoch

    lengths = [layout_tokens({"prompt_input_ids": p, "chosen_input_ids": c, "rejected_input_ids": r},
                             args.length_key) for p, c, r in pairs]
    plan = plan_epoch(lengths, global_batch=args.batch_size, seed=args.seed, epoch=0, group_by_length=True)
    return [([pairs[i][0] for i in b], [[pairs[i][1], pairs[i][2]] for i in b]) for b in plan]


def layout_builders(tok):
    from alphapo.training.logps import packed_layout, plain_layout, shared_layout

    def packed_2x(prompts, responses, pad_id):
        longest = max(len(p) + sum(len(r) for r in rs) for p, rs in zip(prompts, responses))
        return packed_layout(prompts, responses, pad_id, row_tokens=2 * longest)

    return {"plain": plain_layout, "shared": shared_layout, "packed": packed_layout, "packed_2x": packed_2x}


def bench_tokens(args, tok) -> dict:
    """Useful-token fraction of each layout over the planned batches (no model run)."""
    batches = planned_batches(args, tokenised_pairs(args, tok))
    builders = layout_builders(tok)
    out = {}
    for v in LAYOUT_VARIANTS:
        lays = [builders[v](p, r, tok.pad_token_id) for p, r in batches]
        out[v] = {"useful": sum(x.useful_tokens for x in lays), "processed": sum(x.processed_tokens for x in lays),
                  "per_batch": [x.useful_tokens / x.processed_tokens for x in lays]}
    return {"layouts": out, "batches": len(batches)}


def step_flops(model, layout, n_rows_head: int) -> float:
    """FLOPs of forward + backward over ``layout`` (see the module docstring)."""
    cfg = model.config
    linear = sum(p.numel() for n, p in model.named_parameters()
                 if p.ndim == 2 and "embed" not in n and "lm_head" not in n)
    rows, width = layout.input_ids.shape
    attention = 4 * rows * width * width * cfg.hidden_size * cfg.num_hidden_layers
    head = 2 * cfg.hidden_size * cfg.vocab_size * n_rows_head
    return 3 * (2 * linear * rows * width + attention + head)


def bench_train(args, model, tok) -> dict:
    import torch

    from alphapo.training.logps import layout_logps, prefix_sharing_unsupported, sum_by_owner

    batches = planned_batches(args, tokenised_pairs(args, tok))
    reason = prefix_sharing_unsupported(model, 10 ** 9)
    if reason:
        raise SystemExit(f"the prefix-shared layouts cannot run: {reason}")
    builders = layout_builders(tok)
    layouts = {v: [builders[v](p, r, tok.pad_token_id) for p, r in batches] for v in LAYOUT_VARIANTS}
    useful = {v: 0 for v in LAYOUT_VARIANTS}
    processed = {v: 0 for v in LAYOUT_VARIANTS}
    for v in LAYOUT_VARIANTS:
        for lay in layouts[v]:
            useful[v] += lay.useful_tokens
            processed[v] += lay.processed_tokens
    step_fl = {v: [step_flops(model, lay, lay.targets.numel()) for lay in layouts[v]] for v in LAYOUT_VARIANTS}
    models = {v: copy.deepcopy(model).train() for v in LAYOUT_VARIANTS}
    optims = {v: torch.optim.AdamW(models[v].parameters(), lr=1e-4, fused=True) for v in LAYOUT_VARIANTS}
    first_loss = {}

    def step(v: str, n: int) -> tuple[float, float]:
        """One training step of variant ``v`` on batch ``n``: (wall seconds, process CPU seconds)."""
        m, opt, lay = models[v], optims[v], layouts[v][n]
        t0, c0 = time.perf_counter(), time.process_time()
        token_logps, _ = layout_logps(m, lay)  # what group_logps does, with the layout built beforehand
        logps = sum_by_owner(token_logps, lay.owners, lay.lengths.numel()).view_as(lay.lengths)
        avg = logps / lay.lengths
        loss = -torch.nn.functional.logsigmoid(2.5 * (avg[:, 0] - avg[:, 1]) - 1.0).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if n == 0 and v not in first_loss:
            first_loss[v] = loss.item()
        return wall, cpu

    for v in LAYOUT_VARIANTS:  # warm-up (allocator, kernels), not timed; reset the weights afterwards
        for n in range(len(batches)):
            step(v, n)
        models[v].load_state_dict(model.state_dict())
        optims[v] = torch.optim.AdamW(models[v].parameters(), lr=1e-4, fused=True)
    wall: dict[str, list[float]] = {v: [] for v in LAYOUT_VARIANTS}
    cpu: dict[str, list[float]] = {v: [] for v in LAYOUT_VARIANTS}
    flops_done: dict[str, list[float]] = {v: [] for v in LAYOUT_VARIANTS}
    matmul: list[tuple[float, float]] = []
    turn = 0
    for _ in range(args.repeats):
        for n in range(len(batches)):  # every variant on the same batch back to back, rotating the order
            shift = turn % len(LAYOUT_VARIANTS)
            turn += 1
            for v in LAYOUT_VARIANTS[shift:] + LAYOUT_VARIANTS[:shift]:
                w, c = step(v, n)
                wall[v].append(w)
                cpu[v].append(c)
                flops_done[v].append(step_fl[v][n])
        matmul.append(matmul_flops(args.matmul_n))
    # paired ratios: plain's step time over the variant's, on the same batch at the same moment
    paired = {v: [p / x for p, x in zip(cpu["plain"], cpu[v])] for v in LAYOUT_VARIANTS}
    paired_wall = {v: [p / x for p, x in zip(wall["plain"], wall[v])] for v in LAYOUT_VARIANTS}
    return {"wall": wall, "cpu": cpu, "speedup_cpu": paired, "speedup_wall": paired_wall, "useful": useful,
            "processed": processed, "flops_per_cpu_s": {v: sum(flops_done[v]) / sum(cpu[v]) for v in LAYOUT_VARIANTS},
            "matmul_flops": matmul, "first_loss": first_loss, "batches": len(batches)}


def matmul_flops(n: int) -> tuple[float, float]:
    """FLOP/s of a float32 ``(n x n) @ (n x n)`` product: (per wall second, per process CPU second)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0, c0 = time.perf_counter(), time.process_time()
    reps = 5
    for _ in range(reps):
        a @ b
    flops = reps * 2 * n ** 3
    return flops / (time.perf_counter() - t0), flops / (time.process_time() - c0)


def bench_tail(args) -> dict:
    """The log-prob tail alone, forward + backward on ``(800, vocab)`` float32 logits: log-softmax + gather,
    ``F.cross_entropy(reduction="none")`` and the chunked function, interleaved."""
    import torch

    from alphapo.training.logps import token_logps_and_logit_means

    g = torch.Generator().manual_seed(args.seed)
    base = torch.randn(800, args.vocab_size, generator=g)
    targets = torch.randint(0, args.vocab_size, (800,), generator=g)
    weights = torch.randn(800, generator=g)
    methods = {
        "log_softmax_gather": lambda x: torch.log_softmax(x, -1).gather(-1, targets[:, None])[:, 0],
        "cross_entropy": lambda x: -torch.nn.functional.cross_entropy(x, targets, reduction="none"),
        "chunked": lambda x: token_logps_and_logit_means(x, targets)[0],
    }
    cpu: dict[str, list[float]] = {m: [] for m in methods}
    for rep in range(args.repeats + 1):
        for name in list(methods)[rep % 3:] + list(methods)[: rep % 3]:
            x = base.clone().requires_grad_()
            c0 = time.process_time()
            (methods[name](x) * weights).sum().backward()
            if rep:  # the first round is a warm-up
                cpu[name].append(time.process_time() - c0)
    return {"cpu": cpu}


def bench_bf16(args, model, tok) -> dict:
    """The shared-layout training step in float32 and under CPU bfloat16 autocast (float32 master weights,
    float32 optimizer): s/step interleaved, and how far the bfloat16 log-probs and loss move."""
    import torch

    from alphapo.training.logps import group_logps

    batches = planned_batches(args, tokenised_pairs(args, tok))
    variants = ("float32", "bf16_autocast")
    models = {v: copy.deepcopy(model).train() for v in variants}
    optims = {v: torch.optim.AdamW(models[v].parameters(), lr=1e-4, fused=True) for v in variants}
    with torch.no_grad():
        ref = group_logps(models["float32"], *batches[0], tok.pad_token_id).logps
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = group_logps(models["bf16_autocast"], *batches[0], tok.pad_token_id).logps
    rel = ((low - ref).abs() / ref.abs()).max().item()

    def run(v: str) -> tuple[float, float]:
        m, opt = models[v], optims[v]
        t0, c0 = time.perf_counter(), time.process_time()
        for prompts, responses in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=v == "bf16_autocast"):
                out = group_logps(m, prompts, responses, tok.pad_token_id)
                avg = out.logps / out.lengths
                loss = -torch.nn.functional.logsigmoid(2.5 * (avg[:, 0] - avg[:, 1]) - 1.0).mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return (time.perf_counter() - t0) / len(batches), (time.process_time() - c0) / len(batches)

    for v in variants:
        run(v)
    times: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    for rep in range(args.repeats):
        for v in (variants if rep % 2 == 0 else variants[::-1]):
            w, c = run(v)
            times[v].append(w)
            cpu[v].append(c)
    paired = [a / b for a, b in zip(cpu["float32"], cpu["bf16_autocast"])]
    return {"times": times, "cpu": cpu, "speedup_cpu": paired, "max_rel_logp_diff": rel, "batches": len(batches)}


def bench_sft(args) -> dict:
    """The quickstart's toy SFT step (``alphapo.toyworld.sft``: its model, its demonstrations, batch 32) in
    float32 and under ``precision="bf16-autocast"``: each variant trains its own copy of the same initial
    weights on the same ``--sft-steps`` batches per repeat, variants alternating, CPU time per step paired
    per repeat; plus each variant's mean loss over the last repeat's batches."""
    import torch

    from alphapo.toyworld.sft import ToySFTConfig, build_policy, demonstrations, encode_example
    from alphapo.toyworld.tasks import split_tasks
    from alphapo.toyworld.tokenizer import build_toy_tokenizer

    cfg = ToySFTConfig(seed=args.seed)
    tok = build_toy_tokenizer()
    tasks, _ = split_tasks(cfg.seed, cfg.n_train, cfg.n_heldout)
    demos = demonstrations(tasks, cfg.seed, p_error=cfg.p_error, p_verbose=cfg.p_verbose,
                           p_systematic=cfg.p_systematic)
    encoded = [encode_example(tok, d["prompt"], d["response"]) for d in demos]
    order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    batches = []
    for n in range(args.sft_steps):
        rows = [encoded[i] for i in order[n * cfg.batch_size:(n + 1) * cfg.batch_size]]
        width = max(len(x) for x, _ in rows)
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (x, y) in enumerate(rows):
            ids[r, :len(x)], labels[r, :len(y)], mask[r, :len(x)] = torch.tensor(x), torch.tensor(y), 1
        batches.append((ids, labels, mask))
    variants = ("float32", "float32-foreach", "bf16-autocast")
    base = build_policy(tok, cfg)
    models = {v: copy.deepcopy(base).train() for v in variants}
    foreach = {v: True if v == "float32-foreach" else None for v in variants}  # None: PyTorch's default
    optims = {v: torch.optim.AdamW(models[v].parameters(), lr=cfg.lr, betas=(0.9, 0.98), foreach=foreach[v])
              for v in variants}

    def run(v: str) -> tuple[float, float, float]:
        m, opt = models[v], optims[v]
        t0, c0, total = time.perf_counter(), time.process_time(), 0.0
        for ids, labels, mask in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=v == "bf16-autocast"):
                loss = m(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0, foreach=foreach[v])
            opt.step()
            total += loss.item()
        n = len(batches)
        return (time.perf_counter() - t0) / n, (time.process_time() - c0) / n, total / n

    for v in variants:  # warm-up, not timed
        run(v)
    wall: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    loss: dict[str, float] = {}
    for rep in range(args.repeats):
        for v in variants[rep % 3:] + variants[:rep % 3]:
            w, c, loss[v] = run(v)
            wall[v].append(w)
            cpu[v].append(c)
    speedup = {v: [a / b for a, b in zip(cpu["float32"], cpu[v])] for v in variants}
    return {"wall": wall, "cpu": cpu, "speedup_cpu": speedup, "last_mean_loss": loss, "steps": len(batches)}


def generation_cases(args, model_dir: Path, work: Path) -> list[dict]:
    """The quickstart's sampling (its policy size and toy prompts, k = 5, 24 new tokens, 64 prompts per
    call; random weights, so samples run to the token limit) and the shape's model with its prompts."""
    from alphapo.tiny_models import save_tiny_model
    from alphapo.toyworld.sft import ToySFTConfig
    from alphapo.toyworld.tasks import split_tasks

    sft = ToySFTConfig()
    qs_dir = save_tiny_model(work / "quickstart", seed=args.seed, chat_template="system",
                             hidden_size=sft.hidden_size, layers=sft.layers, heads=sft.heads, kv_heads=sft.kv_heads,
                             intermediate_size=sft.intermediate_size, max_positions=128)
    toy = [t.messages() for t in split_tasks(args.seed, sft.n_train, sft.n_heldout)[0][:64]]
    rows = synthetic_pairs(args.gen_prompts, args.seed + 1, prompt_words=args.prompt_words,
                           completion_words=args.completion_words)
    long = [[{"role": "user", "content": r["prompt"].replace("<|bos|>", "").strip()}] for r in rows]
    return [{"name": "quickstart", "model_dir": qs_dir, "prompts": toy, "k": 5, "tokens": 24, "batch": 64},
            {"name": args.shape, "model_dir": model_dir, "prompts": long, "k": args.k, "tokens": args.gen_tokens,
             "batch": args.gen_batch_size}]


def bench_generate(args, case: dict) -> dict:
    from alphapo.generation import sampling

    model, tok = sampling.load_policy(case["model_dir"], device="cpu")
    prompts = case["prompts"]
    kw = dict(k=case["k"], temperature=1.0, max_new_tokens=case["tokens"], batch_size=case["batch"],
              seed=args.seed, progress=False)
    prefill = {"repeat": "repeat", "prefill_once": "once"}
    greedy = {v: sampling.generate_responses(model, tok, prompts, k=1, temperature=0.0,
                                             max_new_tokens=case["tokens"], batch_size=case["batch"],
                                             progress=False, prefill=prefill[v]).responses
              for v in GEN_VARIANTS}
    rates: dict[str, list[float]] = {v: [] for v in GEN_VARIANTS}
    cpu: dict[str, list[float]] = {v: [] for v in GEN_VARIANTS}
    same_samples = True
    for rep in range(args.repeats):
        results = {}
        for v in (GEN_VARIANTS if rep % 2 == 0 else GEN_VARIANTS[::-1]):
            c0 = time.process_time()
            results[v] = sampling.generate_responses(model, tok, prompts, prefill=prefill[v], **kw)
            cpu[v].append(time.process_time() - c0)
            rates[v].append(results[v].n_samples / results[v].seconds)
        same_samples &= results["repeat"].responses == results["prefill_once"].responses
    paired_cpu = [r / o for r, o in zip(cpu["repeat"], cpu["prefill_once"])]
    return {"samples_per_s": rates, "cpu_s": cpu, "speedup_cpu": paired_cpu,
            "greedy_equal": greedy["repeat"] == greedy["prefill_once"], "same_samples": same_samples,
            "prompt_tokens": statistics.mean(len(tok(tok.apply_chat_template(
                p, add_generation_prompt=True, tokenize=False), add_special_tokens=False)["input_ids"])
                for p in prompts)}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="uf", help="size preset (default uf)")
    ap.add_argument("--hidden-size", type=int, help="model width (default: the shape's)")
    ap.add_argument("--layers", type=int, help="model depth (default: the shape's)")
    ap.add_argument("--vocab-size", type=int, help="output vocabulary (default: the shape's)")
    ap.add_argument("--modes", default="train,generate", help="subset of train,generate,tail,bf16,tokens,sft (default train,generate)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats of every variant (default 5)")
    ap.add_argument("--batches", type=int, default=3, help="training batches per repeat (default 3)")
    ap.add_argument("--batch-size", type=int, default=8, help="pairs per training batch (default 8)")
    ap.add_argument("--k", type=int, default=4, help="samples per prompt in generation (default 4)")
    ap.add_argument("--gen-prompts", type=int, default=8, help="prompts to sample from (default 8)")
    ap.add_argument("--gen-batch-size", type=int, default=8, help="prompts per generate call (default 8)")
    ap.add_argument("--gen-tokens", type=int, default=32, help="max new tokens per sample (default 32)")
    ap.add_argument("--matmul-n", type=int, default=1024, help="matmul size for the FLOP/s ceiling")
    ap.add_argument("--sft-steps", type=int, default=20, help="toy SFT steps per repeat in --modes sft (default 20)")
    ap.add_argument("--length-key", choices=("shared", "plain"), default="shared",
                    help="batch length key (layout_tokens): shared, the trainer's (default), or plain (older)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the raw numbers to this file")
    args = ap.parse_args(argv)
    for key, value in SHAPES[args.shape].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("train", "generate", "bf16", "tail", "tokens", "sft")]
    if bad:
        ap.error(f"--modes: unknown {bad}; choose from train, generate, bf16, tail, tokens, sft")
    args.modes = modes
    return args


def main(argv=None) -> int:
    import tempfile

    import torch

    from alphapo.tiny_models import build_tokenizer, save_tiny_model

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="alphapo-paths-"))
    model_dir = save_tiny_model(work / "model", seed=args.seed, chat_template="system",
                                vocab_size=args.vocab_size, **model_kwargs(args))
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)  # SDPA attention, float32
    tok = build_tokenizer(chat_template=None)
    print(f"# our paths: tiny Llama (hidden {args.hidden_size}, {args.layers} layers, vocab {args.vocab_size}, "
          f"attention {model.config._attn_implementation}), shape {args.shape}, {args.threads} thread(s), "
          f"{args.repeats} interleaved repeats; median (min-max)", flush=True)
    result: dict = {"args": {k: v for k, v in vars(args).items()}}
    if "train" in args.modes:
        r = bench_train(args, model, tok)
        result["train"] = r
        mm = statistics.median(x[1] for x in r["matmul_flops"])
        print(f"\n## training step (SimPO, batch {args.batch_size} pairs, {r['batches']} length-grouped batches, "
              f"every variant on the same batch back to back)\n")
        print("| layout | s/step (wall) | CPU-s/step | speedup vs plain (CPU, paired) | speedup (wall, paired) "
              "| useful tokens | step GFLOP/CPU-s | of matmul |")
        print("|---|---|---|---|---|---|---|---|")
        for v in LAYOUT_VARIANTS:
            gflops = r["flops_per_cpu_s"][v]
            print(f"| {v} | {spread(r['wall'][v])} | {spread(r['cpu'][v])} | {spread(r['speedup_cpu'][v])} | "
                  f"{spread(r['speedup_wall'][v])} | {r['useful'][v] / r['processed'][v]:.1%} | "
                  f"{gflops / 1e9:.1f} | {gflops / mm:.0%} |")
        walls = [x[0] / 1e9 for x in r["matmul_flops"]]
        print(f"\nfloat32 matmul ({args.matmul_n}^3) in the same run: {mm / 1e9:.1f} GFLOP/CPU-s, "
              f"{statistics.median(walls):.1f} GFLOP/s wall ({min(walls):.1f}-{max(walls):.1f}); first-step losses "
              f"{', '.join(f'{v} {x:.6f}' for v, x in r['first_loss'].items())}", flush=True)
    if "tokens" in args.modes:
        tk = bench_tokens(args, tok)
        result["tokens"] = tk
        print(f"\n## useful-token fraction ({tk['batches']} length-grouped batches of {args.batch_size} pairs, "
              f"length key {args.length_key}; no model run)\n")
        print("| layout | useful tokens | per batch: median (min-max) |")
        print("|---|---|---|")
        for v, x in tk["layouts"].items():
            print(f"| {v} | {x['useful'] / x['processed']:.1%} | {spread(x['per_batch'])} |")
    if "generate" in args.modes:
        print("\n## sampling: one prefill per prompt vs generate(num_return_sequences=k)\n")
        print("| model / prompts | k | prompts | mean prompt tokens | samples/s repeat | samples/s prefill once "
              "| speedup (wall) | speedup (CPU, paired) | greedy identical | same samples |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        result["generate"] = {}
        for case in generation_cases(args, model_dir, work):
            g = bench_generate(args, case)
            result["generate"][case["name"]] = g
            rep, once = g["samples_per_s"]["repeat"], g["samples_per_s"]["prefill_once"]
            print(f"| {case['name']} | {case['k']} | {len(case['prompts'])} | {g['prompt_tokens']:.0f} | "
                  f"{spread(rep)} | {spread(once)} | {statistics.median(once) / statistics.median(rep):.2f}x | "
                  f"{spread(g['speedup_cpu'])} | "
                  f"{'yes' if g['greedy_equal'] else 'NO'} | {'yes' if g['same_samples'] else 'no'} |",
                  flush=True)
    if "tail" in args.modes:
        t = bench_tail(args)
        result["tail"] = t
        base = statistics.median(t["cpu"]["log_softmax_gather"])
        print(f"\n## log-prob tail alone: 800 rows x {args.vocab_size} vocab, forward + backward\n")
        print("| method | CPU-s | speedup |")
        print("|---|---|---|")
        for name, values in t["cpu"].items():
            print(f"| {name} | {spread(values)} | {base / statistics.median(values):.2f}x |")
    if "bf16" in args.modes:
        b = bench_bf16(args, model, tok)
        result["bf16"] = b
        f32, bf = statistics.median(b["times"]["float32"]), statistics.median(b["times"]["bf16_autocast"])
        print(f"\n## bfloat16 autocast on CPU (shared layout, {b['batches']} batches)\n")
        print("| precision | s/step (wall) | CPU-s/step | speedup (wall) | speedup (CPU, paired) |")
        print("|---|---|---|---|---|")
        print(f"| float32 | {spread(b['times']['float32'])} | {spread(b['cpu']['float32'])} | 1.00x | 1.00 |")
        print(f"| bf16 autocast, float32 master weights | {spread(b['times']['bf16_autocast'])} | "
              f"{spread(b['cpu']['bf16_autocast'])} | {f32 / bf:.2f}x | {spread(b['speedup_cpu'])} |")
        print(f"\nlargest relative change of a summed log-prob under bf16 (first batch): "
              f"{b['max_rel_logp_diff']:.1e}", flush=True)
    if "sft" in args.modes:
        f = bench_sft(args)
        result["sft"] = f
        print(f"\n## toy SFT step (the quickstart's model and batch 32; {f['steps']} steps per repeat, variants "
              f"alternating)\n")
        print("| variant | s/step (wall) | CPU-s/step | float32's CPU time over the variant's (paired) | "
              "mean loss, last repeat |")
        print("|---|---|---|---|---|")
        names = {"float32": "float32 (toy SFT)", "float32-foreach": "float32, foreach AdamW and clipping",
                 "bf16-autocast": "bf16-autocast, float32 master weights"}
        for v, name in names.items():
            print(f"| {name} | {spread(f['wall'][v])} | {spread(f['cpu'][v])} | {spread(f['speedup_cpu'][v])} | "
                  f"{f['last_mean_loss'][v]:.4f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    greedy_ok = all(g["greedy_equal"] for g in result.get("generate", {}).values())
    losses = list(result.get("train", {}).get("first_loss", {}).values())
    losses_ok = not losses or max(losses) - min(losses) <= 1e-5
    if not (greedy_ok and losses_ok):
        print("FAILED: " + ("greedy outputs differ between prefill paths; " if not greedy_ok else "")
              + ("first-step losses differ between layouts by more than 1e-5" if not losses_ok else ""),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
