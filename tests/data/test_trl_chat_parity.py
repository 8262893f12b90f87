"""TRL parity on conversational data with a ChatML template (Qwen-like: eos_token differs from <|im_end|>).

The data is an UltraFeedback-binarized-shaped Parquet file (``prompt`` string, ``prompt_id``, full
``chosen`` / ``rejected`` conversations, ``messages``, ``score_chosen`` / ``score_rejected``). A TRL user
drops the string ``prompt`` column (TRL would add a string to a message list) and lets TRL extract the
prompt from the two conversations; we read the file as it is.

- Fast: our tokenised examples hold exactly the token ids of TRL 1.16's ``DPOTrainer`` (prompt, chosen,
  rejected), so the completion ends with ``<|im_end|>\\n`` and never with ``<|endoftext|>``.
- Slow: the first-step loss of our trainer equals the loss TRL's ``DPOTrainer`` logs, and equals the loss
  of TRL's ``CPOTrainer`` (``loss_type="simpo"``, ``cpo_alpha=0``) on the same sequences.
- String rows and a tokenizer that has a chat template: neither TRL nor we template them (same ids, same
  first-step DPO loss); before ``chat_template="auto"`` we templated them.

Deviations: TRL's experimental ``CPOTrainer`` tokenises differently from its ``DPOTrainer``: it appends
``eos_token`` after the template's end-of-turn (``...<|im_end|>\\n<|endoftext|>``). We follow
``DPOTrainer`` for every loss; ``test_cpo_tokenisation_differs_only_by_its_appended_eos`` pins the
difference, and the SimPO parity feeds CPOTrainer's loss our sequences.
"""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = [pytest.mark.trl]

U = lambda text: {"role": "user", "content": text}  # noqa: E731
A = lambda text: {"role": "assistant", "content": text}  # noqa: E731
QA = [("What is 12 plus 7?", "The answer is 19.", "banana apple"),
      ("Reverse the list 1 2 3.", "3 2 1", "1 2 3 4 5 and more words here"),
      ("Hello", "Hello world!", "Goodbye, world. Yes no maybe."),
      ("Sort the words: banana apple", "apple banana", "banana apple cherry")]
REL = 1e-5


def uf_rows():
    return [{"prompt": q, "prompt_id": f"id{i}", "chosen": [U(q), A(c)], "rejected": [U(q), A(r)],
             "messages": [U(q), A(c)], "score_chosen": 8.0 + i / 10, "score_rejected": 3.0 - i / 10}
            for i, (q, c, r) in enumerate(QA)]


@pytest.fixture(scope="module")
def uf_parquet(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path_factory.mktemp("uf") / "train_prefs.parquet"
    pq.write_table(pa.Table.from_pylist(uf_rows()), path)
    return path


def trl_dataset(path):
    """What a TRL user feeds DPOTrainer / CPOTrainer: the UF file without its string prompt column."""
    from datasets import Dataset

    ds = Dataset.from_parquet(str(path))
    return ds.remove_columns(["prompt", "prompt_id", "messages", "score_chosen", "score_rejected"])


@pytest.fixture(scope="module")
def chatml_dirs(tmp_path_factory):
    from alphapo.tiny_models import save_tiny_model

    policy = save_tiny_model(tmp_path_factory.mktemp("chatml_policy"), seed=0, chat_template="chatml")
    ref = save_tiny_model(tmp_path_factory.mktemp("chatml_ref"), seed=1, chat_template="chatml")
    return policy, ref


def _dpo_trainer(policy_dir, ref_dir, path, out, beta=0.5):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(out), per_device_train_batch_size=len(QA), max_steps=1, logging_steps=1,
                     report_to=[], loss_type=["sigmoid"], beta=beta, use_cpu=True, save_strategy="no",
                     learning_rate=0.0, bf16=False)
    return DPOTrainer(model=AutoModelForCausalLM.from_pretrained(policy_dir),
                      ref_model=AutoModelForCausalLM.from_pretrained(ref_dir), args=args,
                      train_dataset=trl_dataset(path), processing_class=AutoTokenizer.from_pretrained(policy_dir))


def _ours(policy_dir, path):
    from transformers import AutoTokenizer

    from alphapo.training.data import load_examples

    tok = AutoTokenizer.from_pretrained(policy_dir)
    return tok, load_examples(str(path), tok, split="train", columns=None, skip_invalid=False, max_length=1024,
                              max_prompt_length=None, prompt_truncation="keep_end")


