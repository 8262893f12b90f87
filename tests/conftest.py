"""Shared fixtures: tiny local models and tokenizers, built from a config in the test run (no downloads)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A folder with a random-initialised tiny Llama and a BPE tokenizer whose chat template has a system role."""
    from alphapo.tiny_models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny_llama"), seed=0, chat_template="system")


@pytest.fixture(scope="session")
def tiny_model_dir_no_system(tmp_path_factory):
    """Same as ``tiny_model_dir`` but the chat template rejects a system role (Gemma-like)."""
    from alphapo.tiny_models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny_llama_nosys"), seed=0, chat_template="no_system")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from alphapo.tiny_models import build_tokenizer

    return build_tokenizer(chat_template="system")
