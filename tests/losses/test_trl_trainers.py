"""End-to-end parity: TRL 1.16's real DPOTrainer and experimental CPOTrainer on a tiny local model.

The trainers tokenise, collate, run the model and compute their loss; we take their collated batch,
compute the sequence log-probs with a ten-line reference implementation on the same weights, feed them
to our losses and compare. One optimizer step with ``learning_rate=0`` also checks the value TRL logs.
``bf16=False`` matters: TRL's configs default to ``bf16=True``, which autocasts the forward on CPU.
"""

from __future__ import annotations

import pytest
import torch

from alphapo.losses import TRL_DPO_LOSS_NAMES, get_loss

pytestmark = [pytest.mark.slow, pytest.mark.trl]

PAIRS = [
    {"prompt": "What is 12 plus 7?", "chosen": " The answer is 19.", "rejected": " banana apple"},
    {"prompt": "Reverse 1 2 3.", "chosen": " 3 2 1", "rejected": " 1 2 3 4 5 and more words here"},
    {"prompt": "Hello", "chosen": " world!", "rejected": " Goodbye, world. Yes no maybe."},
    {"prompt": "Sort: b a", "chosen": " a b", "rejected": " b a"},
]
REL = 5e-6  # float32 forward: TRL's fused log-prob kernel and our log_softmax round differently (~1e-7/token),
# and the squared (sppo_hard) and exponential (alphapo) losses amplify it: measured 2.2e-6 and 2.5e-6
# relative with transformers 5.24 (2e-6 passed with earlier releases). The loss functions alone agree
# to 1e-6 in float64 (test_trl_parity.py); a formula error would move the loss by orders more.