def test_token_ids_match_trl_dpo_trainer(chatml_dirs, uf_parquet, tmp_path):
    policy_dir, ref_dir = chatml_dirs
    tok, ours = _ours(policy_dir, uf_parquet)
    trainer = _dpo_trainer(policy_dir, ref_dir, uf_parquet, tmp_path)
    trl = trainer.train_dataset
    assert [e["prompt_input_ids"] for e in ours] == trl["prompt_ids"]
    assert [e["chosen_input_ids"] for e in ours] == trl["chosen_ids"]
    assert [e["rejected_input_ids"] for e in ours] == trl["rejected_ids"]
    # and the same training sequences and loss mask after TRL's collator
    batch = trainer.data_collator([trl[i] for i in range(len(QA))])
    n = len(QA)
    for j, e in enumerate(ours):
        for k, side in ((j, "chosen"), (n + j, "rejected")):
            seq = e["prompt_input_ids"] + e[f"{side}_input_ids"]
            assert batch["input_ids"][k, :len(seq)].tolist() == seq
            assert batch["completion_mask"][k].tolist() == ([0] * len(e["prompt_input_ids"])
                                                            + [1] * len(e[f"{side}_input_ids"])
                                                            + [0] * (batch["input_ids"].shape[1] - len(seq)))
    # the assistant turn ends with the end-of-turn marker, and the EOS (<|endoftext|>) is never trained
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    newline = tok("\n", add_special_tokens=False)["input_ids"]
    for e in ours:
        for side in ("chosen", "rejected"):
            assert e[f"{side}_input_ids"][-1 - len(newline):] == [im_end] + newline
            assert tok.eos_token_id not in e[f"{side}_input_ids"]
    assert tok.decode(ours[0]["prompt_input_ids"] + ours[0]["chosen_input_ids"]) == (
        "<|im_start|>user\nWhat is 12 plus 7?<|im_end|>\n<|im_start|>assistant\nThe answer is 19.<|im_end|>\n")


def test_cpo_tokenisation_differs_only_by_its_appended_eos(chatml_dirs, uf_parquet, tmp_path):
    """TRL's CPOTrainer templates the same text but appends eos_token to each completion."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    policy_dir, _ = chatml_dirs
    tok, ours = _ours(policy_dir, uf_parquet)
    args = CPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=len(QA), max_steps=1, report_to=[],
                     loss_type="simpo", cpo_alpha=0.0, use_cpu=True, save_strategy="no", bf16=False)
    trainer = CPOTrainer(model=AutoModelForCausalLM.from_pretrained(policy_dir), args=args,
                         train_dataset=trl_dataset(uf_parquet), processing_class=AutoTokenizer.from_pretrained(policy_dir))
    for e, row in zip(ours, trainer.train_dataset):
        assert row["prompt_input_ids"] == e["prompt_input_ids"]
        assert row["chosen_input_ids"] == e["prompt_input_ids"] + e["chosen_input_ids"] + [tok.eos_token_id]
        assert row["rejected_input_ids"] == e["prompt_input_ids"] + e["rejected_input_ids"] + [tok.eos_token_id]


def _train_first_step(policy_dir, ref_dir, path, out, *loss_overrides):
    n = len(QA)
    from alphapo.training import load_config
    from alphapo.training.trainer import train

    config = load_config(None, [f"model.name_or_path={policy_dir}", f"data.train_path={path}", f"output_dir={out}",
                                f"reference.name_or_path={ref_dir}", f"reference.cache_dir={out}/refcache",
                                "train.learning_rate=1e-3", f"train.per_device_batch_size={n}",
                                f"train.global_batch_size={n}", "train.max_steps=1",
                                "logging.progress_bar=false", "logging.tensorboard=false", *loss_overrides])
    train(config)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in records if r["split"] == "train" and r["step"] == 1)


@pytest.mark.slow
def test_dpo_first_step_loss_matches_trl_dpo_trainer(chatml_dirs, uf_parquet, tmp_path):
    policy_dir, ref_dir = chatml_dirs
    trainer = _dpo_trainer(policy_dir, ref_dir, uf_parquet, tmp_path / "trl")
    trainer.train()  # one step at lr 0 on the whole dataset (one batch): logs that batch's loss
    trl_log = trainer.state.log_history[0]
    ours = _train_first_step(policy_dir, ref_dir, uf_parquet, tmp_path / "ours", "loss.name=dpo", "loss.beta=0.5")
    assert ours["loss"] == pytest.approx(trl_log["loss"], rel=REL)
    assert ours["logps/chosen"] == pytest.approx(trl_log["logps/chosen"], rel=REL)  # summed: about -39
    # a difference of two rewards of about 0.1, each beta x (a float32 sum of about -39): absolute tolerance
    assert ours["rewards/margins"] == pytest.approx(trl_log["rewards/margins"], abs=1e-5)
    assert abs(trl_log["loss"] - 0.6931) > 1e-3  # a distinct reference model: not the trivial log 2


@pytest.mark.slow
def test_simpo_first_step_loss_matches_trl_cpo_trainer(chatml_dirs, uf_parquet, tmp_path):
    """CPOTrainer(loss_type="simpo", cpo_alpha=0, simpo_gamma=0.3, beta=2): its loss on our sequences."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    policy_dir, ref_dir = chatml_dirs
    tok, examples = _ours(policy_dir, uf_parquet)
    args = CPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=len(QA), max_steps=1,
                     report_to=[], loss_type="simpo", cpo_alpha=0.0, simpo_gamma=0.3, beta=2.0, use_cpu=True,
                     save_strategy="no", bf16=False)
    trainer = CPOTrainer(model=AutoModelForCausalLM.from_pretrained(policy_dir), args=args,
                         train_dataset=trl_dataset(uf_parquet), processing_class=AutoTokenizer.from_pretrained(policy_dir))
    rows = []
    for e in examples:  # CPOTrainer's own row layout, holding our token ids (see the module docstring)
        row = {"prompt_input_ids": e["prompt_input_ids"], "prompt_attention_mask": [1] * len(e["prompt_input_ids"])}
        for side in ("chosen", "rejected"):
            seq = e["prompt_input_ids"] + e[f"{side}_input_ids"]
            row[f"{side}_input_ids"], row[f"{side}_attention_mask"] = seq, [1] * len(seq)
            row[f"{side}_labels"] = [-100] * len(e["prompt_input_ids"]) + e[f"{side}_input_ids"]
        rows.append(row)
    with torch.no_grad():
        expected = trainer.compute_loss(trainer.model, trainer.data_collator(rows)).item()
    ours = _train_first_step(policy_dir, ref_dir, uf_parquet, tmp_path / "ours", "loss.name=simpo", "loss.beta=2.0",
                             "loss.gamma=0.3")
    assert ours["loss"] == pytest.approx(expected, rel=REL)


