"""Training data: load + tokenise through ``alphapo.data``, split off eval, and plan length-grouped batches.

Records and tokenised examples follow the data contract (``alphapo.data.schema``): a pairwise example has
``id``, ``prompt_input_ids``, ``chosen_input_ids``, ``rejected_input_ids`` (completion tokens, EOS
included) and optional ``chosen_score`` / ``rejected_score``; a multi-response example has
``responses_input_ids`` (k lists) and ``scores`` (k floats).

``alphapo.data.load_preferences`` / ``tokenize_preferences`` do the reading and tokenising (any format and
schema they accept: JSONL/JSON/Parquet/CSV, plain or conversational, pairs or k responses).

Batch plan (:func:`plan_epoch`): the epoch order is a permutation drawn from
``torch.Generator().manual_seed(seed + epoch)``, a pure function of (seed, epoch), which is what makes
resume exact: a resumed run replays the same plan and skips the batches already done. Global batches
(``per_device x accumulation x processes`` examples, one optimizer step) are cut from that order; with
``group_by_length`` the order is first split into mega-batches of 16 global batches, each sorted by
length (:func:`layout_tokens`: the tokens the forward's layout really costs, the prompt once under
prefix sharing) so that a global batch holds examples of similar length, and the global batches of a mega-batch
are shuffled again so long batches do not always come first. Inside a global batch, examples are sorted
by length and dealt into micro-batches, so padding is cut further. The *set* of examples of each
optimizer step depends only on the global batch size, never on how it is split into micro-batches or
processes: per-device 4 x accumulation 1 and 1 x 4 train on identical steps.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from alphapo.data.pairs import select_pairs
from alphapo.errors import UserError

MEGA_BATCH = 16  # global batches per length-sorting window


def is_multi(example: dict[str, Any]) -> bool:
    return "responses_input_ids" in example


def example_length(example: dict[str, Any]) -> int:
    """Sequence tokens of the example: ``len(prompt) + len(response)`` summed over its responses (the
    prompt counted once per response). This is what ``tokens_per_second`` counts, whatever the layout."""
    p = len(example["prompt_input_ids"])
    if is_multi(example):
        return sum(p + len(r) for r in example["responses_input_ids"])
    return 2 * p + len(example["chosen_input_ids"]) + len(example["rejected_input_ids"])


def layout_tokens(example: dict[str, Any], layout: str) -> int:
    """Tokens the example costs in a forward under ``layout`` (``alphapo.training.logps.LAYOUTS``): the
    batch length key of :func:`plan_epoch` and :func:`split_global_batch`.

    ``"shared"`` and ``"packed"`` encode the prompt once, then every response: ``len(prompt) + sum
    len(response)``. ``"plain"`` encodes one row per response: :func:`example_length`. A pair with a
    10-token prompt and responses of 4 and 6 tokens costs 20 shared and 30 plain.
    """
    if layout == "plain":
        return example_length(example)
    if layout not in ("shared", "packed"):
        raise ValueError(f"layout must be one of shared, packed, plain, got {layout!r}")
    return len(example["prompt_input_ids"]) + sum(len(r) for r in responses_of(example))


def responses_of(example: dict[str, Any]) -> list[list[int]]:
    """The example's response token lists: its ``k`` responses, or ``[chosen, rejected]`` for a pair."""
    if is_multi(example):
        return example["responses_input_ids"]
    return [example["chosen_input_ids"], example["rejected_input_ids"]]


