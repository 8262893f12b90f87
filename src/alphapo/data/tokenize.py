"""Tokenise canonical preference records into prompt ids and completion ids.

When the chat template is used (``chat_template=``, TRL's rule by default):

- ``"auto"`` (default): conversational records (the source gave message lists: layouts (b), (c), or (d)
  with message lists) are rendered with the tokenizer's chat template; standard records (the source gave
  plain strings, layout (a)) are used as they are. This is TRL's rule ("conversational data is templated,
  standard data is not"). A conversational record and a tokenizer without a template: plain text (below),
  counted in a warning.
- ``"always"``: every record is rendered with the template (a string prompt is one user turn, a string
  response one assistant turn); a tokenizer without a template is an error.
- ``"never"``: every record is plain text.

A string prompt that already holds the template's markers (e.g. ``<|im_start|>``) is counted and warned
about once: under ``"always"`` it is templated twice; otherwise its completions end with ``eos_token``,
not with the template's end-of-turn marker.

Templated records (exactly as TRL 1.16's ``DPOTrainer`` tokenises conversational data):

1. ``prompt_ids = apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)`` and, per
   response, ``full_ids = apply_chat_template(prompt + response, tokenize=True)``.
2. The completion starts where the prompt ids and every ``full_ids`` first differ (their common prefix,
   normally the whole prompt): ``completion_ids = full_ids[prefix:]``, so a completion is what the
   template renders for the assistant turn(s), end-of-turn marker included (ChatML: ``content<|im_end|>\n``),
   and no EOS is added. A template whose generation prompt is not a prefix of its full rendering (e.g. one
   that inserts reasoning tags) shortens the prompt to the common prefix; such rows are counted and warned
   about.

Plain-text records:

1. Prompt text: the prompt messages' contents joined by :data:`PLAIN_SEPARATOR`, tokenised with the
   tokenizer's own special tokens (so a BOS is added if the tokenizer is set up to add one).
2. Completion text: the final assistant message's ``content`` tokenised on its own with
   ``add_special_tokens=False``, then EOS appended exactly once (a trailing EOS string in the content is
   stripped first, so it is never doubled). Earlier turns of a multi-turn completion come first, each
   content followed by the separator.
3. The trainer concatenates ``prompt_input_ids + completion_input_ids``. Because the two are tokenised
   separately, no BPE merge ever crosses the boundary (tokenising the joined text instead can merge
   ``"wor" + "ld"`` into ``"world"`` and silently move a token across the mask).

   Deviations: TRL tokenises ``prompt + completion + eos`` jointly and splits at the common prefix, so
   its ids differ from ours exactly when a merge crosses the boundary; ours are the ids generation
   starts from.

Truncation (counted in the returned :class:`TokenizeReport`; rows are never dropped):

- ``max_prompt_length``: prompts longer than this keep their end (``prompt_truncation="keep_end"``, the
  default: the question nearest the response is kept) or their start (``"keep_start"``).
- ``max_length``: the completion is cut (keeping its start) so that prompt + completion fits. A cut
  completion has no EOS, because the response did not end there. Without ``max_prompt_length``, a prompt
  that alone fills ``max_length`` is cut to ``max_length // 2`` tokens (same keep_end/keep_start rule) so
  the completion keeps room; it is counted as a truncated prompt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from alphapo.errors import UserError

TRUNCATION_MODES = ("keep_end", "keep_start")
CHAT_TEMPLATE_MODES = ("auto", "always", "never")
PLAIN_SEPARATOR = "\n\n"  # between messages when they are rendered as plain text


@dataclass
class TokenizeReport:
    """What tokenisation did: rows in/out, how many were truncated and where, longest sequences seen.

    ``templated_rows`` / ``plain_rows`` count how each row was rendered (see ``chat_template=``).
    """

    rows: int = 0
    prompt_truncated: int = 0
    completion_truncated: int = 0
    truncated_rows: int = 0
    max_prompt_tokens: int = 0
    max_completion_tokens: int = 0
    templated_rows: int = 0
    plain_rows: int = 0
    identical_skipped: int = 0
    truncated_ids: list[str] = field(default_factory=list)
    identical_ids: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (f"{self.rows} rows tokenised ({self.templated_rows} with the chat template, {self.plain_rows} "
                f"as plain text); {self.truncated_rows} truncated ({self.prompt_truncated} prompts, "
                f"{self.completion_truncated} completions); longest prompt {self.max_prompt_tokens} tokens, "
                f"longest completion {self.max_completion_tokens} tokens (before truncation)")
        skipped = ([f"skipped {self.identical_skipped} pair(s) whose chosen and rejected tokenise identically "
                    f"(e.g. ids {self.identical_ids[:5]})"] if self.identical_skipped else [])
        return "\n".join([text] + skipped + [f"warning: {w}" for w in self.warnings])


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def is_conversational(record: Mapping) -> bool:
    """Whether the source gave message lists (TRL's "conversational" format) rather than plain strings.

    The schema layer stores this as ``record["conversational"]``; a record built by hand without the
    key holds message lists, so it counts as conversational.
    """
    return bool(record.get("conversational", True))


def uses_template(tokenizer, record: Mapping, chat_template: str = "auto") -> bool:
    """Whether ``record`` is rendered with the chat template under the ``chat_template`` mode."""
    if chat_template not in CHAT_TEMPLATE_MODES:
        raise UserError(f"chat_template must be one of {', '.join(CHAT_TEMPLATE_MODES)}, got {chat_template!r}")
    if chat_template == "never":
        return False
    if chat_template == "always":
        if not has_chat_template(tokenizer):
            raise UserError("chat_template='always' but the tokenizer has no chat template; set "
                            "tokenizer.chat_template or use chat_template='auto' / 'never'")
        return True
    return is_conversational(record) and has_chat_template(tokenizer)


def template_markers(tokenizer) -> list[str]:
    """The tokenizer's special / added tokens that its chat template writes literally (e.g. ``<|im_start|>``)."""
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str):
        return []
    added = {t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values()}
    specials = set(getattr(tokenizer, "all_special_tokens", [])) | added
    markers = {t for t in specials if t and t in template}
    if "bos_token" in template and getattr(tokenizer, "bos_token", None):
        markers.add(tokenizer.bos_token)
    return sorted(markers)


