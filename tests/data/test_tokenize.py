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
    """Prompt = template text with the generation prompt; completion = content tokens + exactly one EOS."""
    tok = tiny_tokenizer
    (ex,), report = tokenize_preferences([_pair(chosen_score=9, rejected_score=2)], tok)
    assert ex["prompt_input_ids"] == _ids(tok, "<|bos|><|user|>\nWhat is 12 plus 7?<|end|>\n<|assistant|>\n")
    assert ex["chosen_input_ids"] == _ids(tok, "The answer is 19.") + [tok.eos_token_id]
    assert ex["rejected_input_ids"] == _ids(tok, "20") + [tok.eos_token_id]
    assert ex["chosen_score"] == 9.0 and ex["rejected_score"] == 2.0
    assert ex["chosen_input_ids"].count(tok.eos_token_id) == 1
    assert report.rows == 1 and report.truncated_rows == 0


def test_eos_in_content_is_not_doubled(tiny_tokenizer):
    tok = tiny_tokenizer
    (ex,), _ = tokenize_preferences([_pair(chosen="Yes<|end|>")], tok)
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
    recs = [_pair(), _pair(chosen="a", rejected="b")]
    p = len(encode_prompt(tok, recs[0]["prompt"]))
    examples, rep = tokenize_preferences(recs, tok, max_length=p + 2)
    assert len(examples) == 2  # never dropped
    assert examples[0]["chosen_input_ids"] == _ids(tok, "The answer is 19.")[:2]  # no EOS: cut mid-response
    assert rep.completion_truncated == 1 and rep.truncated_rows == 1 and rep.truncated_ids == ["p"]
    for ex in examples:
        assert len(ex["prompt_input_ids"]) + len(ex["chosen_input_ids"]) <= p + 2


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
    assert ex["responses_input_ids"] == [_ids(tok, "a") + [2], _ids(tok, "b") + [2]]
    assert ex["scores"] == [1.0, 2.0]


def test_multi_turn_completion_uses_template_for_middle_turns(tiny_tokenizer):
    """Completion [a1, u2, a2]: template text of a1 and u2 (+ generation prompt), then a2 content + EOS."""
    tok = tiny_tokenizer
    rec = _pair()
    rec["chosen"] = [{"role": "assistant", "content": "19"}, {"role": "user", "content": "Sure?"},
                     {"role": "assistant", "content": "Yes"}]
    (ex,), _ = tokenize_preferences([rec], tok)
    middle = "19<|end|>\n<|user|>\nSure?<|end|>\n<|assistant|>\n"
    assert ex["chosen_input_ids"] == _ids(tok, middle) + _ids(tok, "Yes") + [tok.eos_token_id]


def test_template_mismatch_is_reported():
    tok = build_tokenizer(chat_template="system")
    (_,), report = tokenize_preferences([_pair()], tok)
    assert report.warnings == []
    tok.chat_template = tok.chat_template.replace("{% if add_generation_prompt %}<|assistant|>\n",
                                                  "{% if add_generation_prompt %}<|assistant|>\n<think>")
    (_,), report = tokenize_preferences([_pair()], tok)
    assert len(report.warnings) == 1 and "not a prefix" in report.warnings[0]