def load_examples(path: str, tokenizer, *, split: str, columns, skip_invalid: bool, max_length,
                  max_prompt_length, prompt_truncation: str, chat_template: str = "auto",
                  log=None) -> list[dict[str, Any]]:
    """Read and tokenise a preference source into examples with ``alphapo.data``.

    ``chat_template`` (``auto|always|never``) is :func:`alphapo.data.tokenize_preferences`'s rule. ``log``
    (e.g. ``print``) receives one line per thing the user must know, so none of it is silent: rows skipped
    under ``skip_invalid`` (count per reason, as ``alphapo data convert`` prints them; pairs that tokenise
    identically are skipped too, and counted), data warnings
    (inverted scores, duplicate ids), tokenisation warnings and truncation.
    """
    from alphapo.data import load_preferences, tokenize_preferences

    records = load_preferences(path, columns=columns, split=split, skip_invalid=skip_invalid)
    examples, report = tokenize_preferences(records, tokenizer, max_length=max_length,
                                            max_prompt_length=max_prompt_length,
                                            prompt_truncation=prompt_truncation, chat_template=chat_template,
                                            on_identical="skip" if skip_invalid else "error")
    if log is not None:
        identical = ([f"skipped {report.identical_skipped} pair(s) whose chosen and rejected tokenise identically "
                      f"(e.g. ids {report.identical_ids[:5]})"] if report.identical_skipped else [])
        for line in records.report.notices() + identical + [f"warning: {w}" for w in report.warnings]:
            log(f"{path}: {line}")
        if report.truncated_rows:
            log(f"{path}: {report.truncated_rows} of {len(examples)} examples truncated to max_length={max_length} "
                f"/ max_prompt_length={max_prompt_length} (e.g. ids {report.truncated_ids[:5]})")
    return [dict(e) for e in examples]