@torch.no_grad()
def sequence_logps(model, input_ids, attention_mask, completion_mask):
    """Reference: sum of log pi(token_t | tokens_<t) over completion tokens, and the completion lengths."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    per_token = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    mask = completion_mask[:, 1:].float()
    return (per_token * mask).sum(dim=1), mask.sum(dim=1).long()


def _dataset():
    from datasets import Dataset

    return Dataset.from_list(PAIRS)


@pytest.fixture(scope="module")
def dpo_setup(tiny_model_dir, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from alphapo.tiny_models import save_tiny_model

    ref_dir = save_tiny_model(tmp_path_factory.mktemp("tiny_ref"), seed=1)  # a different reference model
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = DPOConfig(output_dir=str(tmp_path_factory.mktemp("dpo_out")), per_device_train_batch_size=4, max_steps=1,
                     logging_steps=1, report_to=[], loss_type=["sigmoid"], beta=0.5, use_cpu=True,
                     save_strategy="no", learning_rate=0.0, bf16=False)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                         ref_model=AutoModelForCausalLM.from_pretrained(ref_dir), args=args,
                         train_dataset=_dataset(), processing_class=tok)
    trainer.train()  # one step at lr 0: logs the loss of the whole dataset (one batch), weights unchanged
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    policy, lengths = sequence_logps(trainer.model, batch["input_ids"], batch["attention_mask"],
                                     batch["completion_mask"])
    ref, _ = sequence_logps(trainer.ref_model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    b = len(PAIRS)
    ours = dict(chosen_logps=policy[:b], rejected_logps=policy[b:], ref_chosen_logps=ref[:b],
                ref_rejected_logps=ref[b:], chosen_lengths=lengths[:b], rejected_lengths=lengths[b:])
    return trainer, batch, ours


def test_dpo_trainer_logged_loss_and_rewards_match_ours(dpo_setup):
    trainer, _, ours = dpo_setup
    log = trainer.state.log_history[0]
    out = get_loss("dpo")(**ours, beta=0.5)
    assert out.losses.mean().item() == pytest.approx(log["loss"], rel=REL)
    assert out.chosen_rewards.mean().item() == pytest.approx(log["rewards/chosen"], rel=1e-5)
    assert out.rejected_rewards.mean().item() == pytest.approx(log["rewards/rejected"], rel=1e-5)
    assert ours["chosen_logps"].mean().item() == pytest.approx(log["logps/chosen"], rel=1e-5)
    assert abs(log["loss"] - 0.6931) > 1e-3  # a distinct reference model: not the trivial log 2


DPO_HP = {  # TRL attributes to set -> our hyper-parameters
    "exo_pair": ({"label_smoothing": 1e-3}, {"eps": 1e-3}),
    "robust": ({"label_smoothing": 0.2}, {"eps": 0.2}),
    "aot": ({"label_smoothing": 0.1}, {"eps": 0.1}),
    "aot_unpaired": ({"label_smoothing": 0.1}, {"eps": 0.1}),
}


@pytest.mark.parametrize("loss_type", sorted(TRL_DPO_LOSS_NAMES))
def test_dpo_trainer_every_loss_type_on_a_fixed_batch(dpo_setup, loss_type):
    trainer, batch, ours = dpo_setup
    trl_attrs, our_hp = DPO_HP.get(loss_type, ({}, {}))
    trainer.loss_types, trainer.label_smoothing = [loss_type], trl_attrs.get("label_smoothing", 0.0)
    expected = trainer.compute_loss(trainer.model, batch).item()
    fn = get_loss(TRL_DPO_LOSS_NAMES[loss_type])
    if loss_type == "sft":  # TRL: token-weighted mean over the batch; reproduce it with an explicit chosen_nll
        b = ours["chosen_lengths"].shape[0]
        nll = -ours["chosen_logps"] * b / ours["chosen_lengths"].sum()
        got = fn(chosen_logps=ours["chosen_logps"], rejected_logps=ours["rejected_logps"],
                 chosen_lengths=ours["chosen_lengths"], rejected_lengths=ours["rejected_lengths"], chosen_nll=nll)
    else:
        got = fn(**ours, beta=0.5, **our_hp)
    assert got.losses.mean().item() == pytest.approx(expected, rel=REL, abs=1e-7)


@pytest.fixture(scope="module")
def cpo_setup(tiny_model_dir, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = CPOConfig(output_dir=str(tmp_path_factory.mktemp("cpo_out")), per_device_train_batch_size=4,
                     max_steps=1, logging_steps=1, report_to=[], loss_type="alphapo", alpha=0.7, simpo_gamma=0.3,
                     beta=2.0, use_cpu=True, save_strategy="no", learning_rate=0.0, bf16=False)
    trainer = CPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args,
                         train_dataset=_dataset(), processing_class=tok)
    trainer.train()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    out = {}
    for side in ("chosen", "rejected"):
        mask = (batch[f"{side}_labels"] != -100).long()
        logps, lengths = sequence_logps(trainer.model, batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"],
                                        mask)
        out[f"{side}_logps"], out[f"{side}_lengths"] = logps, lengths
    return trainer, batch, out


def test_cpo_trainer_alphapo_logged_loss_matches_ours(cpo_setup):
    """TRL CPOConfig(loss_type="alphapo", alpha=0.7, simpo_gamma=0.3, beta=2): our alphapo, gamma = 0.3."""
    trainer, _, ours = cpo_setup
    log = trainer.state.log_history[0]
    out = get_loss("alphapo")(**ours, alpha=0.7, beta=2.0, gamma=0.3)
    assert out.losses.mean().item() == pytest.approx(log["loss"], rel=REL)
    assert out.chosen_rewards.mean().item() == pytest.approx(log["rewards/chosen"], rel=1e-5)
    assert log["nll_loss"] == 0.0  # TRL's alphapo switches the NLL term off


@pytest.mark.parametrize("loss_type,ours_name", [("simpo", "cpo_simpo"), ("sigmoid", "cpo"), ("hinge", "cpo_hinge"),
                                                 ("ipo", "cpo_ipo")])
def test_cpo_trainer_with_nll_term_on_a_fixed_batch(cpo_setup, loss_type, ours_name):
    """cpo_alpha = 1 (TRL's default): TRL adds the token-weighted mean NLL of the chosen completions."""
    trainer, batch, ours = cpo_setup
    trainer.loss_type, trainer.cpo_alpha, trainer.alpha, trainer.simpo_gamma = loss_type, 1.0, 0.0, 0.3
    trainer.label_smoothing = 0.1 if loss_type in ("simpo", "sigmoid") else 0.0
    expected = trainer.compute_loss(trainer.model, batch).item()
    b = ours["chosen_lengths"].shape[0]
    nll = -ours["chosen_logps"] * b / ours["chosen_lengths"].sum()  # TRL's batch token-mean, spread per example
    hp = {"beta": 2.0, "nll_weight": 1.0}
    if loss_type in ("simpo", "sigmoid"):
        hp["eps"] = 0.1
    if loss_type == "simpo":
        hp["gamma"] = 0.3
    got = get_loss(ours_name)(**ours, chosen_nll=nll, **hp)
    assert got.losses.mean().item() == pytest.approx(expected, rel=REL)
