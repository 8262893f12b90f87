"""Supervised fine-tuning of a tiny Llama policy from scratch on the noisy teacher's demonstrations.

``train_sft(config, out_dir)`` is the whole recipe, top to bottom:

1. build the word-level tokenizer and a random-initialised tiny ``LlamaForCausalLM``;
2. make ``n_train`` toy tasks and one noisy-teacher demonstration per task (``tasks.teacher_response``);
3. train with next-token cross-entropy on the completion tokens only (prompt tokens are masked with
   -100), AdamW, linear warm-up then cosine decay, fixed number of steps;
4. save model + tokenizer (HF format, loadable with ``AutoModelForCausalLM.from_pretrained``) and a
   ``sft_summary.json`` with the config, the loss curve and the wall time, atomically (temp folder,
   then rename).

``precision`` is ``"float32"`` (default) or ``"bf16-autocast"``: the forward runs under CPU
``torch.autocast(dtype=bfloat16)``, with float32 master weights, float32 gradients and a float32
optimizer (the mixed-precision recipe of Micikevicius et al., "Mixed Precision Training", with bfloat16,
which needs no loss scaling). At the quickstart's size (hidden 96, vocabulary 111) it is slower than
float32 on CPU, so it is not the default (docs/performance.md).

Everything is seeded (task content, teacher noise, initialisation, batch order), so the same config
gives the same weights on the same machine and thread count.

The policy imitates a teacher that is wrong 55% of the time (80% of its mistakes being the task type's
systematic one, ``tasks.systematic_error``) and verbose half the time, so its samples at temperature 0.8
vary in quality: the gold judge's best-minus-worst spread over 5 samples is what on-policy preference
pairs learn from. ``measure_targets`` measures the SFT targets (mean gold score, share of held-out
prompts with a spread >= 2, which should be at least 70%; ``alphapo toy check``).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from alphapo.errors import UserError
from alphapo.io import atomic_dir
from alphapo.toyworld.tasks import Task, split_tasks, teacher_response

PRECISIONS = ("float32", "bf16-autocast")


@dataclass
class ToySFTConfig:
    """Everything that defines a toy SFT run (defaults are the quickstart's)."""

    seed: int = 0
    n_train: int = 4000  # training tasks, one teacher demonstration each
    n_heldout: int = 2000  # held-out tasks (never trained on; used by evaluation)
    p_error: float = 0.55  # teacher's answer is wrong with this probability
    p_systematic: float = 0.8  # share of the wrong answers that are the task's systematic mistake
    p_verbose: float = 0.5  # teacher wraps the answer in filler with this probability (independent of errors)
    hidden_size: int = 96
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 256
    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.0
    threads: int = 1  # torch threads for this run (1 is fastest for tiny models); 0 keeps torch's default
    precision: str = "float32"  # one of PRECISIONS: the forward's compute precision (weights stay float32)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            import difflib

            near = difflib.get_close_matches(str(self.precision), PRECISIONS, 1, cutoff=0.4)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise UserError(f"toy SFT config key 'precision': {self.precision!r} is not one of "
                            f"{', '.join(PRECISIONS)}{hint}")

    @classmethod
    def from_dict(cls, values: dict) -> ToySFTConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            import difflib

            hints = [f"{k!r} (did you mean {difflib.get_close_matches(k, names, 1)[0]!r}?)"
                     if difflib.get_close_matches(k, names, 1) else repr(k) for k in unknown]
            raise UserError(f"unknown toy SFT config key(s): {', '.join(hints)}")
        return cls(**values)


def demonstrations(tasks: list[Task], seed: int, *, p_error: float, p_verbose: float,
                   p_systematic: float = 0.0) -> list[dict]:
    """One noisy-teacher demonstration per task: ``{"prompt": messages, "response": str}``."""
    rng = random.Random(f"toyworld-teacher-{seed}")
    return [{"prompt": t.messages(),
             "response": teacher_response(t, rng, p_error=p_error, p_systematic=p_systematic, p_verbose=p_verbose)}
            for t in tasks]


def encode_example(tokenizer, prompt: list[dict], response: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for prompt + response + EOS; labels are -100 on the prompt tokens."""
    prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(prompt_ids, add_special_tokens=False)["input_ids"]
    completion = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + completion, [-100] * len(prompt_ids) + completion


def build_policy(tokenizer, config: ToySFTConfig):
    """A random-initialised tiny Llama sized by ``config`` (seeded by ``config.seed``)."""
    from alphapo.tiny_models import build_tiny_llama

    model = build_tiny_llama(
        len(tokenizer), seed=config.seed, hidden_size=config.hidden_size, layers=config.layers,
        heads=config.heads, kv_heads=config.kv_heads, intermediate_size=config.intermediate_size,
        max_positions=128, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def _lr_at(step: int, config: ToySFTConfig) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine decay to 0.1 * lr."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_sft(config: ToySFTConfig, out_dir: str | Path, *, progress: bool = True) -> dict:
    """Train the toy SFT policy and save it to ``out_dir``; returns the summary dict (also saved)."""
    import torch
    from tqdm.auto import tqdm

    from alphapo.toyworld.tokenizer import build_toy_tokenizer

    out = Path(out_dir)
    start = time.time()
    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        tokenizer = build_toy_tokenizer()
        train_tasks, _ = split_tasks(config.seed, config.n_train, config.n_heldout)
        demos = demonstrations(train_tasks, config.seed, p_error=config.p_error, p_verbose=config.p_verbose,
                               p_systematic=config.p_systematic)
        encoded = [encode_example(tokenizer, d["prompt"], d["response"]) for d in demos]
        model = build_policy(tokenizer, config)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                      betas=(0.9, 0.98))
        gen = torch.Generator().manual_seed(config.seed)
        order: list[int] = []
        losses = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            for step in tqdm(range(config.steps), desc="toy sft", disable=not progress):
                if len(order) < config.batch_size:  # reshuffle once per epoch
                    order += torch.randperm(len(encoded), generator=gen).tolist()
                batch, order = order[:config.batch_size], order[config.batch_size:]
                width = max(len(encoded[i][0]) for i in batch)
                ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
                labels = torch.full((len(batch), width), -100, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    x, y = encoded[i]
                    ids[row, :len(x)], labels[row, :len(y)], mask[row, :len(x)] = (
                        torch.tensor(x), torch.tensor(y), 1)
                for group in optimizer.param_groups:
                    group["lr"] = _lr_at(step, config)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision == "bf16-autocast"):
                    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                losses.append(round(loss.item(), 5))
        model.eval()
        summary = {"config": asdict(config), "n_demonstrations": len(demos), "final_loss": losses[-1],
                   "loss_curve": losses[:: max(1, len(losses) // 100)],
                   "n_parameters": sum(p.numel() for p in model.parameters()),
                   "wall_time_s": round(time.time() - start, 2)}
        save_pretrained_atomic(out, model, tokenizer, {"sft_summary.json": summary})
        return summary
    finally:
        torch.set_num_threads(old_threads)



def save_pretrained_atomic(out_dir: str | Path, model, tokenizer, json_files: dict[str, dict]) -> Path:
    """Save a model + tokenizer (HF format, safetensors) and JSON side files as one folder, atomically.

    Everything is written into ``alphapo.io.atomic_dir``'s temporary sibling folder, which replaces
    ``out_dir`` only once complete, so an interrupted save never leaves a half-written model where a
    loader would find it.
    """
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name, payload in json_files.items():
            (tmp / name).write_text(json.dumps(payload, indent=2))
    return out

def measure_targets(model_dir: str | Path, *, k: int = 5, temperature: float = 0.8, sample_seed: int = 1234,
                    seed: int | None = None, n_train: int | None = None, n_heldout: int | None = None) -> dict:
    """The SFT targets on held-out prompts: mean gold score and share of prompts with spread >= 2.

    The task split (seed, n_train, n_heldout) is read from the policy's ``sft_summary.json``; pass them to
    override (or for a policy trained elsewhere). Sampling uses ``alphapo.generation.generate_responses``.
    """
    from alphapo.generation.sampling import generate_responses, load_policy
    from alphapo.toyworld.judge import GoldJudge

    summary_path = Path(model_dir) / "sft_summary.json"
    saved = json.loads(summary_path.read_text())["config"] if summary_path.is_file() else {}
    seed = saved.get("seed", 0) if seed is None else seed
    n_train = saved.get("n_train", ToySFTConfig.n_train) if n_train is None else n_train
    n_heldout = saved.get("n_heldout", ToySFTConfig.n_heldout) if n_heldout is None else n_heldout
    model, tokenizer = load_policy(model_dir, device="cpu")
    _, heldout = split_tasks(seed, n_train, n_heldout)
    prompts = [t.messages() for t in heldout]
    samples = generate_responses(model, tokenizer, prompts, k=k, temperature=temperature, max_new_tokens=24,
                                 batch_size=100, seed=sample_seed, progress=False).responses
    judge = GoldJudge()
    scores = [judge.score([p] * k, s) for p, s in zip(prompts, samples)]
    flat = [x for row in scores for x in row]
    spreads = [max(row) - min(row) for row in scores]
    by_kind: dict[str, list[float]] = {}
    for t, row in zip(heldout, scores):
        by_kind.setdefault(t.kind, []).extend(row)
    return {
        "mean_gold_score": sum(flat) / len(flat),
        "frac_spread_ge_2": sum(s >= 2 for s in spreads) / len(spreads),
        "mean_spread": sum(spreads) / len(spreads),
        "mean_by_task": {kind: sum(v) / len(v) for kind, v in sorted(by_kind.items())},
        "n_prompts": len(prompts), "k": k, "temperature": temperature, "seed": seed,
        "examples": [{"user": heldout[i].user, "samples": samples[i], "scores": scores[i]}
                     for i in range(min(5, len(heldout)))],
    }
