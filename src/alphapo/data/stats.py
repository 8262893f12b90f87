"""Dataset statistics for ``alphapo data stats``: counts, length percentiles and text score histograms.

Lengths are in tokens when a tokenizer is given (prompt = chat template with generation prompt,
completion = content + EOS, exactly as :func:`alphapo.data.tokenize_preferences` counts them), otherwise
in characters. Everything is computed in one streaming pass; only per-row lengths and scores are kept.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

PERCENTILES = (50, 90, 95, 99, 100)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``q``% of the data at or below it.

    Example: ``percentile([1, 2, 3, 4], 50) == 2`` (rank ceil(0.5 * 4) = 2); ``q = 100`` is the maximum.
    """
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def histogram(values: Sequence[float], bins: int = 10, width: int = 40) -> list[str]:
    """Text histogram: ``bins`` equal-width bins over [min, max], bars scaled to ``width`` characters.

    Integer scores spanning at most 21 values (typical judge scores) get one row per value instead.
    """
    if not values:
        return ["(no scores)"]
    lo, hi = min(values), max(values)
    if all(float(v).is_integer() for v in values) and hi - lo <= 20:  # judge scores: one row per value
        counts = Counter(int(v) for v in values)
        top = max(counts.values())
        return [f"{v:>9d} | {'#' * round(width * counts[v] / top):<{width}} {counts[v]}"
                for v in range(int(lo), int(hi) + 1)]
    if lo == hi:
        return [f"{lo:>9.3g} | {'#' * width} {len(values)}"]
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / (hi - lo) * bins), bins - 1)] += 1
    top = max(counts)
    step = (hi - lo) / bins
    return [f"[{lo + i * step:>9.3g}, {lo + (i + 1) * step:>9.3g}{']' if i == bins - 1 else ')'} | "
            f"{'#' * round(width * c / top):<{width}} {c}" for i, c in enumerate(counts)]


@dataclass
class Stats:
    unit: str = "chars"
    kinds: Counter = field(default_factory=Counter)
    lengths: dict = field(default_factory=lambda: {"prompt": [], "chosen": [], "rejected": [], "responses": []})
    scores: dict = field(default_factory=lambda: {"chosen": [], "rejected": [], "responses": []})
    scored_pairs: int = 0
    ties: int = 0
    inverted: int = 0
    turns: Counter = field(default_factory=Counter)

    def render(self) -> str:
        lines = [f"records: {sum(self.kinds.values())} ({', '.join(f'{n} {k}' for k, n in sorted(self.kinds.items()))})"]
        if self.kinds.get("pair"):
            lines.append(f"pairs with scores: {self.scored_pairs}; ties: {self.ties}; "
                         f"chosen score < rejected score: {self.inverted}")
        lines.append(f"prompt turns: {', '.join(f'{k}: {n}' for k, n in sorted(self.turns.items()))}")
        lines.append(f"lengths in {self.unit} ({' / '.join(f'p{q}' if q < 100 else 'max' for q in PERCENTILES)}):")
        for name, values in self.lengths.items():
            if values:
                pct = " / ".join(f"{percentile(values, q):g}" for q in PERCENTILES)
                lines.append(f"  {name:<9} {pct}   (mean {sum(values) / len(values):.1f})")
        for name, values in self.scores.items():
            if values:
                lines.append(f"{name} scores (n={len(values)}, mean {sum(values) / len(values):.3g}):")
                lines.extend("  " + row for row in histogram(values))
        return "\n".join(lines)


def compute_stats(records: Iterable[Mapping], tokenizer=None, *, chat_template: str = "auto") -> Stats:
    """Counts, lengths (tokens with a tokenizer, rendered as training renders them; else characters), scores."""
    from alphapo.data.tokenize import encode_record, uses_template

    stats = Stats(unit="tokens" if tokenizer is not None else "chars")

    def sizes(rec, responses) -> tuple[int, list[int]]:
        if tokenizer is not None:
            prompt, completions, _ = encode_record(tokenizer, rec["prompt"], responses,
                                                   templated=uses_template(tokenizer, rec, chat_template))
            return len(prompt), [len(c) for c in completions]
        return (sum(len(m["content"]) for m in rec["prompt"]),
                [sum(len(m["content"]) for m in r) for r in responses])

    for rec in records:
        multi = "responses" in rec
        stats.kinds["multi" if multi else "pair"] += 1
        stats.turns[len(rec["prompt"])] += 1
        prompt_len, lengths = sizes(rec, rec["responses"] if multi else [rec["chosen"], rec["rejected"]])
        stats.lengths["prompt"].append(prompt_len)
        if multi:
            for length, score in zip(lengths, rec["scores"]):
                stats.lengths["responses"].append(length)
                stats.scores["responses"].append(score)
            continue
        for side, length in zip(("chosen", "rejected"), lengths):
            stats.lengths[side].append(length)
        c, r = rec.get("chosen_score"), rec.get("rejected_score")
        if c is not None and r is not None:
            stats.scored_pairs += 1
            stats.scores["chosen"].append(c)
            stats.scores["rejected"].append(r)
            stats.ties += c == r
            stats.inverted += c < r
    return stats