def plain_text(messages: Iterable[Mapping]) -> str:
    """Messages as plain text: their contents joined by :data:`PLAIN_SEPARATOR`."""
    return PLAIN_SEPARATOR.join(m["content"] for m in messages)


def prompt_text(tokenizer, prompt: list[Mapping], *, templated: bool | None = None) -> str:
    """The exact prompt string the model sees: the chat template with the generation prompt, or plain text.

    ``templated=None`` uses the template whenever the tokenizer has one (what generation and evaluation
    do with a conversation).
    """
    if has_chat_template(tokenizer) if templated is None else templated:
        return tokenizer.apply_chat_template([dict(m) for m in prompt], tokenize=False,
                                             add_generation_prompt=True)
    return plain_text(prompt)


def render_conversation(tokenizer, prompt: list[Mapping], response: str | None = None) -> tuple[str, bool]:
    """Render ``prompt`` (+ an assistant ``response``) as text; returns ``(text, used_chat_template)``.

    With a chat template: the full conversation (no generation prompt) when ``response`` is given, else
    the prompt with the generation prompt. Without one: plain text, the response following the prompt
    after :data:`PLAIN_SEPARATOR`. Callers must tokenise templated text with ``add_special_tokens=False``:
    templates already write BOS, and tokenizers that add it again would give a double BOS.
    """
    if not has_chat_template(tokenizer):
        text = plain_text(prompt)
        return (text if response is None else text + PLAIN_SEPARATOR + response), False
    if response is None:
        return prompt_text(tokenizer, prompt, templated=True), True
    conv = [dict(m) for m in prompt] + [{"role": "assistant", "content": response}]
    return tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=False), True


