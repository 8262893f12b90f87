"""Judges: score (prompt, response) pairs, or compare two responses to one prompt.

Two interfaces (``typing.Protocol``, so any object with the method is a judge; no base class):

- ``Judge.score(prompts, responses) -> list[float]``: one scalar per pair, higher is better. A reward
  model, the toy world's gold judge, a length counter.
- ``PairwiseJudge.compare(prompts, responses_a, responses_b) -> list[float]``: the probability that
  ``a`` beats ``b`` (a PairRM-like ranker).

``prompts`` are chat conversations (``list[{"role", "content"}]``, usually one user turn); responses are
plain strings (the assistant's reply).

What is here (the protocols and the adapters between them; pure Python, no model):

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
- ``render_conversation``: a (prompt, response) conversation as the text a model reads.

Elsewhere: ``alphapo.generation.hf_judge.HFRewardJudge`` (a local Hugging Face reward model) and
``alphapo.generation.judge_registry`` (judge specs for the command line: ``make_judge("hf:PATH")``).

Example::

    from alphapo.generation.judges import NoisyJudge, LengthJudge
    judge = NoisyJudge(LengthJudge(), std=0.5, seed=1)
    judge.score([[{"role": "user", "content": "Hi"}]], ["Hello!"])
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from alphapo.data.tokenize import render_conversation  # re-exported: chat rendering lives in the data layer
from alphapo.errors import UserError

Message = dict[str, str]
Conversation = list[Message]

__all__ = [
    "Judge",
    "PairwiseJudge",
    "LengthJudge",
    "FunctionJudge",
    "NoisyJudge",
    "LengthBiasedJudge",
    "BradleyTerryPairwise",
    "symmetric_compare",
    "pairwise_scores",
    "score_candidates",
    "render_conversation",
    "check_lengths",
    "Conversation",
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


def check_lengths(name: str, *seqs: Sequence) -> None:
    sizes = {len(s) for s in seqs}
    if len(sizes) > 1:
        raise UserError(f"{name}: prompts and responses must have the same length, got {[len(s) for s in seqs]}")




class LengthJudge:
    """Score = response length in characters (``per_char`` times it). A sanity / test judge."""

    def __init__(self, per_char: float = 1.0):
        self.per_char = per_char

    def score(self, prompts: Sequence[Conversation], responses: Sequence[str]) -> list[float]:
        check_lengths("LengthJudge.score", prompts, responses)
        return [self.per_char * len(r) for r in responses]


class FunctionJudge:
    """Wrap ``fn(prompt_messages, response) -> float`` as a ``Judge``."""

    def __init__(self, fn: Callable[[Conversation, str], float]):
        self.fn = fn

    def score(self, prompts: Sequence[Conversation], responses: Sequence[str]) -> list[float]:
        check_lengths("FunctionJudge.score", prompts, responses)
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


def _clipped(scores: list[float], clip: tuple[float, float] | None) -> list[float]:
    if clip is None:
        return scores
    lo, hi = clip
    return [min(max(s, lo), hi) for s in scores]


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
        return _clipped([s + self.std * _pair_normal(self.seed, p, r) for s, p, r in zip(base, prompts, responses)],
                        self.clip)


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
        return _clipped([s + self.bias * (self.length_fn(r) - self.center) for s, r in zip(base, responses)],
                        self.clip)


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
        check_lengths("BradleyTerryPairwise.compare", prompts, responses_a, responses_b)
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
    check_lengths("pairwise_scores", prompts, candidates)
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
    check_lengths("score_candidates", prompts, candidates)
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
