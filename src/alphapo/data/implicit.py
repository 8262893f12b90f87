"""Implicit rewards for IRA relabeling: ``r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))``.

The paper (section 6.2, table 5) relabels a binarized dataset with the DPO implicit reward of a trained
model instead of judge scores. :func:`completion_logps_from_ids` is a deliberately simple implementation of
the summed completion log-probability of token ids (one padded forward pass per batch, ``log_softmax`` gathered at the
completion labels), kept independent of the trainer's optimised :mod:`alphapo.training.logps` so each can
test the other. :func:`implicit_rewards` combines a policy and a reference; :func:`rewards_from_logps`
does the same from precomputed log-probabilities (``alphapo data relabel --logps FILE``).

Shapes: a batch of ``N`` sequences right-padded to ``T`` tokens; logits ``(N, T, V)``; the label of
position ``t`` is token ``t + 1``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from alphapo.data.padding import pad_batch
from alphapo.errors import UserError


def completion_logps_from_ids(model, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *,
                              pad_id: int = 0, batch_size: int = 8) -> list[float]:
    """``sum_t log p(c_t | prompt, c_<t)`` for each (prompt, completion) pair, in float64 sums."""
    import torch

    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    empty = [i for i, p in enumerate(prompts) if not len(p)]
    if empty:  # lo = len(p) - 1 = -1 below would slice from the end: a silently wrong sum
        raise UserError(f"prompt {empty[0]} has no tokens; the first completion token needs context")
    device = next(model.parameters()).device
    out = [0.0] * len(prompts)
    # length-sorted batches: little padding (padding does not change the values, only the cost)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(completions[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ps, cs = [prompts[i] for i in idx], [completions[i] for i in idx]
        ids, attn = pad_batch([list(p) + list(c) for p, c in zip(ps, cs)], pad_id)
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1)  # (N, T-1, V): position t predicts token t+1
        labels = ids[:, 1:].to(device)
        token_lp = logprobs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # (N, T-1)
        for i, (p, c) in enumerate(zip(ps, cs)):
            # completion token j sits at sequence position len(p)+j, predicted from position len(p)+j-1
            lo = len(p) - 1
            out[idx[i]] = float(token_lp[i, lo:lo + len(c)].double().sum())
    return out


def implicit_rewards(examples: Sequence[Mapping], model, ref_model, *, beta: float, pad_id: int = 0,
                     batch_size: int = 8) -> list[tuple[float, float]]:
    """``(beta * (logp_c - ref_logp_c), beta * (logp_r - ref_logp_r))`` per tokenised pair example."""
    if not beta > 0:
        raise UserError(f"beta must be positive, got {beta}")
    for ex in examples:
        if not ex["prompt_input_ids"]:
            raise UserError(f"record {ex['id']!r} has an empty prompt; the first completion token needs context")
    prompts = [ex["prompt_input_ids"] for ex in examples] * 2
    completions = [ex["chosen_input_ids"] for ex in examples] + [ex["rejected_input_ids"] for ex in examples]
    policy = completion_logps_from_ids(model, prompts, completions, pad_id=pad_id, batch_size=batch_size)
    ref = completion_logps_from_ids(ref_model, prompts, completions, pad_id=pad_id, batch_size=batch_size)
    n = len(examples)
    return [(beta * (policy[i] - ref[i]), beta * (policy[n + i] - ref[n + i])) for i in range(n)]


LOGP_FIELDS = ("chosen_logp", "rejected_logp", "ref_chosen_logp", "ref_rejected_logp")


def rewards_from_logps(records: Sequence[Mapping], logps: Mapping[str, Mapping], *,
                       beta: float) -> list[tuple[float, float]]:
    """Implicit rewards from precomputed log-probabilities ``{record id: {chosen_logp, rejected_logp,
    ref_chosen_logp, ref_rejected_logp}}``; every record must have all four."""
    if not beta > 0:
        raise UserError(f"beta must be positive, got {beta}")
    out = []
    for rec in records:
        row = logps.get(str(rec["id"]))
        if row is None:
            raise UserError(f"no log-probabilities for record {rec['id']!r} in the --logps file")
        # bool is an int subclass and NaN/inf are floats: neither is a log-probability (a NaN reward would
        # only fail later, in the goal text, with no record named).
        missing = [k for k in LOGP_FIELDS if isinstance(row.get(k), bool) or not isinstance(row.get(k), (int, float))
                   or not math.isfinite(row[k])]
        if missing:
            raise UserError(f"log-probabilities of record {rec['id']!r} lack finite numeric {', '.join(missing)}")
        out.append((beta * (row["chosen_logp"] - row["ref_chosen_logp"]),
                    beta * (row["rejected_logp"] - row["ref_rejected_logp"])))
    return out
