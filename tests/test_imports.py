"""Cheap guard: every module of the package imports, and the CLI builds its parser."""

from __future__ import annotations

import importlib
import pkgutil

import alphapo


def _all_modules():
    yield "alphapo"
    for info in pkgutil.walk_packages(alphapo.__path__, prefix="alphapo."):
        yield info.name


def test_every_module_imports():
    names = list(_all_modules())
    assert "alphapo.cli" in names and "alphapo.tiny_models" in names
    for name in names:
        importlib.import_module(name)


def test_cli_help_lists_commands():
    import re

    from alphapo.cli import build_parser

    help_text = build_parser().format_help()
    listed = re.findall(r"^    (\S+)", help_text, flags=re.MULTILINE)
    assert listed == ["analyze", "data", "train", "plot-run", "toy", "generate", "eval", "quickstart", "experiment", "sweep",
                      "experiment-plot", "demo"]


def test_tiny_model_loads_like_a_hub_model(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert tok.eos_token == "<|end|>" and tok.pad_token_id == model.config.pad_token_id
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == "<|bos|><|user|>\nhi<|end|>\n<|assistant|>\n"
    out = model(torch.tensor([[1, 5, 6]]))
    assert out.logits.shape == (1, 3, len(tok))


def test_save_tiny_model_can_widen_the_vocabulary(tmp_path):
    import pytest
    from transformers import AutoConfig

    from alphapo.tiny_models import build_tokenizer, save_tiny_model

    n_tokens = len(build_tokenizer())
    out = save_tiny_model(tmp_path / "wide", vocab_size=n_tokens + 100)
    assert AutoConfig.from_pretrained(out).vocab_size == n_tokens + 100
    with pytest.raises(ValueError, match="vocab_size"):
        save_tiny_model(tmp_path / "narrow", vocab_size=n_tokens - 1)


def test_tiny_model_script_help_prints_usage_and_writes_nothing(tmp_path, monkeypatch, capsys):
    import pytest
    from transformers import AutoTokenizer

    from alphapo.tiny_models import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "OUT_DIR" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # no folder named "--help"
    assert main(["plain", "--chat-template", "none"]) == 0
    assert AutoTokenizer.from_pretrained(tmp_path / "plain").chat_template is None
