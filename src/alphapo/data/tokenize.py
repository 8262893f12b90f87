"""Tokenise canonical preference records into prompt ids and completion ids (the data contract of ``alphapo.data.schema``).

The boundary rule (why the prompt and each completion are tokenised *separately*):

1. Prompt text: with a chat template, ``apply_chat_template(prompt, add_generation_prompt=True,
   tokenize=False)``, tokenised with ``add_special_tokens=False`` (the template already writes BOS).
   Without a template, the prompt messages' contents joined by a blank line, tokenised with the
   tokenizer's own special tokens (so a BOS is added if the tokenizer is set up to add one).
2. Completion text: the final assistant message's ``content`` exactly, tokenised on its own with
   ``add_special_tokens=False``, then EOS appended exactly once (a trailing EOS string in the content is
   stripped first, so it is never doubled). A completion of several turns (assistant, user, assistant)
   is tokenised as the template's rendering of the turns before the last, then the last content + EOS.
3. The trainer concatenates ``prompt_input_ids + completion_input_ids``. Because the two are tokenised
   separately, no BPE merge ever crosses the boundary: the prompt ids are the same for chosen and
   rejected, they are exactly what generation starts from at inference time, and every completion token
   belongs to the completion. (Tokenising the joined text instead can merge the last prompt characters
   with the first completion characters, e.g. ``"wor" + "ld"`` -> ``"world"``, which silently moves a
   token across the mask.) ``check_boundary`` verifies that decoding the ids gives back the texts.

Truncation (counted in the returned :class:`TokenizeReport`; rows are never dropped):

- ``max_prompt_length``: prompts longer than this keep their end (``prompt_truncation="keep_end"``, the
  default: the question nearest the response is kept) or their start (``"keep_start"``).
- ``max_length``: the completion is cut (keeping its start) so that prompt + completion fits. A cut
  completion has no EOS, because the response did not end there. Without ``max_prompt_length``, a prompt
  that alone fills ``max_length`` is cut to ``max_length // 2`` tokens (same keep_end/keep_start rule) so
  the completion keeps room; it is counted as a truncated prompt.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from alphapo.errors import UserError

TRUNCATION_MODES = ("keep_end", "keep_start")
PLAIN_SEPARATOR = "\n\n"  # between prompt messages when the tokenizer has no chat template


@dataclass
class TokenizeReport:
    """What tokenisation did: rows in/out, how many were truncated and where, longest sequences seen."""

    rows: int = 0
    prompt_truncated: int = 0
    completion_truncated: int = 0
    truncated_rows: int = 0
    max_prompt_tokens: int = 0
    max_completion_tokens: int = 0
    truncated_ids: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (f"{self.rows} rows tokenised; {self.truncated_rows} truncated ({self.prompt_truncated} "
                f"prompts, {self.completion_truncated} completions); longest prompt {self.max_prompt_tokens} "
                f"tokens, longest completion {self.max_completion_tokens} tokens (before truncation)")
        return "\n".join([text] + [f"warning: {w}" for w in self.warnings])


def template_mismatch(tokenizer, prompt: list[Mapping], completion: list[Mapping]) -> str | None:
    """Why prompt-with-generation-prompt + completion differs from the template's own full rendering.

    Some templates render an assistant turn differently from what their generation prompt announces
    (e.g. they insert reasoning tags). Training on ``prompt_text + content`` then teaches a format the
    template never produces; we cannot fix that generically, so :func:`tokenize_preferences` reports it.
    Returns None when consistent (or when there is no template).
    """
    if not has_chat_template(tokenizer):
        return None
    head = prompt_text(tokenizer, prompt)
    full = tokenizer.apply_chat_template([dict(m) for m in list(prompt) + list(completion)], tokenize=False)
    if not full.startswith(head):
        return ("the chat template's generation prompt is not a prefix of its rendering of a full "
                "conversation; prompt ids follow the generation prompt (what inference sees)")
    if not full[len(head):].lstrip().startswith(completion[0]["content"].strip()[:20]):
        return ("the chat template inserts text between the generation prompt and the assistant content; "
                "completion ids hold the content only")
    return None


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _ids(tokenizer, text: str, *, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def prompt_text(tokenizer, prompt: list[Mapping]) -> str:
    """The exact prompt string the model sees (chat template with generation prompt, or plain text)."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template([dict(m) for m in prompt], tokenize=False,
                                             add_generation_prompt=True)
    return PLAIN_SEPARATOR.join(m["content"] for m in prompt)


def encode_prompt(tokenizer, prompt: list[Mapping]) -> list[int]:
    """Prompt ids per rule 1 of the module docstring."""
    if has_chat_template(tokenizer):
        return _ids(tokenizer, prompt_text(tokenizer, prompt), special=False)
    return _ids(tokenizer, prompt_text(tokenizer, prompt), special=True)