def _ids(tokenizer, text: str, *, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _template_ids(tokenizer, messages: list[Mapping], *, generation_prompt: bool) -> list[int]:
    """``apply_chat_template(..., tokenize=True)`` ids, as TRL's ``_tokenize`` gets them."""
    out = tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=True, return_dict=True,
                                        add_generation_prompt=generation_prompt)
    return list(out["input_ids"])


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def encode_prompt(tokenizer, prompt: list[Mapping], *, templated: bool | None = None) -> list[int]:
    """Prompt ids (``templated=None``: the template whenever the tokenizer has one)."""
    templated = has_chat_template(tokenizer) if templated is None else templated
    if templated:
        return _template_ids(tokenizer, prompt, generation_prompt=True)
    return _ids(tokenizer, plain_text(prompt), special=True)


def encode_plain_completion(tokenizer, completion: list[Mapping]) -> list[int]:
    """Plain-text completion ids: earlier turns + separators, then the last content and one EOS."""
    eos_id, eos = tokenizer.eos_token_id, tokenizer.eos_token
    if eos_id is None:
        raise UserError("the tokenizer has no eos_token; set one (tokenizer.eos_token = ...) so completions "
                        "can end with it")
    ids: list[int] = []
    if len(completion) > 1:
        ids += _ids(tokenizer, "".join(m["content"] + PLAIN_SEPARATOR for m in completion[:-1]), special=False)
    content = completion[-1]["content"]
    while eos and content.endswith(eos):
        content = content[: -len(eos)]
    return ids + _ids(tokenizer, content, special=False) + [eos_id]


def encode_record(tokenizer, prompt: list[Mapping], completions: list[list[Mapping]], *,
                  templated: bool) -> tuple[list[int], list[list[int]], bool]:
    """``(prompt_ids, completion_ids per response, prompt_is_prefix)`` per the module docstring.

    ``prompt_is_prefix`` is False when a template's generation prompt is not a prefix of its full
    rendering (the prompt ids were cut to the common prefix, as TRL does).
    """
    if not templated:
        return (encode_prompt(tokenizer, prompt, templated=False),
                [encode_plain_completion(tokenizer, c) for c in completions], True)
    prompt_ids = _template_ids(tokenizer, prompt, generation_prompt=True)
    fulls = [_template_ids(tokenizer, list(prompt) + list(c), generation_prompt=False) for c in completions]
    cut = min(common_prefix_length(prompt_ids, f) for f in fulls)
    return prompt_ids[:cut], [f[cut:] for f in fulls], cut == len(prompt_ids)


def encode_completion(tokenizer, prompt: list[Mapping], completion: list[Mapping], *,
                      templated: bool | None = None) -> list[int]:
    """One completion's ids (``templated=None``: the template whenever the tokenizer has one)."""
    templated = has_chat_template(tokenizer) if templated is None else templated
    return encode_record(tokenizer, prompt, [completion], templated=templated)[1][0]


def check_boundary(tokenizer, prompt_ids: list[int], completion_ids: list[int], prompt: list[Mapping],
                   completion: list[Mapping]) -> None:
    """Assert that plain-text ids decode back to the prompt text and the completion content (rule 3)."""
    want = plain_text(prompt)
    bos = tokenizer.bos_token_id
    if prompt_ids and bos is not None and prompt_ids[0] == bos and not want.startswith(tokenizer.bos_token):
        prompt_ids = prompt_ids[1:]  # the tokenizer added its BOS
    got = tokenizer.decode(prompt_ids, skip_special_tokens=False)
    if got != want:
        raise AssertionError(f"prompt ids decode to {got!r}, expected {want!r}")
    body = completion_ids[:-1] if completion_ids and completion_ids[-1] == tokenizer.eos_token_id else completion_ids
    tail = tokenizer.decode(body, skip_special_tokens=False)
    if not tail.endswith(completion[-1]["content"]):
        raise AssertionError(f"completion ids decode to {tail!r}, expected to end with the content")


