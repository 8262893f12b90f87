"""Tokenisation: exact prompt ids from the chat template, completion ids + one EOS, truncation counts."""

from __future__ import annotations

import pytest

from alphapo.data import tokenize_preferences
from alphapo.data.tokenize import check_boundary, encode_completion, encode_prompt
from alphapo.errors import UserError
from alphapo.tiny_models import build_tokenizer


def _pair(prompt="What is 12 plus 7?", chosen="The answer is 19.", rejected="20", **extra):
    return {"id": "p", "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "chosen_score": None, "rejected_score": None, **extra}


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_chat_template_prompt_and_completion_ids(tiny_tokenizer):
    """Conversational record: prompt = template text with the generation prompt; completion = what the
    template renders for the assistant turn, end-of-turn marker and newline included (no extra EOS)."""
    tok = tiny_tokenizer
    (ex,), report = tokenize_preferences([_pair(chosen_score=9, rejected_score=2)], tok)
    assert ex["prompt_input_ids"] == _ids(tok, "<|bos|><|user|>\nWhat is 12 plus 7?<|end|>\n<|assistant|>\n")
    assert ex["chosen_input_ids"] == _ids(tok, "The answer is 19.<|end|>\n")
    assert ex["rejected_input_ids"] == _ids(tok, "20<|end|>\n")
    assert ex["chosen_score"] == 9.0 and ex["rejected_score"] == 2.0
    assert ex["chosen_input_ids"].count(tok.eos_token_id) == 1
    assert report.rows == report.templated_rows == 1 and report.truncated_rows == 0


def test_eos_in_content_is_not_doubled(tiny_tokenizer):
    tok = tiny_tokenizer
    (ex,), _ = tokenize_preferences([_pair(chosen="Yes<|end|>")], tok, chat_template="never")
    assert ex["chosen_input_ids"] == _ids(tok, "Yes") + [tok.eos_token_id]


def test_no_template_is_plain_concatenation():
    tok = build_tokenizer(chat_template=None)
    (ex,), _ = tokenize_preferences([_pair(prompt="Hello wor", chosen="ld!")], tok)
    assert ex["prompt_input_ids"] == tok("Hello wor")["input_ids"]
    assert ex["chosen_input_ids"] == _ids(tok, "ld!") + [tok.eos_token_id]


def test_boundary_never_merges_tokens():
    """Joint tokenisation of "Hello wor" + "ld" merges across the boundary; ours keeps them apart."""
    tok = build_tokenizer(chat_template=None)
    prompt, completion = "Hello wor", "ld"
    joint = _ids(tok, prompt + completion)
    sep_p, sep_c = _ids(tok, prompt), _ids(tok, completion)
    assert joint != sep_p + sep_c, "fixture must be a case where BPE merges across the boundary"
    rec = _pair(prompt=prompt, chosen=completion)
    p_ids = encode_prompt(tok, rec["prompt"])
    c_ids = encode_completion(tok, rec["prompt"], rec["chosen"])
    assert p_ids == sep_p and c_ids == sep_c + [tok.eos_token_id]
    check_boundary(tok, p_ids, c_ids, rec["prompt"], rec["chosen"])
    assert tok.decode(p_ids + c_ids[:-1]) == prompt + completion


def test_truncation_keep_end_and_keep_start(tiny_tokenizer):
    tok = tiny_tokenizer
    full = encode_prompt(tok, _pair()["prompt"])
    (end,), rep = tokenize_preferences([_pair()], tok, max_prompt_length=5)
    (start,), _ = tokenize_preferences([_pair()], tok, max_prompt_length=5, prompt_truncation="keep_start")
    assert end["prompt_input_ids"] == full[-5:] and start["prompt_input_ids"] == full[:5]
    assert rep.prompt_truncated == 1 and rep.truncated_rows == 1 and rep.completion_truncated == 0


def test_max_length_cuts_completion_without_eos_and_counts(tiny_tokenizer):
    tok = tiny_tokenizer
    recs = [_pair(), _pair(chosen="a", rejected="b")]  # "a<|end|>\n" is 3 tokens: fits
    p = len(encode_prompt(tok, recs[0]["prompt"]))
    examples, rep = tokenize_preferences(recs, tok, max_length=p + 3)
    assert len(examples) == 2  # never dropped
    assert examples[0]["chosen_input_ids"] == _ids(tok, "The answer is 19.")[:3]  # no EOS: cut mid-response
    assert rep.completion_truncated == 1 and rep.truncated_rows == 1 and rep.truncated_ids == ["p"]
    for ex in examples:
        assert len(ex["prompt_input_ids"]) + len(ex["chosen_input_ids"]) <= p + 3


def test_prompt_filling_max_length_is_cut_to_half(tiny_tokenizer):
    """No max_prompt_length and a prompt of p >= max_length = 6 tokens: the prompt keeps its last
    6 // 2 = 3 tokens, the completions get the other 3 (cut, so no EOS); counted as both truncations."""
    tok = tiny_tokenizer
    rec = _pair()
    full = encode_prompt(tok, rec["prompt"])
    assert len(full) >= 6
    (ex,), rep = tokenize_preferences([rec], tok, max_length=6)
    assert ex["prompt_input_ids"] == full[-3:]
    assert ex["chosen_input_ids"] == _ids(tok, "The answer is 19.")[:3]
    assert (rep.prompt_truncated, rep.completion_truncated, rep.truncated_rows) == (1, 1, 1)


def test_bad_truncation_arguments(tiny_tokenizer):
    with pytest.raises(UserError, match="at least 2"):  # used to return empty completions (length 0)
        tokenize_preferences([_pair()], tiny_tokenizer, max_length=1)
    with pytest.raises(UserError, match="prompt_truncation"):
        tokenize_preferences([_pair()], tiny_tokenizer, prompt_truncation="middle")
    with pytest.raises(UserError, match="max_prompt_length"):
        tokenize_preferences([_pair()], tiny_tokenizer, max_length=8, max_prompt_length=8)


def test_multi_response(tiny_tokenizer):
    tok = tiny_tokenizer
    rec = {"id": "m", "prompt": [{"role": "user", "content": "Hi"}],
           "responses": [[{"role": "assistant", "content": "a"}], [{"role": "assistant", "content": "b"}]],
           "scores": [1, 2]}
    (ex,), _ = tokenize_preferences([rec], tok)
    assert ex["responses_input_ids"] == [_ids(tok, "a<|end|>\n"), _ids(tok, "b<|end|>\n")]
    assert ex["scores"] == [1.0, 2.0]


def test_multi_turn_completion_uses_template_for_middle_turns(tiny_tokenizer):
    """Completion [a1, u2, a2]: the template's rendering of all three turns after the prompt."""
    tok = tiny_tokenizer
    rec = _pair()
    rec["chosen"] = [{"role": "assistant", "content": "19"}, {"role": "user", "content": "Sure?"},
                     {"role": "assistant", "content": "Yes"}]
    (ex,), _ = tokenize_preferences([rec], tok)
    middle = "19<|end|>\n<|user|>\nSure?<|end|>\n<|assistant|>\n"
    assert ex["chosen_input_ids"] == _ids(tok, middle + "Yes<|end|>\n")
    (plain,), _ = tokenize_preferences([rec], tok, chat_template="never")  # contents + separators, one EOS
    assert plain["chosen_input_ids"] == _ids(tok, "19\n\nSure?\n\nYes") + [tok.eos_token_id]


def test_template_mismatch_is_reported():
    tok = build_tokenizer(chat_template="system")
    (_,), report = tokenize_preferences([_pair()], tok)
    assert report.warnings == []
    tok.chat_template = tok.chat_template.replace("{% if add_generation_prompt %}<|assistant|>\n",
                                                  "{% if add_generation_prompt %}<|assistant|>\n<think>")
    (_,), report = tokenize_preferences([_pair()], tok)
    assert len(report.warnings) == 1 and "not a prefix" in report.warnings[0]


CHATML_TURN = "<|im_start|>{}\n{}<|im_end|>\n"


def test_trl_format_rule_strings_as_they_are_conversations_templated(tiny_tokenizer):
    """chat_template="auto" (TRL's rule): a record from strings is plain text even though the tokenizer has a
    template; the same record from message lists is templated; "always" / "never" override both ways."""
    tok = tiny_tokenizer
    standard, conv = _pair(conversational=False), _pair(conversational=True)
    templated_prompt = _ids(tok, "<|bos|><|user|>\nWhat is 12 plus 7?<|end|>\n<|assistant|>\n")
    plain_prompt = tok("What is 12 plus 7?")["input_ids"]
    (s_ex, c_ex), report = tokenize_preferences([standard, conv], tok)
    assert s_ex["prompt_input_ids"] == plain_prompt and c_ex["prompt_input_ids"] == templated_prompt
    assert s_ex["chosen_input_ids"] == _ids(tok, "The answer is 19.") + [tok.eos_token_id]
    assert (report.templated_rows, report.plain_rows) == (1, 1)
    (a, b), _ = tokenize_preferences([standard, conv], tok, chat_template="always")
    assert a == b == c_ex
    (a, b), _ = tokenize_preferences([standard, conv], tok, chat_template="never")
    assert a == b == s_ex


def test_chatml_completion_ends_with_end_of_turn_not_eos():
    """Qwen-like: eos_token <|endoftext|> differs from the end-of-turn <|im_end|>. A conversational completion
    is the template's assistant turn (so <|im_end|> is trained); a string completion ends with eos_token."""
    tok = build_tokenizer(chat_template="chatml")
    assert tok.eos_token == "<|endoftext|>" and tok.bos_token is None
    (conv, std), report = tokenize_preferences([_pair(), _pair(conversational=False)], tok)
    assert conv["prompt_input_ids"] == _ids(tok, CHATML_TURN.format("user", "What is 12 plus 7?")
                                            + "<|im_start|>assistant\n")
    assert conv["chosen_input_ids"] == _ids(tok, "The answer is 19.<|im_end|>\n")
    assert tok.convert_tokens_to_ids("<|im_end|>") in conv["chosen_input_ids"]
    assert tok.eos_token_id not in conv["chosen_input_ids"]
    assert std["chosen_input_ids"] == _ids(tok, "The answer is 19.") + [tok.eos_token_id]
    assert report.warnings == []


def test_string_prompt_with_template_markers_warns_once_with_count():
    tok = build_tokenizer(chat_template="chatml")
    pre = CHATML_TURN.format("user", "Hi") + "<|im_start|>assistant\n"
    recs = [_pair(prompt=pre, conversational=False), _pair(prompt=pre, conversational=False),
            _pair(conversational=False)]
    (first, _, _), report = tokenize_preferences(recs, tok)
    assert first["prompt_input_ids"] == _ids(tok, pre)  # used as it is, not templated again
    assert len(report.warnings) == 1
    assert report.warnings[0].startswith("2 string prompt(s) contain chat-template markers (<|im_end|>, "
                                         "<|im_start|>) and are used as they are")
    _, report = tokenize_preferences(recs, tok, chat_template="always")
    assert len(report.warnings) == 1 and "templated again" in report.warnings[0]
    _, report = tokenize_preferences([_pair(conversational=True)], tok)  # a conversation: nothing to warn
    assert report.warnings == []


def test_chat_template_mode_errors(tiny_tokenizer):
    with pytest.raises(UserError, match="chat_template must be one of auto, always, never, got 'yes'"):
        tokenize_preferences([_pair()], tiny_tokenizer, chat_template="yes")
    with pytest.raises(UserError, match="tokenizer has no chat template"):
        tokenize_preferences([_pair()], build_tokenizer(chat_template=None), chat_template="always")
    (ex,), report = tokenize_preferences([_pair()], build_tokenizer(chat_template=None))  # auto: plain, counted
    assert report.plain_rows == 1 and report.warnings == [
        "1 conversational row(s) rendered as plain text: the tokenizer has no chat template"]


def test_a_template_that_cannot_render_a_record_is_a_one_line_error():
    """A Gemma-like template raises on a system turn: a UserError naming the record, not a jinja traceback."""
    tok = build_tokenizer(chat_template="no_system")
    rec = _pair(id="r7")
    rec["prompt"] = [{"role": "system", "content": "Be brief."}] + rec["prompt"]
    with pytest.raises(UserError, match=r"^record 'r7': the chat template cannot render it \(TemplateError: "
                                        r"System role not supported\)"):
        tokenize_preferences([rec], tok)
