"""Tiny local models and tokenizers for tests, benchmarks and examples. Nothing is downloaded.

``build_tokenizer`` trains a small byte-level BPE with the ``tokenizers`` library on a fixed corpus and
wraps it as a ``PreTrainedTokenizerFast`` with a chat template. ``build_tiny_llama`` makes a
random-initialised ``LlamaForCausalLM`` from a config. ``save_tiny_model`` writes both to a folder that
``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` load like a hub model.

Chat templates (``chat_template=``):

- ``"system"``: roles system/user/assistant, each turn ``<|role|>\\ncontent<|end|>\\n``;
  the generation prompt is ``<|assistant|>\\n``. ``<|end|>`` is the EOS token.
- ``"no_system"``: same format, but a system message raises (like Gemma's templates), so code must put
  instructions into the first user turn.
- ``"chatml"``: ChatML as Qwen writes it, ``<|im_start|>role\\ncontent<|im_end|>\\n`` per turn, generation
  prompt ``<|im_start|>assistant\\n``, no BOS token. Like Qwen, the EOS token (``<|endoftext|>``) is *not* the
  end-of-turn token (``<|im_end|>``), so code that ends completions with ``eos_token`` never trains the
  end-of-turn marker.
- ``None``: no chat template (plain prompt + completion concatenation).

Run ``python -m alphapo.tiny_models OUT_DIR`` to write a tiny model and tokenizer to a folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|unk|>"]

SYSTEM_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

NO_SYSTEM_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

CHATML_TOKENS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]  # added only for chat_template="chatml"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Sort the words: banana apple cherry. Answer: apple banana cherry",
    "Reverse the list 1 2 3 4 5. Answer: 5 4 3 2 1",
    "How many letters are in the word preference? There are ten letters.",
    "What is 12 plus 7? The answer is 19.",
    "Alignment of language models with human preferences uses pairs of responses.",
    "A chosen response is preferred over a rejected response by the judge.",
    "Hello world! Goodbye, world. Yes no maybe. 0123456789",
    "You are a helpful assistant. Please answer the question concisely and correctly.",
    "Generate a response with a score of 10 out of 10.",
]


def build_tokenizer(vocab_size: int = 384, chat_template: str | None = "system"):
    """A byte-level BPE ``PreTrainedTokenizerFast`` (deterministic: fixed corpus, fixed trainer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    chatml = chat_template == "chatml"
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS + (CHATML_TOKENS if chatml else []),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None if chatml else "<|bos|>",  # Qwen's ChatML tokenizers have no BOS
        eos_token="<|endoftext|>" if chatml else "<|end|>",
        pad_token="<|pad|>",
        unk_token="<|unk|>",
    )
    if chat_template == "system":
        fast.chat_template = SYSTEM_TEMPLATE
    elif chat_template == "no_system":
        fast.chat_template = NO_SYSTEM_TEMPLATE
    elif chatml:
        fast.chat_template = CHATML_TEMPLATE
    elif chat_template is not None:
        raise ValueError(f"chat_template must be 'system', 'no_system', 'chatml' or None, got {chat_template!r}")
    return fast


def tiny_llama_config(vocab_size: int, *, hidden_size: int = 32, layers: int = 2, heads: int = 4,
                      kv_heads: int = 2, intermediate_size: int = 64, max_positions: int = 512,
                      pad_token_id: int | None = 0, bos_token_id: int | None = 1,
                      eos_token_id: int | None = 2):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        tie_word_embeddings=False,
    )


def build_tiny_llama(vocab_size: int, *, seed: int = 0, **config_kwargs):
    """A random-initialised ``LlamaForCausalLM`` (float32), deterministic given ``seed``."""
    import torch
    from transformers import LlamaForCausalLM

    config = tiny_llama_config(vocab_size, **config_kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()


def save_tiny_model(out_dir: str | Path, *, seed: int = 0, chat_template: str | None = "system",
                    vocab_size: int | None = None, **config_kwargs) -> Path:
    """Write a tiny model + tokenizer to ``out_dir``; returns the path.

    ``vocab_size`` widens the model's embedding and output layer beyond the tokenizer's tokens (the extra
    rows are never produced by the tokenizer); benchmarks use it to give the output layer a realistic cost.
    """
    out = Path(out_dir)
    tok = build_tokenizer(chat_template=chat_template)
    if vocab_size is not None and vocab_size < len(tok):
        raise ValueError(f"vocab_size must be >= the tokenizer's {len(tok)} tokens, got {vocab_size}")
    ids = {name: tok.convert_tokens_to_ids(name) for name in ("<|pad|>", "<|bos|>", tok.eos_token)}
    model = build_tiny_llama(vocab_size or len(tok), seed=seed, pad_token_id=ids["<|pad|>"],
                             bos_token_id=ids["<|bos|>"], eos_token_id=ids[tok.eos_token], **config_kwargs)
    model.generation_config.pad_token_id = ids["<|pad|>"]
    # ChatML models stop at the end-of-turn marker as well as at EOS (as Qwen's generation_config does)
    model.generation_config.eos_token_id = (ids[tok.eos_token] if chat_template != "chatml" else
                                            [tok.convert_tokens_to_ids("<|im_end|>"), ids[tok.eos_token]])
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m alphapo.tiny_models OUT_DIR``: write a tiny model + tokenizer to ``OUT_DIR``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m alphapo.tiny_models",
                                     description="Write a tiny random Llama and its tokenizer to a folder "
                                                 "(nothing is downloaded).")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (created if missing)")
    parser.add_argument("--chat-template", choices=("system", "no_system", "none"), default="system",
                        help="chat template of the tokenizer (default: system)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    args = parser.parse_args(argv)
    template = None if args.chat_template == "none" else args.chat_template
    print(save_tiny_model(args.out_dir, seed=args.seed, chat_template=template))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
