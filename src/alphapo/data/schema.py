"""Row schemas -> canonical records, with a validation issue for everything that is wrong.

Accepted layouts (detected per row; column names configurable with ``columns``):

- (a) ``prompt``, ``chosen``, ``rejected`` strings. The prompt becomes one user message, each response one
  assistant message.
- (b) conversational: ``chosen`` / ``rejected`` are message lists (``{"role", "content"}``). ``prompt`` is
  optional: a string (one user message) or a message list. When both conversations start with the prompt
  they are cut after it; when ``prompt`` is missing it is the longest common prefix of the two
  conversations, shortened so that each completion starts at an assistant turn.
- (c) UltraFeedback-binarized: ``prompt`` (string), ``prompt_id``, ``chosen`` / ``rejected`` full
  conversations, ``messages``, ``score_chosen``, ``score_rejected``. This is (b) with scores; ``prompt_id``
  becomes the record id and ``messages`` is ignored.
- (d) multi-response: ``prompt``, ``responses`` (list of strings or of message lists), ``scores`` (list of
  numbers, same length, at least two responses).

Canonical pair record (the contract with the trainer)::

    {"id": str, "prompt": [message], "chosen": [message], "rejected": [message],
     "chosen_score": float | None, "rejected_score": float | None}
    (+ "attributes": {"chosen": {name: float}, "rejected": {name: float}} when given,
     + "relabel": {...} on records written by ``alphapo data relabel``)

Canonical multi-response record: ``{"id", "prompt", "responses": [[message]], "scores": [float]}``.

Record ids: the ``id`` column, else ``prompt_id``, else the row number as a string.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from typing import Any

from alphapo.data.validation import Issue

#: canonical field -> default source column(s) (the first one present is used)
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "id": ("id", "prompt_id"),
    "prompt": ("prompt",),
    "chosen": ("chosen",),
    "rejected": ("rejected",),
    "chosen_score": ("score_chosen", "chosen_score"),
    "rejected_score": ("score_rejected", "rejected_score"),
    "responses": ("responses",),
    "scores": ("scores",),
    "chosen_attributes": ("chosen_attributes",),
    "rejected_attributes": ("rejected_attributes",),
}
ROLES = ("system", "user", "assistant", "tool")


def resolve_columns(columns: Mapping[str, str] | None) -> dict[str, tuple[str, ...]]:
    """Merge a user mapping ``{canonical_field: source_column}`` over the defaults; unknown keys are errors."""
    from alphapo.errors import UserError

    resolved = dict(DEFAULT_COLUMNS)
    for key, col in (columns or {}).items():
        if key not in DEFAULT_COLUMNS:
            near = difflib.get_close_matches(key, DEFAULT_COLUMNS, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise UserError(f"unknown column mapping key {key!r}{hint}; valid keys: {', '.join(DEFAULT_COLUMNS)}")
        if not isinstance(col, str) or not col:
            raise UserError(f"column mapping {key!r} must name a column (a non-empty string), got {col!r}")
        resolved[key] = (col,)
    return resolved


class _Row:
    """Collects issues for one row while its fields are converted."""

    def __init__(self, raw: Mapping, file: str, row: int, line_based: bool, cols: dict):
        self.raw, self.file, self.row, self.line_based, self.cols = raw, file, row, line_based, cols
        self.issues: list[Issue] = []
        self.csv = bool(raw.get("__csv__"))

    def issue(self, field: str | None, reason: str, detail: str) -> None:
        self.issues.append(Issue(self.file, self.row, field, reason, detail, self.line_based))

    def column(self, key: str) -> str | None:
        """The source column for canonical ``key`` present in this row (None when absent)."""
        for col in self.cols[key]:
            if col in self.raw:
                return col
        return None

    def get(self, key: str) -> tuple[str, Any]:
        col = self.column(key)
        if col is None:
            return self.cols[key][0], None
        value = self.raw[col]
        if self.csv and isinstance(value, str):
            value = _csv_cell(value)
        return col, value


def _csv_cell(value: str):
    """CSV cells are text: empty -> None; a cell holding a JSON list or object is parsed."""
    stripped = value.strip()
    if stripped == "":
        return None
    if stripped[0] in "[{":
        try:
            return json.loads(stripped)
        except (json.JSONDecodeError, RecursionError):
            return value
    return value


def _messages(r: _Row, col: str, value, *, default_role: str) -> list[dict] | None:
    """A string -> one message; a message list -> checked copy; otherwise an issue and None."""
    if isinstance(value, str):
        if not value.strip():
            r.issue(col, "empty_field", "is an empty string")
            return None
        return [{"role": default_role, "content": value}]
    if isinstance(value, list):
        if not value:
            r.issue(col, "empty_field", "is an empty list")
            return None
        out = []
        for i, msg in enumerate(value):
            if not isinstance(msg, Mapping):
                r.issue(col, "bad_message", f"item {i} is a {type(msg).__name__}, expected an object "
                        "with 'role' and 'content'")
                return None
            role, content = msg.get("role"), msg.get("content")
            if not isinstance(role, str) or role not in ROLES:
                r.issue(col, "bad_message", f"item {i} has role {role!r}; expected one of {', '.join(ROLES)}")
                return None
            if not isinstance(content, str):
                r.issue(col, "bad_message", f"item {i} ({role}) has content of type {type(content).__name__}, "
                        "expected a string")
                return None
            if not content.strip() and role == "assistant":
                r.issue(col, "empty_field", f"item {i} is an assistant turn with empty content")
                return None
            out.append({"role": role, "content": content})
        return out
    r.issue(col, "wrong_type", f"is {_type_name(value)}; expected a string or a list of messages")
    return None


def _type_name(value) -> str:
    if value is None:
        return "null"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name} ({_short(value)})"


def _short(value, n: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def _number(r: _Row, col: str, value) -> float | None:
    if isinstance(value, str) and r.csv:
        try:
            value = float(value)
        except ValueError:
            r.issue(col, "wrong_type", f"is {_short(value)!s}; expected a number")
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        r.issue(col, "wrong_type", f"is {_type_name(value)}; expected a number")
        return None
    try:
        as_float = float(value)
    except OverflowError:  # a huge JSON integer
        as_float = math.inf
    if not math.isfinite(as_float):
        r.issue(col, "non_finite_score", f"is {value!r}; scores must be finite numbers")
        return None
    return as_float


def _attributes(r: _Row, key: str) -> dict[str, float] | None:
    col, value = r.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value:
        r.issue(col, "wrong_type", f"is {_type_name(value)}; expected an object of attribute name -> number")
        return None
    out = {}
    for name, v in value.items():
        num = _number(r, f"{col}.{name}", v)
        if num is None:
            return None
        out[str(name)] = num
    return out


def _ends_with_assistant(r: _Row, col: str, messages: list[dict]) -> bool:
    if messages[-1]["role"] != "assistant":
        r.issue(col, "no_assistant_end", f"last turn is a '{messages[-1]['role']}' turn; the response to "
                "learn must be the final assistant turn")
        return False
    return True


def _split_prompt(r: _Row, prompt, chosen, rejected, cols):
    """Work out (prompt, chosen completion, rejected completion) from conversations; None on an issue."""
    pcol, ccol, rcol = cols
    if prompt is not None:
        n = len(prompt)
        completions = []
        for col, comp in ((ccol, chosen), (rcol, rejected)):
            if comp[:n] == prompt:  # a whole conversation that repeats the prompt: keep what follows it
                if len(comp) == n:
                    r.issue(col, "empty_field", f"holds only the prompt turns of '{pcol}', no response")
                    return None
                comp = comp[n:]
            completions.append(comp)
            if comp[0]["role"] != "assistant":
                r.issue(col, "bad_message", f"starts with a '{comp[0]['role']}' turn but does not repeat "
                        f"'{pcol}' at its start; give either the whole conversation (starting with the "
                        "prompt) or only the reply")
                return None
        return prompt, completions[0], completions[1]
    if chosen == rejected:
        r.issue(ccol, "identical_pair", f"'{ccol}' and '{rcol}' are the same conversation")
        return None
    k = 0
    while k < min(len(chosen), len(rejected)) - 1 and chosen[k] == rejected[k]:
        k += 1
    while k > 0 and (chosen[k]["role"] != "assistant" or rejected[k]["role"] != "assistant"):
        k -= 1  # a completion starts at an assistant turn, so back up to one
    if k == 0:
        r.issue(pcol, "no_prompt", f"'{pcol}' is missing and '{ccol}' / '{rcol}' share no leading turns "
                "to take it from; add a prompt column or start both conversations with the prompt")
        return None
    return chosen[:k], chosen[k:], rejected[k:]


def normalize_row(raw: Any, *, file: str, row: int, line_based: bool = False,
                  columns: dict[str, tuple[str, ...]] | None = None) -> tuple[dict | None, list[Issue]]:
    """Convert one raw row to a canonical record. Returns ``(record, [])`` or ``(None, issues)``."""
    cols = columns or DEFAULT_COLUMNS
    if not isinstance(raw, Mapping):
        issue = Issue(file, row, None, "not_an_object", f"is {_type_name(raw)}; each row must be an object "
                      "with prompt / chosen / rejected (or responses / scores) fields", line_based)
        return None, [issue]
    r = _Row(raw, file, row, line_based, cols)
    id_col, rid = r.get("id")
    record_id = str(row) if rid is None else str(rid)
    if r.column("responses") is not None:
        return _multi(r, record_id)
    return _pair(r, record_id)


def _required(r: _Row, key: str):
    col, value = r.get(key)
    if value is None:
        present = [c for c in r.raw if c != "__csv__"]
        where = "is null" if r.column(key) is not None else "is missing"
        near = [] if r.column(key) is not None else difflib.get_close_matches(col, present, n=1)
        hint = f" (column {near[0]!r} exists; map it with columns={{'{key}': '{near[0]}'}})" if near else ""
        r.issue(col, "missing_field", f"{where}{hint}")
    return col, value


def _pair(r: _Row, record_id: str):
    pcol, prompt_raw = r.get("prompt")
    ccol, chosen_raw = _required(r, "chosen")
    rcol, rejected_raw = _required(r, "rejected")
    conversational = isinstance(chosen_raw, list) or isinstance(rejected_raw, list)
    if prompt_raw is None and not conversational:
        _required(r, "prompt")
    prompt = _messages(r, pcol, prompt_raw, default_role="user") if prompt_raw is not None else None
    chosen = _messages(r, ccol, chosen_raw, default_role="assistant") if chosen_raw is not None else None
    rejected = _messages(r, rcol, rejected_raw, default_role="assistant") if rejected_raw is not None else None
    scores = {}
    for key in ("chosen_score", "rejected_score"):
        col, value = r.get(key)
        scores[key] = None if value is None else _number(r, col, value)
    present = [k for k in scores if r.get(k)[1] is not None]
    if len(present) == 1:
        missing = "rejected_score" if present == ["chosen_score"] else "chosen_score"
        r.issue(r.cols[missing][0], "missing_field", f"is missing while '{r.column(present[0])}' is given; "
                "give both scores or neither")
    attributes = {side: _attributes(r, f"{side}_attributes") for side in ("chosen", "rejected")}
    nested = r.raw.get("attributes")  # the canonical layout, as written by `alphapo data convert/relabel`
    if isinstance(nested, Mapping) and attributes == {"chosen": None, "rejected": None}:
        r.raw = {**r.raw, "chosen_attributes": nested.get("chosen"), "rejected_attributes": nested.get("rejected")}
        r.cols = {**r.cols, "chosen_attributes": ("chosen_attributes",), "rejected_attributes": ("rejected_attributes",)}
        attributes = {side: _attributes(r, f"{side}_attributes") for side in ("chosen", "rejected")}
    if r.issues or chosen is None or rejected is None:
        return None, r.issues
    split = _split_prompt(r, prompt, chosen, rejected, (pcol, ccol, rcol))
    if split is None:
        return None, r.issues
    prompt, chosen, rejected = split
    if prompt[-1]["role"] == "assistant":
        r.issue(pcol, "bad_message", "ends with an assistant turn; the prompt must end with the turn the "
                "response answers")
        return None, r.issues
    ok = _ends_with_assistant(r, ccol, chosen) & _ends_with_assistant(r, rcol, rejected)
    if ok and chosen == rejected:
        r.issue(ccol, "identical_pair", f"'{ccol}' and '{rcol}' hold the same response; a preference pair "
                "needs two different responses")
    if r.issues:
        return None, r.issues
    record = {"id": record_id, "prompt": prompt, "chosen": chosen, "rejected": rejected,
              "chosen_score": scores["chosen_score"], "rejected_score": scores["rejected_score"]}
    if attributes["chosen"] is not None or attributes["rejected"] is not None:
        record["attributes"] = {k: v or {} for k, v in attributes.items()}
    meta = r.raw.get("relabel")
    if isinstance(meta, Mapping):  # written by `alphapo data relabel`; kept so un-relabel works from a file
        record["relabel"] = dict(meta)
    return record, []


def _multi(r: _Row, record_id: str):
    pcol, prompt_raw = _required(r, "prompt")
    rcol, responses_raw = _required(r, "responses")
    scol, scores_raw = _required(r, "scores")
    prompt = _messages(r, pcol, prompt_raw, default_role="user") if prompt_raw is not None else None
    responses = None
    if responses_raw is not None:
        if not isinstance(responses_raw, list):
            r.issue(rcol, "wrong_type", f"is {_type_name(responses_raw)}; expected a list of responses")
        elif len(responses_raw) < 2:
            r.issue(rcol, "empty_field" if not responses_raw else "score_length",
                    f"has {len(responses_raw)} response(s); multi-response rows need at least 2")
        else:
            responses = []
            for i, resp in enumerate(responses_raw):
                msgs = _messages(r, f"{rcol}[{i}]", resp, default_role="assistant")
                if msgs is None:
                    responses = None
                    break
                if not _ends_with_assistant(r, f"{rcol}[{i}]", msgs):
                    responses = None
                    break
                responses.append(msgs)
    scores = None
    if scores_raw is not None:
        if not isinstance(scores_raw, list):
            r.issue(scol, "wrong_type", f"is {_type_name(scores_raw)}; expected a list of numbers")
        else:
            scores = [_number(r, f"{scol}[{i}]", s) for i, s in enumerate(scores_raw)]
            if isinstance(responses_raw, list) and len(scores_raw) != len(responses_raw):
                r.issue(scol, "score_length", f"has {len(scores_raw)} scores for {len(responses_raw)} "
                        f"responses in '{rcol}'; give one score per response")
    if r.issues or prompt is None or responses is None or scores is None:
        return None, r.issues
    return {"id": record_id, "prompt": prompt, "responses": responses, "scores": scores}, []


def record_kind(record: Mapping) -> str:
    """``"multi"`` for multi-response records, ``"pair"`` otherwise."""
    return "multi" if "responses" in record else "pair"
