"""Reward-augmented relabeling (Zhang et al., "Reward-Augmented Data Enhances Direct Preference Alignment
of LLMs", section 4 and appendix A.1) as pure functions, plus its inverse and the inference-time prompt.

The method. With the goal-conditioned reward ``R(x, y, g) = -|g - r(x, y)|`` (eq. 4.1), a pair
``(y_w, y_l)`` with judge scores ``(r_w, r_l)``, ``r_w != r_l``, yields two goal-conditioned pairs:

- goal ``g = r_w``: ``R(y_w) = 0 > R(y_l)``, so the order is kept: ``(x | g=r_w, y_w > y_l)``;
- goal ``g = r_l``: ``R(y_l) = 0 > R(y_w)``, so the order is swapped: ``(x | g=r_l, y_l > y_w)``.

The goal is written into the prompt as the paper's appendix A.1 text (configurable), as a system message,
or as a prefix of the first user turn when the chat template has no system role. At inference the same
text carries the top score (:func:`goal_prompt`), so training and evaluation prompts cannot drift apart.

Modes (:func:`relabel`):

- ``ra``: both goals per pair (output 2N, the paper's DPO (RA)).
- ``ra-chosen``: only the chosen-score goal (output N, the paper's RA+ in table 8).
- ``half``: ``ra`` on the first ``N // 2`` pairs only, the rest not used (output ~N, the size-controlled
  ablation "Half RA" in table 6).
- ``implicit`` (IRA, table 5) is ``ra`` with the scores replaced by implicit rewards
  ``beta * (logp - logp_ref)`` (see :mod:`alphapo.data.implicit`), passed through ``scores=``.

Ties (two goals that render to the same text) give two contradicting pairs under one goal, so the
goal-conditioned reward prefers neither response. ``ties="drop"`` (default) leaves such pairs out and
counts them, ``"keep"`` keeps them (what the paper's script does: it filters ``score_chosen >=
score_rejected``, which keeps ties), ``"error"`` stops at the first one. Pairs whose scores disagree with
the label (``r_w < r_l``) are relabeled like any other: the goal-conditioned label depends on the scores
only, and they are counted in the report.

Deviations from the paper's code (``scripts/reward_augmentation.py`` in its repository):

- For templates without a system role, its negative-goal function never swaps chosen and rejected, and it
  prefixes the goal to the shared first user turn once per response. Here every goal is applied to a
  fresh copy of the prompt exactly once, and the negative goal always swaps the pair (tests pin this).
- Its text says "target scores" while appendix A.1 says "target score"; we use the appendix text.
- Its output is all positive-goal pairs followed by all negative-goal pairs; we write each pair's two
  relabeled pairs next to each other (streaming-friendly; trainers shuffle anyway).
- An existing system message is merged (goal, blank line, old system text) instead of inserting a second
  system message, which many chat templates reject.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from alphapo.errors import UserError

#: Appendix A.1 "Training prompt" of the paper; ``{scores}`` becomes one ``Name score: value.`` per line.
DEFAULT_GOAL_TEMPLATE = (
    "You are an assistant that generates responses for the instruction while implicitly achieving the "
    "following target score (on a scale of 1-10, where 1 is lowest and 10 is highest):\n{scores}"
)
SCORES_FIELD = "{scores}"
SCORE_FIELD = "{score}"  # the single overall score's number alone, e.g. for a closed-vocabulary model
MODES = ("ra", "ra-chosen", "half", "implicit")
PLACEMENTS = ("system", "prefix")
TIE_POLICIES = ("keep", "drop", "error")
NORMALIZATIONS = ("none", "minmax", "range")
SCALE = (1.0, 10.0)  # the goal scale of the paper's prompt
SEPARATOR = "\n\n"  # between the goal text and the text it precedes (as in the paper's code)
OVERALL = "overall"


# ---------------------------------------------------------------------------------------------- goal text
def format_score(value: float, decimals: int = 2) -> str:
    """``8.0 -> "8"``, ``7.5 -> "7.5"``, ``7.123 -> "7.12"``: integers print as integers."""
    rounded = round(float(value), decimals)
    if rounded == int(rounded):
        return str(int(rounded))
    return f"{rounded:.{decimals}f}".rstrip("0").rstrip(".")


def _label(name: str) -> str:
    return name.replace("_", " ").strip().capitalize() + " score"


def goal_text(scores: float | Mapping[str, float], template: str = DEFAULT_GOAL_TEMPLATE,
              number_format: Callable[[float], str] = format_score) -> str:
    """The goal instruction for ``scores`` (a number = the overall score, or ``{attribute: score}``).

    Example: ``goal_text(8)`` ends with ``"...highest):\\nOverall score: 8."``;
    ``goal_text({"helpfulness": 9, "honesty": 7.5})`` ends with
    ``"Helpfulness score: 9.\\nHonesty score: 7.5."``.

    A template with ``{score}`` instead of ``{scores}`` receives the overall score's number alone
    (``goal_text(8, "aim for {score}") == "aim for 8"``); it takes one score, not attributes.
    ``number_format`` writes each number (default :func:`format_score`); a model with a closed
    vocabulary passes one that spells numbers in its own words.
    """
    check_template(template)
    if not isinstance(scores, Mapping):
        scores = {OVERALL: scores}
    if not scores:
        raise UserError("a goal needs at least one score")
    if SCORE_FIELD in template:
        if len(scores) != 1:
            raise UserError(f"the goal template's {SCORE_FIELD} takes one overall score, got attributes "
                            f"{sorted(scores)}; use {SCORES_FIELD} for several")
        return template.replace(SCORE_FIELD, number_format(next(iter(scores.values()))))
    lines = "\n".join(f"{_label(name)}: {number_format(v)}." for name, v in scores.items())
    return template.replace(SCORES_FIELD, lines)


def check_template(template: str) -> None:
    if not isinstance(template, str) or template.count(SCORES_FIELD) + template.count(SCORE_FIELD) != 1:
        raise UserError(f"the goal template must contain {SCORES_FIELD} (or {SCORE_FIELD}) exactly once, "
                        f"got {template!r}")


def supports_system_role(tokenizer) -> bool:
    """Whether the tokenizer's chat template renders a system message (tried, not guessed from the name).

    No template at all: True (plain concatenation includes a system message's text like any other).
    """
    if not getattr(tokenizer, "chat_template", None):
        return True
    probe = "alphapo-system-probe"
    try:
        text = tokenizer.apply_chat_template([{"role": "system", "content": probe},
                                              {"role": "user", "content": "hi"}], tokenize=False)
    except Exception:  # noqa: BLE001 - templates raise TemplateError, ValueError, ... on a system role
        return False
    return probe in text


def resolve_placement(placement: str = "auto", tokenizer=None) -> str:
    """``"system"`` / ``"prefix"`` as given; ``"auto"`` asks the tokenizer's template (system if none given)."""
    if placement == "auto":
        return "system" if tokenizer is None or supports_system_role(tokenizer) else "prefix"
    if placement not in PLACEMENTS:
        raise UserError(f"goal placement must be auto, system or prefix, got {placement!r}")
    return placement


def apply_goal(prompt: Sequence[Mapping], text: str, placement: str) -> tuple[list[dict], str]:
    """A new prompt carrying ``text``; returns ``(messages, where)`` with ``where`` recording how.

    ``where`` is ``"system_new"`` (a system message inserted first), ``"system_merged"`` (prepended to an
    existing first system message) or ``"prefix"`` (prepended to the first user turn). The input is never
    modified: every message is copied.
    """
    messages = [dict(m) for m in prompt]
    if placement == "system":
        if messages and messages[0]["role"] == "system":
            messages[0]["content"] = text + SEPARATOR + messages[0]["content"]
            return messages, "system_merged"
        return [{"role": "system", "content": text}] + messages, "system_new"
    if placement == "prefix":
        for m in messages:
            if m["role"] == "user":
                m["content"] = text + SEPARATOR + m["content"]
                return messages, "prefix"
        raise UserError("the prompt has no user turn to prefix the goal to; use placement 'system'")
    raise UserError(f"goal placement must be system or prefix, got {placement!r}")


def remove_goal(prompt: Sequence[Mapping], text: str, where: str) -> list[dict]:
    """Inverse of :func:`apply_goal`: ``m, where = apply_goal(p, t, pl)`` then ``remove_goal(m, t, where) == p``."""
    messages = [dict(m) for m in prompt]
    if where == "system_new":
        if messages and messages[0] == {"role": "system", "content": text}:
            return messages[1:]
    elif where == "system_merged":
        if messages and messages[0]["role"] == "system" and messages[0]["content"].startswith(text + SEPARATOR):
            messages[0]["content"] = messages[0]["content"][len(text) + len(SEPARATOR):]
            return messages
    elif where == "prefix":
        for m in messages:
            if m["role"] == "user":
                if m["content"].startswith(text + SEPARATOR):
                    m["content"] = m["content"][len(text) + len(SEPARATOR):]
                    return messages
                break
    raise UserError(f"the prompt does not carry the goal text where the relabel metadata says ({where}); "
                    "was it edited after relabeling?")


def goal_prompt(prompt: Sequence[Mapping], *, scores: float | Mapping[str, float] | None = None,
                attributes: Sequence[str] = (OVERALL,), placement: str = "system", tokenizer=None,
                template: str = DEFAULT_GOAL_TEMPLATE,
                number_format: Callable[[float], str] = format_score) -> list[dict]:
    """The inference-time prompt: ``prompt`` conditioned on the top score (appendix A.1 "Inference prompt").

    ``scores`` defaults to 10 for every attribute in ``attributes``; ``placement`` may be ``"auto"`` (with a
    ``tokenizer``). Same text and placement code as :func:`relabel` (pass it the same ``template`` and
    ``number_format``), so the two cannot drift apart.
    """
    if scores is None:
        scores = {name: SCALE[1] for name in attributes}
    text = goal_text(scores, template, number_format)
    return apply_goal(prompt, text, resolve_placement(placement, tokenizer))[0]


# ------------------------------------------------------------------------------------------ normalisation
@dataclass(frozen=True)
class ScoreScale:
    """Linear map of raw scores in ``[lo, hi]`` onto the goal scale 1..10 (``lo = hi = None``: identity)."""

    lo: float | None = None
    hi: float | None = None

    def __call__(self, x: float) -> float:
        if self.lo is None:
            return float(x)
        return SCALE[0] + (SCALE[1] - SCALE[0]) * (float(x) - self.lo) / (self.hi - self.lo)


def fit_scale(values: Sequence[float], normalize: str = "none",
              score_range: tuple[float, float] | None = None, *, name: str = OVERALL) -> ScoreScale:
    """The map of ``values`` to 1..10: ``none`` (as is), ``minmax`` (dataset min -> 1, max -> 10), or
    ``range`` (declared ``score_range=(lo, hi)`` -> 1..10; a value outside it is an error).

    Example: minmax over ``[0, 0.5, 2]`` maps ``0.5 -> 1 + 9 * 0.5 / 2 = 3.25``.
    """
    if normalize == "none":
        return ScoreScale()
    if normalize == "minmax":
        if not values:
            return ScoreScale()
        lo, hi = min(values), max(values)
        if lo == hi:
            raise UserError(f"cannot min-max normalise '{name}' scores: they are all {lo}; use --normalize none "
                            "or declare a --score-range")
        return ScoreScale(float(lo), float(hi))
    if normalize == "range":
        if score_range is None or len(score_range) != 2 or not score_range[0] < score_range[1]:
            raise UserError(f"normalize='range' needs score_range=(lo, hi) with lo < hi, got {score_range!r}")
        lo, hi = float(score_range[0]), float(score_range[1])
        outside = [v for v in values if not lo <= v <= hi]
        if outside:
            raise UserError(f"{len(outside)} '{name}' score(s) fall outside the declared range [{lo}, {hi}] "
                            f"(e.g. {outside[0]}); fix the range or use --normalize minmax")
        return ScoreScale(lo, hi)
    raise UserError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")


# ------------------------------------------------------------------------------------------------ relabel
@dataclass
class RelabelReport:
    mode: str
    input_pairs: int = 0
    output_pairs: int = 0
    ties: int = 0
    ties_dropped: int = 0
    inverted: int = 0  # pairs whose chosen score is below the rejected score
    not_used: int = 0  # half mode: pairs of the second half
    scales: dict = field(default_factory=dict)

    def __str__(self) -> str:
        parts = [f"mode {self.mode}: {self.input_pairs} pairs in, {self.output_pairs} relabeled pairs out",
                 f"{self.ties} ties ({self.ties_dropped} dropped)"]
        if self.inverted:
            parts.append(f"{self.inverted} pairs with chosen score < rejected score (relabeled by score)")
        if self.not_used:
            parts.append(f"{self.not_used} pairs of the second half not used")
        for name, s in self.scales.items():
            if s.lo is not None:
                parts.append(f"'{name}' scores [{s.lo:g}, {s.hi:g}] mapped to 1..10")
        return "; ".join(parts)


def _raw_goals(record: Mapping, attributes: Sequence[str] | None, override) -> dict[str, tuple[float, float]]:
    """``{attribute: (chosen value, rejected value)}`` for one record (raw, before normalisation)."""
    rid = record.get("id")
    if "responses" in record:
        raise UserError(f"record {rid!r} is multi-response; relabeling works on chosen/rejected pairs")
    if override is not None:
        c, r = override
        return {OVERALL: (float(c), float(r))}
    if not attributes:
        c, r = record.get("chosen_score"), record.get("rejected_score")
        if c is None or r is None:
            raise UserError(f"record {rid!r} has no chosen_score / rejected_score; relabeling needs scores "
                            "(map the score columns, or use --mode implicit)")
        return {OVERALL: (float(c), float(r))}
    attrs = record.get("attributes") or {}
    out = {}
    for name in attributes:
        try:
            out[name] = (float(attrs["chosen"][name]), float(attrs["rejected"][name]))
        except (KeyError, TypeError):
            raise UserError(f"record {rid!r} has no attribute {name!r} for both chosen and rejected "
                            "(expected record['attributes']['chosen'|'rejected'][name])") from None
    return out


def _swap(record: Mapping, meta: dict, prompt: list[dict]) -> dict:
    out = dict(record)
    out["prompt"] = prompt
    out["chosen"], out["rejected"] = record["rejected"], record["chosen"]
    out["chosen_score"], out["rejected_score"] = record.get("rejected_score"), record.get("chosen_score")
    if "attributes" in record:
        attrs = record["attributes"]
        out["attributes"] = {"chosen": attrs.get("rejected", {}), "rejected": attrs.get("chosen", {})}
    out["relabel"] = meta
    return out


def relabel(records: Sequence[Mapping], *, mode: str = "ra", placement: str = "system",
            template: str = DEFAULT_GOAL_TEMPLATE, attributes: Sequence[str] | None = None,
            normalize: str = "none", score_range: tuple[float, float] | None = None, ties: str = "drop",
            scores: Sequence[tuple[float, float]] | None = None,
            number_format: Callable[[float], str] = format_score) -> tuple[list[dict], RelabelReport]:
    """Reward-augment canonical pair records (paper section 4); returns ``(records, report)``.

    Args:
        mode: ``ra`` | ``ra-chosen`` | ``half`` | ``implicit`` (module docstring).
        placement: ``system`` or ``prefix`` (resolve ``auto`` first with :func:`resolve_placement`).
        template: goal text with ``{scores}`` (or ``{score}``, :func:`goal_text`); default is the paper's
            appendix A.1 text.
        attributes: names in ``record["attributes"]`` for multi-attribute goals; None = overall score.
        normalize / score_range: mapping to 1..10, per attribute (:func:`fit_scale`).
        ties: ``keep`` | ``drop`` | ``error`` for pairs whose two goals render to the same text.
        scores: per-record ``(chosen, rejected)`` values overriding the record scores (implicit rewards).
        number_format: how a goal's numbers are written (:func:`goal_text`); two goals that it writes the
            same way are a tie.

    Each output record is a canonical pair plus ``relabel`` metadata (source id and position, which goal,
    the goal text and where it sits), which :func:`unrelabel` uses to invert the transformation.

    Deviations: ties are dropped by default (the paper's script keeps them); the two relabeled pairs of
    a source pair are adjacent; see the module docstring for the paper code's no-system bug we avoid.
    """
    if mode not in MODES:
        raise UserError(f"relabel mode must be one of {', '.join(MODES)}, got {mode!r}")
    if ties not in TIE_POLICIES:
        raise UserError(f"tie policy must be one of {', '.join(TIE_POLICIES)}, got {ties!r}")
    if placement not in PLACEMENTS:
        raise UserError(f"goal placement must be system or prefix here (resolve 'auto' first), got {placement!r}")
    if mode == "implicit" and scores is None:
        raise UserError("mode 'implicit' needs the implicit rewards as scores=[(chosen, rejected), ...]")
    if scores is not None and len(scores) != len(records):
        raise UserError(f"{len(scores)} score pairs for {len(records)} records")
    check_template(template)
    report = RelabelReport(mode=mode, input_pairs=len(records))
    raw = [_raw_goals(rec, attributes, None if scores is None else scores[i]) for i, rec in enumerate(records)]
    names = list(raw[0]) if raw else []
    for name in names:
        values = [v for goals in raw for v in goals[name]]
        report.scales[name] = fit_scale(values, normalize, score_range, name=name)
    used = len(records) // 2 if mode == "half" else len(records)
    report.not_used = len(records) - used
    out: list[dict] = []
    for index in range(used):
        record, goals = records[index], raw[index]
        g_chosen = {n: report.scales[n](c) for n, (c, _) in goals.items()}
        g_rejected = {n: report.scales[n](r) for n, (_, r) in goals.items()}
        text_c, text_r = goal_text(g_chosen, template, number_format), goal_text(g_rejected, template, number_format)
        if names == [OVERALL] and goals[OVERALL][0] < goals[OVERALL][1]:
            report.inverted += 1
        if text_c == text_r:
            report.ties += 1
            if ties == "error":
                raise UserError(f"record {record.get('id')!r}: chosen and rejected give the same goal "
                                f"({g_chosen}); pick --ties keep or drop")
            if ties == "drop":
                report.ties_dropped += 1
                continue
        base = {"source_id": record.get("id"), "source_index": index, "mode": mode}
        prompt_c, where_c = apply_goal(record["prompt"], text_c, placement)
        meta_c = {**base, "goal": "chosen", "goal_scores": g_chosen, "goal_text": text_c, "where": where_c}
        pos = {**record, "prompt": prompt_c, "relabel": meta_c}
        pos["id"] = f"{record.get('id')}/goal=chosen"
        out.append(pos)
        if mode == "ra-chosen":
            continue
        prompt_r, where_r = apply_goal(record["prompt"], text_r, placement)
        meta_r = {**base, "goal": "rejected", "goal_scores": g_rejected, "goal_text": text_r, "where": where_r}
        neg = _swap(record, meta_r, prompt_r)
        neg["id"] = f"{record.get('id')}/goal=rejected"
        out.append(neg)
    report.output_pairs = len(out)
    return out, report


def unrelabel(records: Sequence[Mapping]) -> list[dict]:
    """Invert :func:`relabel`: strip the goal, swap back negative-goal pairs, merge the copies of a pair.

    Records without ``relabel`` metadata pass through unchanged. Both copies of a pair must agree, else
    the file was edited and this raises. ``unrelabel(relabel(rs, ties="keep")[0]) == rs`` for modes ``ra``,
    ``ra-chosen`` and ``implicit``; ``half`` gives back the first half.
    """
    out: list[dict] = []
    seen: dict = {}
    for record in records:
        meta = record.get("relabel")
        if not isinstance(meta, Mapping):
            out.append(dict(record))
            continue
        original = {k: v for k, v in record.items() if k != "relabel"}
        original["prompt"] = remove_goal(record["prompt"], meta["goal_text"], meta["where"])
        if meta["goal"] == "rejected":
            original = _swap(original, {}, original["prompt"])
            del original["relabel"]
        original["id"] = meta["source_id"]
        key = (meta["source_index"], meta["source_id"])
        if key in seen:
            if out[seen[key]] != original:
                raise UserError(f"the relabeled copies of record {meta['source_id']!r} disagree after removing "
                                "their goals; the relabeled file was edited")
            continue
        seen[key] = len(out)
        out.append(original)
    return out
