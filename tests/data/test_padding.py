"""pad_batch: the one padding helper (right padding for scoring, left padding for generation)."""

from __future__ import annotations

import pytest

from alphapo.data.padding import pad_batch


def test_right_and_left_padding_by_hand():
    ids, mask = pad_batch([[5, 6, 7], [8], []], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=9, side="left")
    assert ids.tolist() == [[5, 6, 7], [9, 9, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert str(ids.dtype) == str(mask.dtype) == "torch.int64"


def test_empty_batch_and_bad_side():
    ids, mask = pad_batch([], pad_id=0)
    assert tuple(ids.shape) == tuple(mask.shape) == (0, 0)
    with pytest.raises(ValueError, match="side must be one of"):
        pad_batch([[1]], pad_id=0, side="middle")


def test_render_conversation_has_one_home_and_one_separator(tiny_tokenizer):
    """Generation, judges and training render a conversation with the same function and plain separator."""
    from alphapo.data import tokenize
    from alphapo.generation import judges, sampling
    from alphapo.tiny_models import build_tokenizer

    assert judges.render_conversation is sampling.render_conversation is tokenize.render_conversation
    assert not hasattr(judges, "PLAIN_SEPARATOR")
    plain = build_tokenizer(chat_template=None)
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert tokenize.render_conversation(plain, prompt, "Hello") == ("Be brief.\n\nHi\n\nHello", False)
    assert tokenize.render_conversation(tiny_tokenizer, prompt) == (tokenize.prompt_text(tiny_tokenizer, prompt), True)
