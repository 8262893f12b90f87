"""Synthetic instruction tasks of the toy world, and the noisy teacher that answers them.

Task types, each with one exact reference answer, so that a gold judge can grade any response:

====================  ==========================================  ===================
task                  user message (example)                      reference answer
====================  ==========================================  ===================
``sort``              ``sort these words : pear fox apple``       ``apple fox pear``
``reverse``           ``reverse these words : pear fox apple``    ``apple fox pear``
``count``             ``how many words : pear fox apple``         ``3``
``filter``            ``list the fruits : pear fox apple``        ``pear apple``
``arithmetic``        ``what is 7 pear plus 5 pear``              ``12``
====================  ==========================================  ===================

``TASK_TYPES`` is the default mix (sort, count, arithmetic): the tasks that the default tiny SFT policy
learns to a greedy correctness of 0.9 or more from a clean teacher (measured numbers in the README's
toy-world section). ``ALL_TASK_TYPES`` adds reverse and filter, which it did not learn reliably;
``make_tasks(..., kinds=ALL_TASK_TYPES)`` still makes them and the judge still grades them. Arithmetic operands are 0..9 and the prompt names a unit item, so
held-out prompts are new sentences but never an operand pair the policy has not seen in training (a
held-out pair of "what is 7 plus 5" is unlearnable for a model that has to memorise the addition table).

Everything is whitespace-separated words from a small closed vocabulary (``VOCABULARY``), so a
word-level tokenizer covers it exactly and a tiny model learns it in minutes on a CPU.

The **noisy teacher** (``teacher_response``) writes the demonstrations that SFT imitates.

- With probability ``p_error`` its answer is wrong. A wrong answer is, with probability
  ``p_systematic``, the task type's **systematic mistake** (``systematic_error``: the same kind of
  mistake for the same kind of prompt, like a teacher with a blind spot), and otherwise a random
  corruption (swap, drop, replace or duplicate a word; a number off by one or two).

  ====================  ================================================================
  task                  systematic mistake
  ====================  ================================================================
  ``sort``              the last two words of the sorted list swapped
  ``reverse``           the words in their original order (not reversed)
  ``count``             one too many
  ``filter``            the first word that is *not* in the category kept as well
  ``arithmetic``        one too many
  ====================  ================================================================

- Independently of that, with probability ``p_verbose`` it wraps the answer in filler ("sure ! the
  answer is ... hope this helps"). Filler is drawn from its own random numbers after the answer, so it
  carries no information about correctness.

With ``p_error * p_systematic`` close to ``1 - p_error`` the SFT policy's most likely answer is often the
systematic mistake; best-of-k / worst-of-k preference pairs then contrast the policy's own typical
mistake with its correction, which is what preference optimisation can fix.

All randomness comes from a ``random.Random`` passed in (or built from a seed): same seed, same tasks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

FRUITS = ("apple", "banana", "cherry", "grape", "lemon", "mango", "melon", "peach", "pear", "plum")
ANIMALS = ("cat", "dog", "fox", "horse", "lion", "mouse", "owl", "rabbit", "tiger", "wolf")
COLORS = ("red", "blue", "green", "yellow", "black", "white", "purple", "pink", "brown", "gray")
CATEGORIES = {"fruits": FRUITS, "animals": ANIMALS, "colors": COLORS}
ITEM_WORDS = FRUITS + ANIMALS + COLORS
MAX_NUMBER = 30  # numbers 0..MAX_NUMBER are words of the vocabulary
NUMBER_WORDS = tuple(str(i) for i in range(MAX_NUMBER + 1))

# Filler the verbose teacher adds around an answer. None of these words is an item or a number, so the
# judge can tell filler from content.
FILLER_PREFIXES = (
    ("sure", "!"),
    ("ok", ","),
    ("the", "answer", "is"),
    ("sure", "!", "the", "answer", "is"),
    ("ok", ",", "here", "you", "go", ":"),
    ("let", "me", "think", "...", "the", "answer", "is"),
)
FILLER_SUFFIXES = (
    (".",),
    ("!",),
    ("hope", "this", "helps", "!"),
    (".", "let", "me", "know", "if", "you", "need", "more", "."),
)

SYSTEM_PROMPT = "you are a helpful assistant . answer correctly and concisely ."
ALL_TASK_TYPES = ("sort", "reverse", "count", "filter", "arithmetic")
TASK_TYPES = ("sort", "count", "arithmetic")  # the default mix (see the module docstring)
MAX_OPERAND = 9  # arithmetic operands are 0..MAX_OPERAND

_PROMPT_WORDS = ("sort", "these", "words", "reverse", "how", "many", "list", "what", "is", "plus",
                 "minus", ":", "you", "are", "a", "helpful", "assistant", ".", "answer", "correctly",
                 "and", "concisely")


def _filler_words() -> tuple[str, ...]:
    words: list[str] = []
    for phrase in FILLER_PREFIXES + FILLER_SUFFIXES:
        words.extend(phrase)
    return tuple(dict.fromkeys(words))


FILLER_WORDS = _filler_words()
CONTENT_WORDS = frozenset(ITEM_WORDS + NUMBER_WORDS)
VOCABULARY = tuple(dict.fromkeys(ITEM_WORDS + NUMBER_WORDS + tuple(CATEGORIES) + _PROMPT_WORDS
                                 + FILLER_WORDS))


@dataclass(frozen=True)
class Task:
    """One toy instruction: its type, the user message, and the exact reference answer (as words)."""

    kind: str
    user: str
    answer: tuple[str, ...]

    def messages(self, system: bool = True) -> list[dict[str, str]]:
        """The prompt as chat messages (system + user, or user only)."""
        msgs = [{"role": "user", "content": self.user}]
        return ([{"role": "system", "content": SYSTEM_PROMPT}] + msgs) if system else msgs

    def to_record(self) -> dict:
        return {"kind": self.kind, "user": self.user, "answer": " ".join(self.answer)}

    @classmethod
    def from_record(cls, record: dict) -> Task:
        return cls(kind=record["kind"], user=record["user"], answer=tuple(record["answer"].split()))


def make_task(kind: str, rng: random.Random) -> Task:
    """One task of type ``kind`` with random content drawn from ``rng``."""
    if kind in ("sort", "reverse", "count"):
        words = rng.sample(ITEM_WORDS, rng.randint(3, 5) if kind != "count" else rng.randint(2, 7))
        listing = " ".join(words)
        if kind == "sort":
            return Task(kind, f"sort these words : {listing}", tuple(sorted(words)))
        if kind == "reverse":
            return Task(kind, f"reverse these words : {listing}", tuple(reversed(words)))
        return Task(kind, f"how many words : {listing}", (str(len(words)),))
    if kind == "filter":
        category = rng.choice(sorted(CATEGORIES))
        n_in = rng.randint(1, 2)
        others = [w for w in ITEM_WORDS if w not in CATEGORIES[category]]
        words = rng.sample(CATEGORIES[category], n_in) + rng.sample(others, rng.randint(1, 3))
        rng.shuffle(words)
        keep = tuple(w for w in words if w in CATEGORIES[category])
        return Task(kind, f"list the {category} : {' '.join(words)}", keep)
    if kind == "arithmetic":
        a, b = rng.randint(0, MAX_OPERAND), rng.randint(0, MAX_OPERAND)
        item = rng.choice(ITEM_WORDS)
        if rng.random() < 0.5:
            return Task(kind, f"what is {a} {item} plus {b} {item}", (str(a + b),))
        a, b = max(a, b), min(a, b)
        return Task(kind, f"what is {a} {item} minus {b} {item}", (str(a - b),))
    raise ValueError(f"unknown task kind {kind!r}; valid kinds: {', '.join(ALL_TASK_TYPES)}")


def make_tasks(n: int, seed: int, kinds: tuple[str, ...] = TASK_TYPES) -> list[Task]:
    """``n`` tasks cycling through ``kinds`` (balanced mix), deterministic given ``seed``."""
    rng = random.Random(f"toyworld-tasks-{seed}")
    return [make_task(kinds[i % len(kinds)], rng) for i in range(n)]


def split_tasks(seed: int, n_train: int, n_heldout: int,
                kinds: tuple[str, ...] = TASK_TYPES) -> tuple[list[Task], list[Task]]:
    """Disjoint train and held-out tasks (held-out user messages never appear in train)."""
    tasks = make_tasks(n_train + n_heldout, seed, kinds)
    heldout = tasks[n_train:]
    held_users = {t.user for t in heldout}
    train = [t for t in tasks[:n_train] if t.user not in held_users]
    return train, heldout


def validation_tasks(seed: int, n_train: int, n_heldout: int, n_validation: int,
                     kinds: tuple[str, ...] = TASK_TYPES) -> list[Task]:
    """Up to ``n_validation`` tasks disjoint from both sides of ``split_tasks(seed, n_train, n_heldout)``.

    They continue the same task stream after the held-out tasks; any whose user message is already a
    train or held-out prompt is left out (so there may be slightly fewer than ``n_validation``). Used to
    pick hyper-parameters without looking at the held-out (test) prompts.
    """
    tasks = make_tasks(n_train + n_heldout + n_validation, seed, kinds)
    seen = {t.user for t in tasks[:n_train + n_heldout]}
    return [t for t in tasks[n_train + n_heldout:] if t.user not in seen]


def systematic_error(task: Task) -> tuple[str, ...]:
    """The teacher's systematic mistake on ``task`` (a fixed function of the task; never the right answer).

    sort: last two words swapped; reverse: original order; count and arithmetic: one too many; filter: the
    first word outside the category kept too. A sort or reverse answer of one word, or a reverse whose
    words read the same both ways, has no distinct mistake of that kind; the mistake is then the
    answer with its first word duplicated.
    """
    answer = task.answer
    if task.kind in ("count", "arithmetic"):
        value = int(answer[0])
        return (str(value + 1 if value < MAX_NUMBER else value - 1),)
    if task.kind == "filter":
        listing = task.user.split(" : ", 1)[1].split()
        keep = set(answer)
        first_out = next((i for i, w in enumerate(listing) if w not in keep), None)
        if first_out is not None:
            return tuple(w for i, w in enumerate(listing) if w in keep or i == first_out)
    elif len(answer) > 1:
        wrong = answer[:-2] + (answer[-1], answer[-2]) if task.kind == "sort" else tuple(reversed(answer))
        if wrong != answer:
            return wrong
    return (answer[0],) + answer if answer else ("1",)


def _corrupt(task: Task, rng: random.Random) -> tuple[str, ...]:
    """A wrong (partially right) answer: one or two small edits of the reference (never equal to it)."""
    for _ in range(20):
        wrong = _edit(task, rng)
        if wrong != task.answer:
            return wrong
    raise RuntimeError(f"could not corrupt {task}")  # unreachable: a replace always changes the answer


def _edit(task: Task, rng: random.Random) -> tuple[str, ...]:
    answer = list(task.answer)
    if task.kind in ("count", "arithmetic"):
        value = int(answer[0]) + rng.choice((-2, -1, 1, 2))
        return (str(min(max(value, 0), MAX_NUMBER)),)
    for _ in range(rng.choice((1, 1, 2))):
        op = rng.choice(("swap", "drop", "replace", "duplicate")) if len(answer) > 1 else \
            rng.choice(("replace", "duplicate"))
        i = rng.randrange(len(answer))
        if op == "swap":
            j = (i + 1) % len(answer)
            answer[i], answer[j] = answer[j], answer[i]
        elif op == "drop":
            del answer[i]
        elif op == "replace":
            answer[i] = rng.choice([w for w in ITEM_WORDS if w not in answer])
        else:
            answer.insert(i, answer[i])
    return tuple(answer)


def teacher_response(task: Task, rng: random.Random, *, p_error: float = 0.55, p_systematic: float = 0.8,
                     p_verbose: float = 0.5) -> str:
    """A demonstration from the noisy teacher (see the module docstring).

    Wrong with probability ``p_error``; a wrong answer is ``systematic_error(task)`` with probability
    ``p_systematic`` and a random corruption otherwise. Verbose with probability ``p_verbose``, drawn
    independently of correctness. Draws from ``rng`` in a fixed order (error?, systematic?, corruption,
    verbose?, filler), so the same ``rng`` state gives the same demonstration.
    """
    for name, p in (("p_error", p_error), ("p_systematic", p_systematic), ("p_verbose", p_verbose)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"teacher {name} must be in [0, 1], got {p}")
    answer = task.answer
    if rng.random() < p_error:
        answer = systematic_error(task) if rng.random() < p_systematic else _corrupt(task, rng)
    words = list(answer)
    if rng.random() < p_verbose:
        words = list(rng.choice(FILLER_PREFIXES)) + words
        if rng.random() < 0.7:
            words += list(rng.choice(FILLER_SUFFIXES))
    return " ".join(words)
