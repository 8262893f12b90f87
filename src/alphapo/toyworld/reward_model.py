"""A small Bradley-Terry reward model trained on gold-labelled toy pairs: a learned, imperfect judge.

In the papers, on-policy pairs are ranked by a learned reward model (PairRM, ArmoRM) that only
approximates the judge used for evaluation (GPT-4). This module makes the toy world's equivalent:

1. pairs: for each training task, two independent noisy-teacher responses (``tasks.teacher_response``),
   labelled by the gold judge (higher gold score = chosen; exact ties are dropped and counted);
2. model: a tiny ``LlamaForSequenceClassification`` (``num_labels=1``) from scratch, or initialised from
   a toy SFT policy (``init=PATH``), reading the conversation rendered with the toy chat template (the
   same rendering as ``alphapo.generation.hf_judge.HFRewardJudge``: full chat, no generation prompt, no
   extra special tokens), pooled at the last token (``<|end|>``);
3. loss: Bradley-Terry, ``-log sigmoid(r(x, y_w) - r(x, y_l))`` (Ouyang et al. 2022, eq. 1, without the
   K-choose-2 grouping), mean over the batch, AdamW with cosine decay;
4. report: accuracy on held-out pairs (tasks never trained on), the fraction where
   ``r(chosen) > r(rejected)`` (ties count half), plus the Pearson correlation of ``r`` with the gold
   score over the held-out responses.

The saved folder is a plain HF sequence-classification model with tokenizer and chat template, so
``alphapo generate --judge hf:PATH`` (``HFRewardJudge``) loads it like any hub reward model.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from alphapo.toyworld.judge import GoldJudge
from alphapo.toyworld.sft import save_pretrained_atomic
from alphapo.toyworld.tasks import Task, split_tasks, teacher_response


@dataclass
class RewardModelConfig:
    """Everything that defines a toy reward-model run."""

    seed: int = 0
    n_train: int = 3000  # training tasks (one pair attempt each)
    n_heldout: int = 400  # held-out tasks for the accuracy report
    p_error: float = 0.5
    p_systematic: float = 0.8  # share of the teacher's errors that are the task's systematic mistake
    p_verbose: float = 0.5
    init: str | None = None  # a toy SFT policy folder to start from (default: random init)
    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 256
    steps: int = 600
    batch_size: int = 32  # pairs per step
    lr: float = 2e-3
    threads: int = 1  # torch threads (1 is fastest for tiny models); 0 keeps torch's default


def gold_pairs(tasks: list[Task], seed: int, *, p_error: float, p_verbose: float,
               p_systematic: float = 0.0) -> tuple[list[dict], int]:
    """Two teacher responses per task, labelled by the gold judge; returns (pairs, n_ties_dropped).

    Each pair is ``{"prompt", "chosen", "rejected", "score_chosen", "score_rejected"}`` (strings for the
    responses).
    """
    rng = random.Random(f"toyworld-rm-pairs-{seed}")
    judge = GoldJudge()
    pairs, ties = [], 0
    for task in tasks:
        a = teacher_response(task, rng, p_error=p_error, p_systematic=p_systematic, p_verbose=p_verbose)
        b = teacher_response(task, rng, p_error=p_error, p_systematic=p_systematic, p_verbose=p_verbose)
        sa, sb = judge.score([task.messages()] * 2, [a, b])
        if sa == sb:
            ties += 1
            continue
        (c, sc), (r, sr) = ((a, sa), (b, sb)) if sa > sb else ((b, sb), (a, sa))
        pairs.append({"prompt": task.messages(), "chosen": c, "rejected": r, "score_chosen": sc,
                      "score_rejected": sr})
    return pairs, ties


def _encode(tokenizer, prompt: list[dict], response: str) -> list[int]:
    text = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": response}], tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _batch(tokenizer, seqs: list[list[int]]):
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)], mask[i, :len(s)] = torch.tensor(s), 1
    return ids, mask


def _rewards(model, tokenizer, seqs: list[list[int]], batch_size: int = 256) -> list[float]:
    import torch

    out: list[float] = []
    with torch.no_grad():
        for lo in range(0, len(seqs), batch_size):
            ids, mask = _batch(tokenizer, seqs[lo:lo + batch_size])
            out += model(input_ids=ids, attention_mask=mask).logits[:, 0].tolist()
    return out


def _pearson(x: list[float], y: list[float]) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def pair_accuracy(chosen_rewards: list[float], rejected_rewards: list[float]) -> float:
    """Fraction of pairs with ``r(chosen) > r(rejected)``; exact ties count half."""
    wins = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen_rewards, rejected_rewards))
    return wins / len(chosen_rewards)


def build_reward_model(tokenizer, config: RewardModelConfig):
    """A tiny ``LlamaForSequenceClassification`` with one output, random or from ``config.init``."""
    import torch
    from transformers import LlamaForSequenceClassification

    from alphapo.tiny_models import tiny_llama_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if config.init:
            model = LlamaForSequenceClassification.from_pretrained(config.init, num_labels=1)
        else:
            cfg = tiny_llama_config(
                len(tokenizer), hidden_size=config.hidden_size, layers=config.layers, heads=config.heads,
                kv_heads=config.kv_heads, intermediate_size=config.intermediate_size, max_positions=128,
                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id)
            cfg.num_labels = 1
            model = LlamaForSequenceClassification(cfg)
    model.config.pad_token_id = tokenizer.pad_token_id  # batched pooling finds the last non-pad token
    return model


def train_reward_model(config: RewardModelConfig, out_dir: str | Path, *, progress: bool = True) -> dict:
    """Train the Bradley-Terry reward model, save it (HF format) to ``out_dir``; returns the summary."""
    import torch
    from tqdm.auto import tqdm

    from alphapo.toyworld.tokenizer import build_toy_tokenizer

    start = time.time()
    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        tokenizer = build_toy_tokenizer()
        train_tasks, held_tasks = split_tasks(config.seed + 10_000, config.n_train, config.n_heldout)
        train_pairs, train_ties = gold_pairs(train_tasks, config.seed, p_error=config.p_error,
                                             p_verbose=config.p_verbose, p_systematic=config.p_systematic)
        held_pairs, held_ties = gold_pairs(held_tasks, config.seed + 1, p_error=config.p_error,
                                           p_verbose=config.p_verbose, p_systematic=config.p_systematic)
        enc = [(_encode(tokenizer, p["prompt"], p["chosen"]), _encode(tokenizer, p["prompt"], p["rejected"]))
               for p in train_pairs]
        model = build_reward_model(tokenizer, config)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.98))
        gen = torch.Generator().manual_seed(config.seed)
        order: list[int] = []
        losses, accs = [], []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            for step in tqdm(range(config.steps), desc="toy reward model", disable=not progress):
                if len(order) < config.batch_size:
                    order += torch.randperm(len(enc), generator=gen).tolist()
                idx, order = order[:config.batch_size], order[config.batch_size:]
                ids, mask = _batch(tokenizer, [enc[i][0] for i in idx] + [enc[i][1] for i in idx])
                r = model(input_ids=ids, attention_mask=mask).logits[:, 0]
                margin = r[:len(idx)] - r[len(idx):]
                loss = -torch.nn.functional.logsigmoid(margin).mean()
                warm = min(1.0, (step + 1) / 30)
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * warm * (0.1 + 0.45 * (1 + math.cos(math.pi * step / config.steps)))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                losses.append(round(loss.item(), 5))
                accs.append((margin > 0).float().mean().item())
        model.eval()
        rc = _rewards(model, tokenizer, [_encode(tokenizer, p["prompt"], p["chosen"]) for p in held_pairs])
        rr = _rewards(model, tokenizer, [_encode(tokenizer, p["prompt"], p["rejected"]) for p in held_pairs])
        gold = [p["score_chosen"] for p in held_pairs] + [p["score_rejected"] for p in held_pairs]
        summary = {
            "config": asdict(config),
            "n_train_pairs": len(train_pairs), "n_train_ties_dropped": train_ties,
            "n_heldout_pairs": len(held_pairs), "n_heldout_ties_dropped": held_ties,
            "heldout_accuracy": pair_accuracy(rc, rr),
            "heldout_pearson_with_gold": _pearson(rc + rr, gold),
            "train_accuracy_last_50_steps": sum(accs[-50:]) / len(accs[-50:]),
            "final_loss": losses[-1], "loss_curve": losses[:: max(1, len(losses) // 100)],
            "wall_time_s": round(time.time() - start, 2),
        }
        save_pretrained_atomic(out_dir, model, tokenizer, {"reward_model_summary.json": summary})
        return summary
    finally:
        torch.set_num_threads(old_threads)