def split_eval(examples: list[dict[str, Any]], fraction: float, seed: int):
    """Hold out about ``fraction`` of the examples as eval, whole groups at a time, chosen by ``seed``.

    A group is ``example["group"]`` (:func:`alphapo.data.tokenize.split_group`: the source pair of
    relabeled records, else the prompt), so the swapped twin of a relabeled pair, or another pair of the
    same prompt, never lands on the other side. Groups are drawn in a seeded random order until at least
    ``round(fraction * n)`` examples (at least 1) are held out; examples without a group are their own
    group (then this is the plain per-example split).
    """
    if fraction <= 0:
        return examples, []
    n = len(examples)
    n_eval = max(1, round(fraction * n))
    groups: dict[Any, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(ex.get("group", ("example", i)), []).append(i)
    members = list(groups.values())
    perm = torch.randperm(len(members), generator=torch.Generator().manual_seed(seed)).tolist()
    held: set[int] = set()
    for g in perm:
        if len(held) >= n_eval:
            break
        held.update(members[g])
    if len(held) >= n:
        raise UserError(f"data.eval_fraction={fraction} leaves no training examples out of {n} (the split keeps "
                        f"the {len(members)} prompt / source-pair groups whole)")
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def data_fingerprint(examples: list[dict[str, Any]]) -> str:
    """SHA-256 of the tokenised examples (ids and token lists), order-sensitive."""
    h = hashlib.sha256()
    for ex in examples:
        keys = ("id", "prompt_input_ids", "chosen_input_ids", "rejected_input_ids", "responses_input_ids")
        h.update(json.dumps({k: ex.get(k) for k in keys}, separators=(",", ":")).encode())
    return h.hexdigest()


def steps_per_epoch(n_examples: int, global_batch: int) -> int:
    """Optimizer steps per epoch; a final partial global batch is kept (it is never dropped)."""
    return -(-n_examples // global_batch)


def plan_epoch(lengths: list[int], *, global_batch: int, seed: int, epoch: int,
               group_by_length: bool) -> list[list[int]]:
    """The epoch's global batches as lists of example indices (pure function of its arguments)."""
    gen = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(len(lengths), generator=gen).tolist()
    if not group_by_length:
        return [order[i: i + global_batch] for i in range(0, len(order), global_batch)]
    batches: list[list[int]] = []
    window = global_batch * MEGA_BATCH
    for start in range(0, len(order), window):
        mega = sorted(order[start: start + window], key=lambda i: -lengths[i])  # stable: ties keep order
        chunk = [mega[i: i + global_batch] for i in range(0, len(mega), global_batch)]
        shuffle = torch.randperm(len(chunk), generator=gen).tolist()
        batches.extend(chunk[j] for j in shuffle)
    return batches


def split_global_batch(batch: list[int], lengths: list[int], *, micro_batch: int, process_index: int,
                       num_processes: int) -> list[list[int]]:
    """This process's micro-batches of one global batch: length-sorted, dealt round-robin by process.

    The global batch (at most ``micro_batch x accumulation x num_processes`` indices) is sorted by length
    and cut into micro-batches of ``micro_batch``; micro-batch ``j`` goes to process ``j % num_processes``.
    """
    ordered = sorted(batch, key=lambda i: -lengths[i])
    micro = [ordered[i: i + micro_batch] for i in range(0, len(ordered), micro_batch)]
    return micro[process_index::num_processes]


def pairs_from_multi(examples: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """Best- vs worst-scored response of each k-response example as a pair (AlphaPO section 4.1 recipe).

    One selection rule for the whole package: ``alphapo.data.pairs.select_pairs``, applied to
    token sequences. Chosen is the first response with the highest score, rejected the first with the
    lowest; responses that tokenise identically count once (with their mean score), so a response is
    never paired against itself. An example whose scores are all equal carries no preference: its entry
    is None (the caller drops and counts it). The result is aligned with ``examples`` (ids may repeat).
    """
    for ex in examples:
        scores = ex.get("scores")
        if not scores or any(s is None for s in scores):
            raise UserError(f"example {ex['id']!r} has {len(ex['responses_input_ids'])} responses but no "
                            f"score for each; a pairwise loss picks best vs worst by score")
    positions = [str(i) for i in range(len(examples))]  # select_pairs keys by id: use positions
    records, _ = select_pairs(positions, [ex["prompt_input_ids"] for ex in examples],
                              [[tuple(r) for r in ex["responses_input_ids"]] for ex in examples],
                              [ex["scores"] for ex in examples], mode="pairs", empty_responses="keep")
    out: list[dict[str, Any] | None] = [None] * len(examples)
    for r in records:
        ex = examples[int(r["id"])]
        out[int(r["id"])] = {"id": ex["id"], "prompt_input_ids": ex["prompt_input_ids"],
                             "chosen_input_ids": list(r["chosen"][0]["content"]),
                             "rejected_input_ids": list(r["rejected"][0]["content"]),
                             "chosen_score": float(r["score_chosen"]), "rejected_score": float(r["score_rejected"])}
    return out


def multi_from_pair(example: dict[str, Any]) -> dict[str, Any]:
    """A pair as a k = 2 multi-response example (scores required)."""
    return {"id": example["id"], "prompt_input_ids": example["prompt_input_ids"],
            "responses_input_ids": [example["chosen_input_ids"], example["rejected_input_ids"]],
            "scores": [example.get("chosen_score"), example.get("rejected_score")]}


def check_examples(examples: list[dict[str, Any]], *, multi: bool, required: frozenset[str], where: str) -> None:
    """Raise ``UserError`` unless ``examples`` can feed the loss: non-empty, one k for multi-response
    losses with a score per response, and the scores a pairwise loss requires."""
    if not examples:
        raise UserError(f"{where}: no examples")
    if multi:
        k = len(examples[0]["responses_input_ids"])
        for ex in examples:
            if len(ex["responses_input_ids"]) != k:
                raise UserError(f"{where}: example {ex['id']!r} has {len(ex['responses_input_ids'])} "
                                f"responses, the first has {k}; multi-response losses need the same k")
            if any(s is None for s in ex.get("scores") or [None]):
                raise UserError(f"{where}: example {ex['id']!r} lacks scores; multi-response losses "
                                f"need a score per response")
        return
    for key in ("chosen_score", "rejected_score"):
        if key.replace("score", "scores") in required:
            bad = [ex["id"] for ex in examples if ex.get(key) is None]
            if bad:
                raise UserError(f"{where}: the loss needs {key.replace('score', 'scores')} but "
                                f"{len(bad)} example(s) lack {key}, e.g. id {bad[0]!r}")
