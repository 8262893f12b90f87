"""A word-level tokenizer for the toy world, built locally with the ``tokenizers`` library.

One token per vocabulary word (``tasks.VOCABULARY``) plus the special tokens of ``alphapo.tiny_models``
(``<|pad|> <|bos|> <|end|> <|system|> <|user|> <|assistant|> <|unk|>``). Word-level tokens make a
tiny model learn the tasks fast: "sort these words : pear fox" is 6 tokens. Decoding joins words with
single spaces, which is exactly the toy world's text format, so ``decode(encode(text)) == text``.

The chat template has a system role: ``<|bos|>`` then, per message, ``<|role|>\\ncontent<|end|>\\n``;
the generation prompt is ``<|assistant|>\\n``. ``<|end|>`` is the EOS token.
"""

from __future__ import annotations

from alphapo.tiny_models import SPECIAL_TOKENS, SYSTEM_TEMPLATE
from alphapo.toyworld.tasks import VOCABULARY


def build_toy_tokenizer():
    """The toy world's ``PreTrainedTokenizerFast`` (deterministic: the vocabulary is a fixed list)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + list(VOCABULARY))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with one space
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        unk_token="<|unk|>",
        additional_special_tokens=[t for t in SPECIAL_TOKENS
                                   if t not in ("<|pad|>", "<|bos|>", "<|end|>", "<|unk|>")],
    )
    fast.chat_template = SYSTEM_TEMPLATE
    return fast