# Standard (string) rows, a tokenizer with a chat template: TRL uses the strings as they are, and so do we
# (chat_template="auto"). Completions start with a space, so no BPE merge crosses the prompt boundary (where
# one does, TRL's joint tokenisation and ours differ by design: see alphapo.data.tokenize).
STRING_PAIRS = [{"prompt": "What is 12 plus 7?", "chosen": " The answer is 19.", "rejected": " banana apple"},
                {"prompt": "Reverse 1 2 3.", "chosen": " 3 2 1", "rejected": " 1 2 3 4 5 and more words here"},
                {"prompt": "Hello", "chosen": " world!", "rejected": " Goodbye, world. Yes no maybe."},
                {"prompt": "Sort: b a", "chosen": " a b", "rejected": " b a"}]


@pytest.fixture(scope="module")
def string_jsonl(tmp_path_factory):
    path = tmp_path_factory.mktemp("std") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in STRING_PAIRS))
    return path


def _string_dpo_trainer(policy_dir, ref_dir, out):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(out), per_device_train_batch_size=len(STRING_PAIRS), max_steps=1,
                     logging_steps=1, report_to=[], loss_type=["sigmoid"], beta=0.5, use_cpu=True,
                     save_strategy="no", learning_rate=0.0, bf16=False)
    return DPOTrainer(model=AutoModelForCausalLM.from_pretrained(policy_dir),
                      ref_model=AutoModelForCausalLM.from_pretrained(ref_dir), args=args,
                      train_dataset=Dataset.from_list(STRING_PAIRS),
                      processing_class=AutoTokenizer.from_pretrained(policy_dir))


@pytest.fixture(scope="module")
def system_ref_dir(tmp_path_factory):
    from alphapo.tiny_models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("system_ref"), seed=1, chat_template="system")


def test_string_rows_are_not_templated_like_trl(tiny_model_dir, system_ref_dir, string_jsonl, tmp_path):
    tok, ours = _ours(tiny_model_dir, string_jsonl)
    assert tok.chat_template  # the tokenizer has a template; string rows still do not use it
    trl = _string_dpo_trainer(tiny_model_dir, system_ref_dir, tmp_path).train_dataset
    assert [e["prompt_input_ids"] for e in ours] == trl["prompt_ids"]
    assert [e["chosen_input_ids"] for e in ours] == trl["chosen_ids"]
    assert [e["rejected_input_ids"] for e in ours] == trl["rejected_ids"]


@pytest.mark.slow
def test_dpo_first_step_loss_on_string_rows_with_a_templated_tokenizer(tiny_model_dir, system_ref_dir,
                                                                      string_jsonl, tmp_path):
    trainer = _string_dpo_trainer(tiny_model_dir, system_ref_dir, tmp_path / "trl")
    trainer.train()
    trl_log = trainer.state.log_history[0]
    ours = _train_first_step(tiny_model_dir, system_ref_dir, string_jsonl, tmp_path / "ours", "loss.name=dpo",
                             "loss.beta=0.5")
    assert ours["loss"] == pytest.approx(trl_log["loss"], rel=REL)
