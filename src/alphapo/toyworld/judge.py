"""The toy world's gold judge, and proxy judges that disagree with it.

The gold judge plays the role of GPT-4 in the papers, except that here its score *is* the truth (the
"ground-truth judge" set-up of the RPO paper): every toy prompt has one exact reference answer, and a
response is graded against it with partial credit.

Scoring (all on whitespace-separated words of the response):

- ``correctness`` in [0, 1]. The *content* words (items and numbers; filler such as "sure !" is
  ignored) are compared with the reference answer.
  List tasks (sort, reverse, filter): ``lcs(content, answer) / max(len(content), len(answer))`` where
  ``lcs`` is the length of the longest common subsequence of the two word sequences (order matters;
  missing or extra words cost). Number tasks (count, arithmetic): the last number ``v`` in the response against
  the answer ``a``: ``max(0, 1 - |v - a| / 4) / len(content)`` (no number: 0; extra content words
  divide the credit, so hedging "3 4 5" does not pay).
- ``conciseness`` in [0, 1]: ``max(0, 1 - extra / 8)`` with ``extra = max(0, n_words - len(answer))``.
- ``score = 1 + 8.5 * correctness + 0.5 * conciseness``, so 1..10; an empty response scores 1.
  Conciseness is a small term on purpose: the gold judge rewards getting the answer right, and length
  is its own axis (measured by the length-controlled win rate and by the proxy judges' length bias),
  so dropping filler alone moves a score by at most 0.5.

Example: "sort these words : pear fox apple", response "sure ! apple pear fox". Content
``apple pear fox`` vs ``apple fox pear``: LCS 2 ("apple pear"), correctness 2/3; 5 words vs 3 gives
extra 2, conciseness 0.75; score 1 + 8.5 * 2/3 + 0.5 * 0.75 = 7.0417.

Arithmetic prompts come in two forms, ``what is 7 pear plus 5 pear`` (what ``make_tasks`` writes) and
``what is 7 plus 5`` (earlier data); both are graded.

Proxy judges (``ProxyJudge``) add a configurable length bias (``+ length_bias * n_words``, like judges
that prefer long answers) and Gaussian noise (``noise_std``). The noise is a deterministic function of
(seed, prompt, response), so a proxy scores the same pair the same way every time, as a reward model
would. Deviation: proxy scores are not clipped to 1..10 (clipping would create artificial ties).

Both implement the ``Judge`` protocol of ``alphapo.generation`` (``score(prompts, responses)``) and
``score_attributes``, which returns the named attributes that multi-attribute relabeling conditions on.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence

from alphapo.errors import UserError
from alphapo.toyworld.tasks import CATEGORIES, CONTENT_WORDS, NUMBER_WORDS, Task

ATTRIBUTES = ("correctness", "conciseness", "length")
CORRECTNESS_WEIGHT = 8.5  # gold score = 1 + 8.5 * correctness + 0.5 * conciseness (1..10)
CONCISENESS_WEIGHT = 0.5

_PATTERNS = (
    ("sort", re.compile(r"^sort these words : (?P<items>[a-z ]+)$")),
    ("reverse", re.compile(r"^reverse these words : (?P<items>[a-z ]+)$")),
    ("count", re.compile(r"^how many words : (?P<items>[a-z ]+)$")),
    ("filter", re.compile(r"^list the (?P<cat>[a-z]+) : (?P<items>[a-z ]+)$")),
    ("arithmetic", re.compile(r"^what is (?P<a>\d+) (?P<op>plus|minus) (?P<b>\d+)$")),
    ("arithmetic", re.compile(r"^what is (?P<a>\d+) (?P<item>[a-z]+) (?P<op>plus|minus) (?P<b>\d+) (?P=item)$")),
)


def parse_task(user: str) -> Task:
    """Recover the task (and its reference answer) from a toy user message; ``UserError`` if not a toy prompt.

    The whole message is tried first, then each of its lines from the last, so a message with an extra
    instruction on its own line (e.g. a reward-augmented goal: "aim for a score of 8\n\nwhat is 2 plus
    3") is still graded on its task.
    """
    candidates = [user] + [line for line in reversed(user.splitlines()) if line.strip()]
    for text in candidates:
        task = _match_task(" ".join(text.split()))
        if task is not None:
            return task
    raise UserError(f"not a toy-world prompt: {user!r} (the toy judges only grade toy tasks; "
                    "make prompts with alphapo.toyworld.make_tasks or `alphapo toy prompts`)")


def _match_task(text: str) -> Task | None:
    for kind, pattern in _PATTERNS:
        m = pattern.match(text)
        if not m:
            continue
        if kind == "arithmetic":
            a, b = int(m["a"]), int(m["b"])
            return Task(kind, text, (str(a + b if m["op"] == "plus" else a - b),))
        items = m["items"].split()
        if kind == "sort":
            return Task(kind, text, tuple(sorted(items)))
        if kind == "reverse":
            return Task(kind, text, tuple(reversed(items)))
        if kind == "count":
            return Task(kind, text, (str(len(items)),))
        if m["cat"] in CATEGORIES:
            return Task(kind, text, tuple(w for w in items if w in CATEGORIES[m["cat"]]))
    return None


def _user_message(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    if not users:
        raise UserError(f"prompt has no user message: {prompt!r}")
    return users[-1]


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two word sequences (dynamic programme, O(|a||b|))."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def grade(task: Task, response: str) -> dict[str, float]:
    """Gold attributes and score of one response (see the module docstring for the formulas)."""
    words = response.split()
    if not words:
        return {"correctness": 0.0, "conciseness": 0.0, "length": 0.0, "score": 1.0}
    content = [w for w in words if w in CONTENT_WORDS]
    answer = list(task.answer)
    if task.kind in ("count", "arithmetic"):
        numbers = [w for w in content if w in NUMBER_WORDS]
        if numbers:
            closeness = max(0.0, 1.0 - abs(int(numbers[-1]) - int(answer[0])) / 4.0)
            correctness = closeness / len(content)
        else:
            correctness = 0.0
    else:
        denom = max(len(content), len(answer))
        correctness = lcs_length(content, answer) / denom if denom else 1.0
    extra = max(0, len(words) - len(answer))
    conciseness = max(0.0, 1.0 - extra / 8.0)
    score = 1.0 + CORRECTNESS_WEIGHT * correctness + CONCISENESS_WEIGHT * conciseness
    return {"correctness": correctness, "conciseness": conciseness, "length": float(len(words)),
            "score": round(score, 6)}


def _check_lengths(prompts, responses) -> None:
    if len(prompts) != len(responses):
        raise UserError(f"judge got {len(prompts)} prompts but {len(responses)} responses; "
                        "pass one response per prompt")


class GoldJudge:
    """The toy world's ground truth: score 1..10 with partial credit (implements ``Judge``)."""

    name = "toy-gold"

    def score(self, prompts: Sequence, responses: Sequence[str]) -> list[float]:
        """One gold score per (prompt, response); prompts are message lists (or the user text)."""
        _check_lengths(prompts, responses)
        return [grade(parse_task(_user_message(p)), r)["score"] for p, r in zip(prompts, responses)]

    def score_attributes(self, prompts: Sequence, responses: Sequence[str]) -> list[dict[str, float]]:
        """Named gold attributes per pair: ``correctness``, ``conciseness`` (0..1), ``length`` (words)."""
        _check_lengths(prompts, responses)
        out = []
        for p, r in zip(prompts, responses):
            attrs = grade(parse_task(_user_message(p)), r)
            out.append({k: attrs[k] for k in ATTRIBUTES})
        return out


class ProxyJudge:
    """A gold judge distorted by a length bias and deterministic noise (an imperfect "reward model").

    ``score = gold + length_bias * n_words + noise_std * z`` where ``z ~ N(0, 1)`` is drawn from a
    generator seeded by a hash of (seed, user message, response), so repeated calls agree.
    Deviation: not clipped to 1..10.
    """

    def __init__(self, *, noise_std: float = 0.0, length_bias: float = 0.0, seed: int = 0):
        if noise_std < 0:
            raise UserError(f"noise_std must be >= 0, got {noise_std}")
        self.noise_std, self.length_bias, self.seed = float(noise_std), float(length_bias), int(seed)
        self.name = f"toy-proxy(noise_std={noise_std},length_bias={length_bias},seed={seed})"
        self._gold = GoldJudge()

    def _noise(self, user: str, response: str) -> float:
        if self.noise_std == 0:
            return 0.0
        digest = hashlib.blake2b(f"{self.seed}\x00{user}\x00{response}".encode(), digest_size=8).digest()
        return self.noise_std * random.Random(int.from_bytes(digest, "little")).gauss(0.0, 1.0)

    def score(self, prompts: Sequence, responses: Sequence[str]) -> list[float]:
        gold = self._gold.score(prompts, responses)
        return [g + self.length_bias * len(r.split()) + self._noise(_user_message(p), r)
                for g, p, r in zip(gold, prompts, responses)]

    def score_attributes(self, prompts: Sequence, responses: Sequence[str]) -> list[dict[str, float]]:
        """The gold attributes (the proxy distorts only the overall score)."""
        return self._gold.score_attributes(prompts, responses)
