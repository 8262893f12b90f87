"""Sequence log-probs: hand-computed case, agreement with a full log-softmax, trimming is exact."""

from __future__ import annotations

import math

import pytest
import torch

from alphapo.training.logps import collate_sequences, gather_logps, sequence_logps


def test_collate_masks_completion_tokens_only():
    b = collate_sequences([[5, 6], [7]], [[8, 2], [9, 9, 2]], pad_id=0)
    assert b.input_ids.tolist() == [[5, 6, 8, 2], [7, 9, 9, 2]]
    assert b.completion_mask.tolist() == [[False, False, True, True], [False, True, True, True]]
    assert b.num_tokens == 8
    b = collate_sequences([[5]], [[8]] , pad_id=0)
    assert b.attention_mask.tolist() == [[1, 1]]


def test_collate_rejects_empty_prompt():
    """With no prompt, no position predicts the first completion token: the summed logp would cover
    |y| - 1 tokens while the length said |y| (a silent off-by-one in every length-normalised loss)."""
    with pytest.raises(ValueError, match="sequence 1 has an empty prompt"):
        collate_sequences([[1], []], [[2], [3, 4]], pad_id=0)


def test_gather_logps_hand_computed():
    """V = 2, logits all zero except one row: sequence [p, c1, c2] with completion c1, c2.

    Position 0 predicts c1 = token 1 with logits (0, 0): log(1/2). Position 1 predicts c2 = token 0 with
    logits (ln 3, 0): log(3/4). Sum = ln(1/2) + ln(3/4) = ln(3/8); length 2.
    """
    logits = torch.zeros(1, 3, 2)
    logits[0, 1, 0] = math.log(3.0)
    ids = torch.tensor([[0, 1, 0]])
    mask = torch.tensor([[False, True, True]])
    logps, lengths = gather_logps(logits, ids, mask)
    assert torch.allclose(logps, torch.tensor([math.log(3 / 8)]))
    assert lengths.tolist() == [2.0]