def _truncate_prompt(ids: list[int], limit: int | None, mode: str) -> tuple[list[int], bool]:
    if limit is None or len(ids) <= limit:
        return ids, False
    return (ids[len(ids) - limit:] if mode == "keep_end" else ids[:limit]), True


def _check_arguments(max_length, max_prompt_length, prompt_truncation, chat_template) -> None:
    if prompt_truncation not in TRUNCATION_MODES:
        raise UserError(f"prompt_truncation must be one of {TRUNCATION_MODES}, got {prompt_truncation!r}")
    if chat_template not in CHAT_TEMPLATE_MODES:
        raise UserError(f"chat_template must be one of {', '.join(CHAT_TEMPLATE_MODES)}, got {chat_template!r}")
    for name, value in (("max_length", max_length), ("max_prompt_length", max_prompt_length)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise UserError(f"{name} must be a positive integer or None, got {value!r}")
    if max_length == 1:  # the prompt keeps >= 1 token, so no room would be left for any completion token
        raise UserError("max_length must be at least 2 (one prompt token and one completion token)")
    if max_length is not None and max_prompt_length is not None and max_prompt_length >= max_length:
        raise UserError(f"max_prompt_length ({max_prompt_length}) must be below max_length ({max_length}) "
                        "to leave room for the completion")


def _warnings(tokenizer, chat_template: str, *, marked: int, not_prefix: int, untemplated_conv: int) -> list[str]:
    out = []
    if marked:
        markers = ", ".join(template_markers(tokenizer))
        if chat_template == "always":
            out.append(f"{marked} string prompt(s) already contain chat-template markers ({markers}) and were "
                       "templated again (chat_template='always'); give such data with chat_template='auto'")
        else:
            out.append(f"{marked} string prompt(s) contain chat-template markers ({markers}) and are used as "
                       f"they are; their completions end with eos_token {tokenizer.eos_token!r}, not the "
                       "template's end-of-turn marker; give conversations (message lists) to have the "
                       "template render them")
    if not_prefix:
        out.append(f"{not_prefix} row(s): the chat template's generation prompt is not a prefix of its "
                   "rendering of the full conversation; the prompt ids were cut where they differ (as TRL "
                   "does), so training sees a context that differs from the one at inference")
    if untemplated_conv:
        out.append(f"{untemplated_conv} conversational row(s) rendered as plain text: the tokenizer has no "
                   "chat template")
    return out


IDENTICAL_POLICIES = ("error", "skip")


def split_group(record: Mapping) -> str:
    """The unit a train/eval split must not cut: the source pair of a relabeled record, else the prompt.

    Reward-augmented relabeling turns one pair into two records with swapped responses; with one in train
    and its twin in eval, eval measures memorisation. Grouping by prompt also keeps several pairs of one
    prompt (UltraFeedback has up to four completions per prompt) on one side.
    """
    meta = record.get("relabel")
    if isinstance(meta, Mapping) and (meta.get("source_id") is not None or meta.get("source_index") is not None):
        source = meta.get("source_id") if meta.get("source_id") is not None else f"#{meta.get('source_index')}"
        return f"pair:{source}"
    text = json.dumps(record["prompt"], ensure_ascii=False, sort_keys=True)
    return "prompt:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def tokenize_preferences(records: Iterable[Mapping], tokenizer, *, max_length: int | None = None,
                         max_prompt_length: int | None = None, prompt_truncation: str = "keep_end",
                         chat_template: str = "auto", on_identical: str = "error") -> tuple[list[dict], TokenizeReport]:
    """Tokenise canonical records (pairs or multi-response) for training.

    Returns ``(examples, report)``. A pair example is ``{"id", "group", "prompt_input_ids", "chosen_input_ids",
    "rejected_input_ids"}`` plus ``chosen_score`` / ``rejected_score`` when the record has them; a
    multi-response example is ``{"id", "group", "prompt_input_ids", "responses_input_ids", "scores"}``.
    ``group`` (:func:`split_group`) is what a train/eval split keeps together. See the
    module docstring for ``chat_template`` and the boundary and truncation rules.

    A pair whose chosen and rejected ids are identical (different texts that tokenise the same, e.g. a
    template that trims ``"a b "`` to ``"a b"``, or two responses that truncation cut to the same prefix)
    states no preference: ``on_identical="error"`` raises a ``UserError`` naming them, ``"skip"`` drops
    them and counts them in the report. Otherwise ``len(examples) == number of records``.
    """
    _check_arguments(max_length, max_prompt_length, prompt_truncation, chat_template)
    if on_identical not in IDENTICAL_POLICIES:
        raise UserError(f"on_identical must be one of {IDENTICAL_POLICIES}, got {on_identical!r}")
    markers = template_markers(tokenizer)
    marked = not_prefix = untemplated_conv = 0
    report = TokenizeReport()
    examples: list[dict] = []
    for record in records:
        report.rows += 1
        templated = uses_template(tokenizer, record, chat_template)
        report.templated_rows += templated
        report.plain_rows += not templated
        if not is_conversational(record) and any(m in msg["content"] for msg in record["prompt"] for m in markers):
            marked += 1
        untemplated_conv += chat_template == "auto" and is_conversational(record) and not templated
        responses = record["responses"] if "responses" in record else [record["chosen"], record["rejected"]]
        try:
            prompt_ids, completions, is_prefix = encode_record(tokenizer, record["prompt"], responses,
                                                               templated=templated)
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 - jinja TemplateError, ValueError...: name the record
            raise UserError(f"record {record['id']!r}: the chat template cannot render it ({type(err).__name__}: "
                            f"{err}); e.g. templates without a system role need the system text in the user "
                            "turn") from err
        not_prefix += not is_prefix
        report.max_prompt_tokens = max(report.max_prompt_tokens, len(prompt_ids))
        report.max_completion_tokens = max([report.max_completion_tokens] + [len(c) for c in completions])
        prompt_ids, cut_prompt = _truncate_prompt(prompt_ids, max_prompt_length, prompt_truncation)
        cut_completion = False
        if max_length is not None:
            if len(prompt_ids) >= max_length:  # only possible without max_prompt_length: see docstring
                prompt_ids, cut_prompt = _truncate_prompt(prompt_ids, max(max_length // 2, 1), prompt_truncation)
            room = max_length - len(prompt_ids)
            if any(len(c) > room for c in completions):
                cut_completion = True
                completions = [c[:room] for c in completions]
        report.prompt_truncated += cut_prompt
        report.completion_truncated += cut_completion
        if cut_prompt or cut_completion:
            report.truncated_rows += 1
            report.truncated_ids.append(str(record["id"]))
        if "responses" not in record and completions[0] == completions[1]:
            report.identical_ids.append(str(record["id"]))
            if on_identical == "skip":
                report.identical_skipped += 1
                continue
        example: dict = {"id": str(record["id"]), "group": split_group(record), "prompt_input_ids": prompt_ids}
        if "responses" in record:
            example["responses_input_ids"] = completions
            example["scores"] = [float(s) for s in record["scores"]]
        else:
            example["chosen_input_ids"], example["rejected_input_ids"] = completions
            for key in ("chosen_score", "rejected_score"):
                if record.get(key) is not None:
                    example[key] = float(record[key])
        examples.append(example)
    if report.identical_ids and on_identical == "error":
        ids = report.identical_ids
        raise UserError(f"{len(ids)} pair(s) have chosen and rejected that tokenise to the same ids (e.g. ids "
                        f"{ids[:5]}), so they state no preference; fix or drop them (training: "
                        "data.skip_invalid=true skips and counts them)")
    report.warnings += _warnings(tokenizer, chat_template, marked=marked, not_prefix=not_prefix,
                                 untemplated_conv=untemplated_conv)
    return examples, report