def encode_completion(tokenizer, prompt: list[Mapping], completion: list[Mapping]) -> list[int]:
    """Completion ids per rule 2: (turns before the last, rendered) + last content + one EOS."""
    eos_id, eos = tokenizer.eos_token_id, tokenizer.eos_token
    if eos_id is None:
        raise UserError("the tokenizer has no eos_token; set one (tokenizer.eos_token = ...) so completions "
                        "can end with it")
    ids: list[int] = []
    if len(completion) > 1:
        if has_chat_template(tokenizer):
            head = prompt_text(tokenizer, prompt)
            full = prompt_text(tokenizer, list(prompt) + list(completion[:-1]))
            if not full.startswith(head):
                raise UserError("the chat template renders the prompt differently when more turns follow, "
                                "so a multi-turn completion cannot be split from it; keep only the final "
                                "assistant turn in chosen/rejected")
            middle = full[len(head):]
        else:
            middle = "".join(m["content"] + PLAIN_SEPARATOR for m in completion[:-1])
        ids += _ids(tokenizer, middle, special=False)
    content = completion[-1]["content"]
    while eos and content.endswith(eos):
        content = content[: -len(eos)]
    ids += _ids(tokenizer, content, special=False)
    return ids + [eos_id]


def check_boundary(tokenizer, prompt_ids: list[int], completion_ids: list[int], prompt: list[Mapping],
                   completion: list[Mapping]) -> None:
    """Assert that decoding gives back the prompt text and the completion content (rule 3)."""
    want = prompt_text(tokenizer, prompt)
    bos = tokenizer.bos_token_id
    if prompt_ids and bos is not None and prompt_ids[0] == bos and not want.startswith(tokenizer.bos_token):
        prompt_ids = prompt_ids[1:]  # plain mode: the tokenizer added its BOS
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


def tokenize_preferences(records: Iterable[Mapping], tokenizer, *, max_length: int | None = None,
                         max_prompt_length: int | None = None,
                         prompt_truncation: str = "keep_end") -> tuple[list[dict], TokenizeReport]:
    """Tokenise canonical records (pairs or multi-response) for training.

    Returns ``(examples, report)``. A pair example is ``{"id", "prompt_input_ids", "chosen_input_ids",
    "rejected_input_ids"}`` plus ``chosen_score`` / ``rejected_score`` when the record has them; a
    multi-response example is ``{"id", "prompt_input_ids", "responses_input_ids", "scores"}``. See the
    module docstring for the boundary and truncation rules. ``len(examples) == number of records``.
    """
    if prompt_truncation not in TRUNCATION_MODES:
        raise UserError(f"prompt_truncation must be one of {TRUNCATION_MODES}, got {prompt_truncation!r}")
    for name, value in (("max_length", max_length), ("max_prompt_length", max_prompt_length)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise UserError(f"{name} must be a positive integer or None, got {value!r}")
    if max_length == 1:  # the prompt keeps >= 1 token, so no room would be left for any completion token
        raise UserError("max_length must be at least 2 (one prompt token and one completion token)")
    if max_length is not None and max_prompt_length is not None and max_prompt_length >= max_length:
        raise UserError(f"max_prompt_length ({max_prompt_length}) must be below max_length ({max_length}) "
                        "to leave room for the completion")
    report = TokenizeReport()
    examples: list[dict] = []
    for record in records:
        report.rows += 1
        if report.rows == 1:  # a template property, so one probe is enough
            first = record["responses"][0] if "responses" in record else record["chosen"]
            mismatch = template_mismatch(tokenizer, record["prompt"], first)
            if mismatch:
                report.warnings.append(mismatch)
        prompt_ids = encode_prompt(tokenizer, record["prompt"])
        report.max_prompt_tokens = max(report.max_prompt_tokens, len(prompt_ids))
        prompt_ids, cut_prompt = _truncate_prompt(prompt_ids, max_prompt_length, prompt_truncation)
        if "responses" in record:
            completions = [encode_completion(tokenizer, record["prompt"], r) for r in record["responses"]]
        else:
            completions = [encode_completion(tokenizer, record["prompt"], record[k])
                           for k in ("chosen", "rejected")]
        report.max_completion_tokens = max([report.max_completion_tokens] + [len(c) for c in completions])
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
        example: dict = {"id": str(record["id"]), "prompt_input_ids": prompt_ids}
        if "responses" in record:
            example["responses_input_ids"] = completions
            example["scores"] = [float(s) for s in record["scores"]]
        else:
            example["chosen_input_ids"], example["rejected_input_ids"] = completions
            for key in ("chosen_score", "rejected_score"):
                if record.get(key) is not None:
                    example[key] = float(record[key])
        examples.append(example)
    return examples, report