def test_matches_full_log_softmax_and_trimming_is_exact(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompts = [[1, 10, 11, 12], [1, 13], [1, 14, 15]]
    comps = [[20, 21, 2], [22, 2], [23, 24, 25, 26, 2]]
    batch = collate_sequences(prompts, comps, pad_id=0)
    with torch.no_grad():
        trimmed, lengths = sequence_logps(model, batch, trim=True)
        untrimmed, _ = sequence_logps(model, batch, trim=False)
        expected = []
        for p, c in zip(prompts, comps):  # one sequence at a time, no padding, full log-softmax
            ids = torch.tensor([p + c])
            full = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
            expected.append(sum(full[len(p) - 1 + j, tok].item() for j, tok in enumerate(c)))
    assert lengths.tolist() == [3.0, 2.0, 5.0]
    assert torch.allclose(trimmed, torch.tensor(expected), atol=1e-5, rtol=0)
    assert torch.allclose(trimmed, untrimmed, atol=1e-6, rtol=0)


def _grads(model, batch, **kw):
    model.zero_grad()
    logps, _ = sequence_logps(model, batch, **kw)
    weights = torch.tensor([1.0, -2.0, 0.5])  # distinct per-sequence weights: a wrong row order shows up
    (logps * weights).sum().backward()
    return logps.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


class _NoKeepWrapper(torch.nn.Module):
    """A causal LM whose forward does not take ``logits_to_keep`` (as many non-HF/custom models)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def get_output_embeddings(self):
        return self.inner.get_output_embeddings()

    def forward(self, input_ids, attention_mask, use_cache=False):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)


def test_rows_only_head_matches_full_logits_values_and_gradients(tiny_model_dir):
    """The output-layer hook (logits (M, V)) gives the same logps and parameter gradients as full logits.

    Checked for an HF model (which also accepts ``logits_to_keep``) and for a wrapper without that
    argument (where the alternative is the full ``(N, T, V)`` path); the hook is removed afterwards.
    """
    from transformers import AutoModelForCausalLM

    from alphapo.training.logps import output_head

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).float()
    prompts = [[1, 10, 11, 12], [1, 13], [1, 14, 15]]
    comps = [[20, 21, 2], [22, 2], [23, 24, 25, 26, 2]]
    batch = collate_sequences(prompts, comps, pad_id=0)
    for m in (model, _NoKeepWrapper(model)):
        assert output_head(m) is model.get_output_embeddings()
        rows, g_rows = _grads(m, batch, rows_only=True)
        full, g_full = _grads(m, batch, rows_only=False, trim=False)
        assert torch.allclose(rows, full, atol=1e-6, rtol=0)
        assert g_rows.keys() == g_full.keys() and len(g_rows) > 0
        for name in g_full:
            assert torch.allclose(g_rows[name], g_full[name], atol=1e-6, rtol=1e-5), name
    assert not model.get_output_embeddings()._forward_pre_hooks  # hook removed on exit
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    assert out.logits.shape[:2] == batch.input_ids.shape  # model behaves normally afterwards


def test_rows_only_falls_back_without_output_layer(tiny_model_dir):
    """A model with no ``get_output_embeddings`` takes the full-logits path (same values)."""
    from transformers import AutoModelForCausalLM

    class Bare(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, use_cache=False):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    batch = collate_sequences([[1, 10], [1, 11, 12]], [[20, 2], [21, 22, 2]], pad_id=0)
    with torch.no_grad():
        bare, _ = sequence_logps(Bare(model), batch)
        direct, _ = sequence_logps(model, batch)
    assert torch.allclose(bare, direct, atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_tail_equals_log_softmax_gather_values_and_gradients(dtype):
    """The chunked tail gives log_softmax(logits)[target] and its gradient, for any chunk size.

    Chunks of 1, 3 (not dividing 7 rows) and all rows; bfloat16 logits get a bfloat16 gradient equal to
    the float32 one rounded. The mean-logit side output equals logits.mean(-1).
    """
    from alphapo.training.logps import token_logps_and_logit_means

    g = torch.Generator().manual_seed(0)
    base = (torch.randn(7, 11, generator=g) * 3).to(dtype)
    targets = torch.tensor([0, 10, 3, 3, 5, 1, 9])
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 0.25, 2.0])
    ref_x = base.float().clone().requires_grad_()
    expected = torch.log_softmax(ref_x, -1).gather(-1, targets[:, None])[:, 0]
    (expected * weights).sum().backward()
    for chunk_rows in (1, 3, 7):
        x = base.clone().requires_grad_()
        got, means = token_logps_and_logit_means(x, targets, chunk_elements=11 * chunk_rows)
        (got * weights).sum().backward()
        assert got.dtype == torch.float32 and x.grad.dtype == dtype
        assert torch.allclose(got, expected.detach(), atol=1e-6, rtol=0)
        assert torch.allclose(x.grad, ref_x.grad.to(dtype), atol=1e-6, rtol=0)
        assert torch.allclose(means, base.float().mean(-1), atol=1e-6, rtol=0)
        assert not means.requires_grad
    assert torch.equal(x, base)  # the saved logits are not modified in place by backward


def test_chunked_tail_hand_computed():
    """Row (ln 3, 0) with target 0: log(3/4); gradient of its logp: onehot - softmax = (1/4, -1/4)."""
    from alphapo.training.logps import token_logps_and_logit_means

    x = torch.tensor([[math.log(3.0), 0.0]], requires_grad=True)
    logp, mean = token_logps_and_logit_means(x, torch.tensor([0]))
    logp.sum().backward()
    assert logp.item() == pytest.approx(math.log(0.75), abs=1e-7)
    assert mean.item() == pytest.approx(math.log(3.0) / 2, abs=1e-7)
    assert torch.allclose(x.grad, torch.tensor([[0.25, -0.25]]), atol=1e-7)
