"""Fixtures for generation tests: a tiny random reward model (LlamaForSequenceClassification) on disk."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_reward_model_dir(tmp_path_factory):
    """A random-initialised 1-label ``LlamaForSequenceClassification`` + the tiny tokenizer, saved locally."""
    import torch
    from transformers import LlamaForSequenceClassification

    from alphapo.tiny_models import build_tokenizer, tiny_llama_config

    tok = build_tokenizer(chat_template="system")
    config = tiny_llama_config(len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                               eos_token_id=tok.eos_token_id)
    config.num_labels = 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        model = LlamaForSequenceClassification(config).eval()
        # a random score head is ~0 everywhere; scale it so different responses get clearly different scores
        model.score.weight.data.normal_(0.0, 1.0)
    out = tmp_path_factory.mktemp("tiny_rm")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
