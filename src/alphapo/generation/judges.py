"""Judges: score (prompt, response) pairs, or compare two responses to one prompt.

Two interfaces (``typing.Protocol``, so any object with the method is a judge; no base class):

- ``Judge.score(prompts, responses) -> list[float]``: one scalar per pair, higher is better. A reward
  model, the toy world's gold judge, a length counter.
- ``PairwiseJudge.compare(prompts, responses_a, responses_b) -> list[float]``: the probability that
  ``a`` beats ``b`` (a PairRM-like ranker).

``prompts`` are chat conversations (``list[{"role", "content"}]``, usually one user turn); responses are
plain strings (the assistant's reply).

What is here:

- ``HFRewardJudge(path)``: any Hugging Face ``AutoModelForSequenceClassification`` reward model from a
  local folder; the (prompt, response) conversation is rendered with the reward model's own chat
  template and the logit of ``label_index`` is the score.
- ``LengthJudge``, ``FunctionJudge``: trivial judges (length in characters; any Python function), for
  tests and sanity checks.
- ``NoisyJudge(judge, std, seed)``, ``LengthBiasedJudge(judge, bias)``: wrappers that turn any judge into
  a proxy that disagrees with it, the way PairRM disagrees with GPT-4. The noise is a *fixed* function of
  (seed, prompt, response): the same pair always gets the same noisy score, whatever the batch or order,
  like a real (imperfect but deterministic) reward model.
- ``BradleyTerryPairwise(judge)``: a scalar judge as a pairwise one, ``P(a > b) = sigmoid((s_a - s_b) /
  scale)``. ``pairwise_scores(pairwise, prompts, candidates)``: a pairwise judge as a ranker of k
  candidates (mean position-symmetrised win probability against the others, as PairRM's ranking does).
  ``score_candidates(judge, prompts, candidates)`` takes either kind and returns one score per candidate.
- A registry of judge *specs* for the command line: ``make_judge("hf:PATH")``, ``make_judge("length")``,
  ``make_judge("py:module:attr")``. Other areas add their own prefix with ``register_judge(prefix,
  factory)``; the toy world registers ``toy-gold``, ``toy-noisy``... from ``alphapo.toyworld`` (imported
  lazily on the first unknown prefix, so ``alphapo generate --judge toy-gold`` just works).

Example::

    from alphapo.generation.judges import make_judge, NoisyJudge
    judge = NoisyJudge(make_judge("hf:/models/my-rm"), std=0.5, seed=1)
    judge.score([[{"role": "user", "content": "Hi"}]], ["Hello!"])
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from alphapo.data.tokenize import render_conversation  # re-exported: chat rendering lives in the data layer
from alphapo.errors import UserError

Message = dict[str, str]
Conversation = list[Message]

__all__ = [
    "Judge",
    "PairwiseJudge",
    "HFRewardJudge",
    "LengthJudge",
    "FunctionJudge",
    "NoisyJudge",
    "LengthBiasedJudge",
    "BradleyTerryPairwise",
    "symmetric_compare",
    "pairwise_scores",
    "score_candidates",
    "register_judge",
    "make_judge",
    "available_judges",
    "render_conversation",
]


@runtime_checkable
class Judge(Protocol):
    """Scores (prompt, response) pairs; one float per pair, higher is better."""

    def score(self, prompts: Sequence[Conversation], responses: Sequence[str]) -> list[float]: ...


@runtime_checkable
class PairwiseJudge(Protocol):
    """Compares two responses to the same prompt; returns P(response_a beats response_b) per row."""

    def compare(self, prompts: Sequence[Conversation], responses_a: Sequence[str],
                responses_b: Sequence[str]) -> list[float]: ...


def _check_lengths(name: str, *seqs: Sequence) -> None:
    sizes = {len(s) for s in seqs}
    if len(sizes) > 1:
        raise UserError(f"{name}: prompts and responses must have the same length, got {[len(s) for s in seqs]}")


class HFRewardJudge:
    """A Hugging Face sequence-classification reward model loaded from a local folder.

    The score of (prompt, response) is ``logits[label_index]`` of the model on the conversation rendered
    with the reward model's chat template (or plain text if it has none). The model pools the last
    non-padding token itself (``*ForSequenceClassification``); we pad on the right and process in
    length-sorted batches of ``batch_size`` so padding is small.

    Deviations: with ``max_length`` set, over-long inputs are truncated on the *left* (the prompt start is
    lost, the response kept) and counted in ``n_truncated``; reward models usually score truncated inputs
    without telling you.
    """

    def __init__(self, path: str | Path, *, batch_size: int = 8, max_length: int | None = None,
                 device: str | None = None, dtype: str | None = None, label_index: int = 0,
                 progress: bool = True):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        if not path.exists():
            raise UserError(f"reward model folder {str(path)!r} does not exist (give a local path: hf:PATH)")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        kwargs: dict[str, Any] = {}
        if dtype is not None:
            kwargs["dtype"] = getattr(torch, dtype)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs).eval()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            # batched pooling needs it: the model looks for the last token that is not padding
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "left"
        num_labels = self.model.config.num_labels
        if not 0 <= label_index < num_labels:
            raise UserError(f"label_index={label_index} but the reward model at {str(path)!r} has "
                            f"{num_labels} label(s)")
        self.label_index = label_index
        self.batch_size = batch_size
        self.max_length = max_length
        self.n_truncated = 0
        self.progress = progress

    def score(self, prompts: Sequence[Conversation], responses: Sequence[str]) -> list[float]:
        import torch
        from tqdm.auto import tqdm

        _check_lengths("HFRewardJudge.score", prompts, responses)
        rendered = [render_conversation(self.tokenizer, p, r) for p, r in zip(prompts, responses)]
        encoded = [self.tokenizer(text, add_special_tokens=not templated)["input_ids"]
                   for text, templated in rendered]
        if self.max_length is not None:
            self.n_truncated += sum(len(ids) > self.max_length for ids in encoded)
            encoded = [ids[-self.max_length:] for ids in encoded]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        scores = [0.0] * len(encoded)
        pad = self.tokenizer.pad_token_id
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc="judge", unit="batch", leave=False,
                          disable=not self.progress or len(starts) < 2):
            idx = order[start:start + self.batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, :len(encoded[i])] = torch.tensor(encoded[i])
                mask[row, :len(encoded[i])] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            for row, i in enumerate(idx):
                scores[i] = float(logits[row, self.label_index].float())
        return scores


class LengthJudge:
    """Score = response length in characters (``per_char`` times it). A sanity / test judge."""

    def __init__(self, per_char: float = 1.0):
        self.per_char = per_char

    def score(self, prompts: Sequence[Conversation], responses: Sequence[str]) -> list[float]:
        _check_lengths("LengthJudge.score", prompts, responses)
        return [self.per_char * len(r) for r in responses]


class FunctionJudge:
    """Wrap ``fn(prompt_messages, response) -> float`` as a ``Judge``."""

    def __init__(self, fn: Callable[[Conversation, str], float]):
        self.fn = fn

    def score(self, prompts: Sequence[Conversation], responses: Sequence[str]) -> list[float]:
        _check_lengths("FunctionJudge.score", prompts, responses)
        return [float(self.fn(p, r)) for p, r in zip(prompts, responses)]


def _pair_normal(seed: int, prompt: Conversation, response: str) -> float:
    """A standard normal draw that is a fixed function of (seed, prompt, response).

    Two uniforms from a BLAKE2b digest, then Box-Muller. Same inputs, same draw, on every machine.
    """
    key = json.dumps([seed, prompt, response], sort_keys=True, ensure_ascii=False).encode()
    digest = hashlib.blake2b(key, digest_size=16).digest()
    u1 = (int.from_bytes(digest[:8], "little") + 1) / (2**64 + 1)  # in (0, 1): log is finite
    u2 = int.from_bytes(digest[8:], "little") / 2**64
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


class NoisyJudge:
    """``judge`` plus Gaussian noise of standard deviation ``std``: a proxy that disagrees with ``judge``.

    The noise for a pair is a fixed function of ``(seed, prompt, response)``, so scores do not depend on
    batching or call order and re-scoring a response gives the same value. With ``clip=(lo, hi)`` the noisy
    score is clipped (e.g. to a 1..10 scale).
    """

    def __init__(self, judge: Judge, std: float, *, seed: int = 0, clip: tuple[float, float] | None = None):
        if std < 0:
            raise UserError(f"NoisyJudge: std must be >= 0, got {std}")
        self.judge, self.std, self.seed, self.clip = judge, float(std), int(seed), clip

    def score(self, prompts: Sequence[Conversation], responses: Sequence[str]) -> list[float]:
        base = self.judge.score(prompts, responses)
        out = [s + self.std * _pair_normal(self.seed, p, r) for s, p, r in zip(base, prompts, responses)]
        if self.clip is not None:
            lo, hi = self.clip
            out = [min(max(s, lo), hi) for s in out]
        return out


class LengthBiasedJudge:
    """``judge`` plus ``bias * (length(response) - center)``: a proxy that rewards verbosity (bias > 0).

    ``length_fn`` defaults to characters; pass e.g. ``lambda r: len(r.split())`` for words. Optional
    ``clip=(lo, hi)``.
    """

    def __init__(self, judge: Judge, bias: float, *, center: float = 0.0,
                 length_fn: Callable[[str], float] = len, clip: tuple[float, float] | None = None):
        self.judge, self.bias, self.center, self.length_fn, self.clip = judge, float(bias), center, length_fn, clip

    def score(self, prompts: Sequence[Conversation], responses: Sequence[str]) -> list[float]:
        base = self.judge.score(prompts, responses)
        out = [s + self.bias * (self.length_fn(r) - self.center) for s, r in zip(base, responses)]
        if self.clip is not None:
            lo, hi = self.clip
            out = [min(max(s, lo), hi) for s in out]
        return out


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


class BradleyTerryPairwise:
    """A scalar ``Judge`` as a ``PairwiseJudge``: ``P(a > b) = sigmoid((s_a - s_b) / scale)`` (Bradley-Terry).

    Equal scores give 0.5. ``scale`` sets how sharp the preference is (scores on 1..10: scale=1 gives
    P=0.73 for a one-point gap).
    """

    def __init__(self, judge: Judge, *, scale: float = 1.0):
        if scale <= 0:
            raise UserError(f"BradleyTerryPairwise: scale must be > 0, got {scale}")
        self.judge, self.scale = judge, scale

    def compare(self, prompts: Sequence[Conversation], responses_a: Sequence[str],
                responses_b: Sequence[str]) -> list[float]:
        _check_lengths("BradleyTerryPairwise.compare", prompts, responses_a, responses_b)
        n = len(prompts)
        s = self.judge.score(list(prompts) * 2, list(responses_a) + list(responses_b))
        return [_sigmoid((s[i] - s[n + i]) / self.scale) for i in range(n)]


def symmetric_compare(pairwise: PairwiseJudge, prompts: Sequence[Conversation], responses_a: Sequence[str],
                      responses_b: Sequence[str]) -> list[float]:
    """``P(a > b)`` averaged over both presentation orders: ``(c(a, b) + 1 - c(b, a)) / 2``.

    Pairwise rankers (and LLM judges) have a position bias; asking both ways cancels its first-order part.
    """
    n = len(prompts)
    both = pairwise.compare(list(prompts) * 2, list(responses_a) + list(responses_b),
                            list(responses_b) + list(responses_a))
    return [(both[i] + 1.0 - both[n + i]) / 2.0 for i in range(n)]


def pairwise_scores(pairwise: PairwiseJudge, prompts: Sequence[Conversation],
                    candidates: Sequence[Sequence[str]]) -> list[list[float]]:
    """Rank k candidates per prompt with a pairwise judge; returns one score in [0, 1] per candidate.

    score_i = mean over j != i of P(i > j), each P position-symmetrised (``symmetric_compare``). This is
    the average win probability against the other candidates (a Borda count with soft wins), the way
    PairRM ranks a candidate set. All k(k-1)/2 pairs of all prompts go to the judge in one call.
    """
    _check_lengths("pairwise_scores", prompts, candidates)
    rows_p, rows_a, rows_b, where = [], [], [], []
    for n, (prompt, cands) in enumerate(zip(prompts, candidates)):
        for i in range(len(cands)):
            for j in range(i + 1, len(cands)):
                rows_p.append(prompt)
                rows_a.append(cands[i])
                rows_b.append(cands[j])
                where.append((n, i, j))
    probs = symmetric_compare(pairwise, rows_p, rows_a, rows_b) if rows_p else []
    wins = [[0.0] * len(c) for c in candidates]
    for (n, i, j), p in zip(where, probs):
        wins[n][i] += p
        wins[n][j] += 1.0 - p
    return [[w / max(len(c) - 1, 1) for w in row] for row, c in zip(wins, candidates)]


def score_candidates(judge: Judge | PairwiseJudge, prompts: Sequence[Conversation],
                     candidates: Sequence[Sequence[str]]) -> list[list[float]]:
    """One score per candidate response (``candidates[n]`` are the responses to ``prompts[n]``).

    A scalar ``Judge`` scores all responses in one flat call; a ``PairwiseJudge`` ranks each candidate set
    with ``pairwise_scores``.
    """
    _check_lengths("score_candidates", prompts, candidates)
    if hasattr(judge, "score"):
        flat_p = [p for p, c in zip(prompts, candidates) for _ in c]
        flat_r = [r for c in candidates for r in c]
        flat = judge.score(flat_p, flat_r)
        if len(flat) != len(flat_r):
            raise UserError(f"judge {type(judge).__name__} returned {len(flat)} scores for {len(flat_r)} responses")
        out, pos = [], 0
        for c in candidates:
            out.append([float(s) for s in flat[pos:pos + len(c)]])
            pos += len(c)
        return out
    if hasattr(judge, "compare"):
        return pairwise_scores(judge, prompts, candidates)
    raise UserError(f"{type(judge).__name__} is not a judge: it needs a score() or compare() method")


# ----------------------------------------------------------------------------------------------------
# Registry of judge specs ("prefix" or "prefix:argument") for the command line.

JudgeFactory = Callable[[str], Any]
_REGISTRY: dict[str, tuple[JudgeFactory, str]] = {}
# Modules imported (once) when a spec's prefix is unknown: they call register_judge() on import.
_PLUGIN_MODULES = ("alphapo.toyworld",)
_plugins_loaded = False


def register_judge(prefix: str, factory: JudgeFactory, *, help: str = "") -> None:
    """Make ``make_judge(f"{prefix}:{arg}")`` return ``factory(arg)`` (``arg`` is "" for a bare prefix).

    The factory returns a ``Judge`` or a ``PairwiseJudge``. Re-registering a prefix replaces it.
    """
    if not prefix or ":" in prefix:
        raise ValueError(f"judge prefix must be non-empty and contain no ':', got {prefix!r}")
    _REGISTRY[prefix] = (factory, help)


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for name in _PLUGIN_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise


def available_judges() -> dict[str, str]:
    """``{prefix: help}`` for every registered judge spec (built-ins and plugins)."""
    _load_plugins()
    return {k: h for k, (_, h) in sorted(_REGISTRY.items())}


def make_judge(spec: str) -> Any:
    """Build a judge from a spec string: ``hf:PATH``, ``length``, ``py:MODULE:ATTR``, ``toy-gold``...

    Raises ``UserError`` listing the known prefixes when the prefix is unknown.
    """
    prefix, _, arg = spec.partition(":")
    if prefix not in _REGISTRY:
        _load_plugins()
    if prefix not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise UserError(f"unknown judge {spec!r}: the prefix {prefix!r} is not registered; known: {known}")
    factory, _ = _REGISTRY[prefix]
    return factory(arg)


def _hf_factory(arg: str) -> HFRewardJudge:
    if not arg:
        raise UserError("judge spec 'hf' needs a path: hf:PATH (a local sequence-classification model)")
    return HFRewardJudge(arg)


def _py_factory(arg: str) -> Any:
    module_name, _, attr = arg.partition(":")
    if not module_name or not attr:
        raise UserError(f"judge spec 'py:{arg}' must be py:MODULE:ATTR (ATTR a judge or a no-argument factory)")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise UserError(f"judge spec 'py:{arg}': cannot load {attr!r} from {module_name!r}: {err}") from err
    if isinstance(obj, type) or not (hasattr(obj, "score") or hasattr(obj, "compare")):
        obj = obj()  # a class or a factory function
    return obj


def _length_factory(arg: str) -> LengthJudge:
    try:
        return LengthJudge(float(arg) if arg else 1.0)
    except ValueError as err:
        raise UserError(f"judge spec 'length:{arg}': the argument must be a number (score per character)") from err


register_judge("hf", _hf_factory, help="hf:PATH - a local Hugging Face sequence-classification reward model")
register_judge("length", _length_factory, help="length[:PER_CHAR] - response length in characters (sanity judge)")
register_judge("py", _py_factory, help="py:MODULE:ATTR - a judge object, or a factory called with no arguments")
