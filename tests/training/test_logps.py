"""Sequence log-probs: hand-computed case, agreement with a full log-softmax, trimming is exact."""

from __future__ import annotations

import math
import warnings

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


# prompt groups: prefix-shared and packed layouts against the plain one-row-per-response path

GROUP_PROMPTS = [[1, 10, 11, 12, 13], [1, 14], [1, 15, 16]]
PAIRS = [[[20, 21, 2], [22, 2]], [[23, 24, 25, 26, 2], [27, 2]], [[28, 2], [29, 30, 31, 2]]]
FOURS = [[[20, 21, 2], [22, 2], [23, 24, 25, 2], [26, 2]],
         [[27, 28, 29, 30, 31, 2], [32, 2], [33, 34, 2], [35, 2]],
         [[36, 2], [37, 38, 2], [39, 2], [40, 41, 42, 2]]]


# a long first prompt and a short fourth group, so that the packed layout puts two groups in one row
PACK_PROMPTS = [[1, *range(50, 63)], [1, 14], [1, 15, 16], [1, 43]]
PACK_EXTRA = {2: [[44, 2], [45, 2]], 4: [[44, 2], [45, 2], [46, 2], [47, 2]]}


def _group_grads(model, prompts, responses, layout):
    from alphapo.training.logps import group_logps

    model.zero_grad()
    out = group_logps(model, prompts, responses, pad_id=0, layout=layout)
    weights = torch.arange(out.logps.numel(), dtype=torch.float32).view_as(out.logps) - 2.5  # distinct
    (out.logps * weights).sum().backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("responses", [PAIRS, FOURS], ids=["pairs", "k4"])
def test_prefix_shared_and_packed_equal_plain_values_and_gradients(tiny_model_dir, responses, attn):
    """Prompt encoded once (block mask, restarted position ids), alone or packed with other groups: the
    same log-probs, lengths and parameter gradients as one padded row per response, to 1e-5 in float32.

    Prompts and responses of different lengths, so rows are padded; pairs and k = 4; both attention
    implementations that take a 4D mask; the packed rows hold two groups in one row. The plain path is
    itself pinned to a per-sequence full log-softmax above.
    """
    from transformers import AutoModelForCausalLM

    from alphapo.training.logps import packed_layout, shared_layout

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attn).float()
    prompts, responses = PACK_PROMPTS, [*responses, PACK_EXTRA[len(responses[0])]]
    packed, shared = packed_layout(prompts, responses, 0), shared_layout(prompts, responses, 0)
    assert packed.input_ids.shape[0] == 3 and shared.input_ids.shape[0] == 4  # two groups share a row
    plain, g_plain = _group_grads(model, prompts, responses, "plain")
    assert plain.layout == "plain"
    assert plain.lengths.tolist() == [[float(len(r)) for r in rs] for rs in responses]
    for layout in ("shared", "packed"):
        out, grads = _group_grads(model, prompts, responses, layout)
        assert out.layout == layout
        assert torch.allclose(out.logps, plain.logps, atol=1e-5, rtol=0), layout
        assert torch.equal(out.lengths, plain.lengths)
        assert torch.allclose(out.logit_sums, plain.logit_sums, atol=1e-5, rtol=1e-6), layout
        assert grads.keys() == g_plain.keys() and len(grads) > 0
        for name in grads:
            assert torch.allclose(grads[name], g_plain[name], atol=1e-5, rtol=1e-4), (layout, name)
    assert not model.get_output_embeddings()._forward_pre_hooks


def test_group_token_counts_and_packing_by_hand():
    """Useful tokens count each prompt once; processed tokens are the rows' positions (padding included).

    Pairs above: groups of 5+3+2 = 10, 2+5+2 = 9 and 3+2+4 = 9 tokens, 28 useful. Plain: 6 rows of
    width 8 (prompt 5 + response 3) = 48. Shared: 3 rows of width 10 = 30.
    """
    from alphapo.training.logps import packed_layout, plain_layout, shared_layout

    assert plain_layout(GROUP_PROMPTS, PAIRS, 0).processed_tokens == 6 * 8
    shared = shared_layout(GROUP_PROMPTS, PAIRS, 0)
    assert (shared.useful_tokens, shared.processed_tokens) == (28, 30)
    # prompt [1, 14] then [23, 24, 25, 26, 2] at positions 2..6 and [27, 2] again at 2..3
    assert shared.input_ids[1].tolist()[:9] == [1, 14, 23, 24, 25, 26, 2, 27, 2]
    assert shared.position_ids[1].tolist()[:9] == [0, 1, 2, 3, 4, 5, 6, 2, 3]
    allowed = shared.attention_mask[1, 0]
    assert allowed[7].tolist()[:9] == [True, True, False, False, False, False, False, True, False]
    assert allowed[9].tolist() == [False] * 9 + [True]  # padding attends to itself only
    # the last prompt token (position 1) predicts 23 and 27
    assert shared.predictors[5:12].tolist() == [10 + 1, 12, 13, 14, 15, 10 + 1, 17]
    # groups of 3, 4 and 3 tokens: rows as wide as the longest group (4), no two fit, nothing packs
    packed = packed_layout([[1], [1, 5], [1]], [[[2], [3]], [[4], [5]], [[6], [7]]], 0)
    assert packed.input_ids.tolist() == [[1, 5, 4, 5], [1, 2, 3, 0], [1, 6, 7, 0]]
    assert packed.useful_tokens == 10 and packed.processed_tokens == 12
    # groups of 3, 6 and 3 tokens: the two short ones share the second row, no padding left
    packed = packed_layout([[1], [1, 5, 6, 8], [1]], [[[2], [3]], [[4], [5]], [[6], [7]]], 0)
    assert packed.input_ids.tolist() == [[1, 5, 6, 8, 4, 5], [1, 2, 3, 1, 6, 7]]
    assert packed.useful_tokens == packed.processed_tokens == 12
    # rows of 12 tokens take all three groups; rows shorter than the longest group are an error
    wide = packed_layout([[1], [1, 5, 6, 8], [1]], [[[2], [3]], [[4], [5]], [[6], [7]]], 0, row_tokens=12)
    assert wide.input_ids.tolist() == [[1, 5, 6, 8, 4, 5, 1, 2, 3, 1, 6, 7]]
    with pytest.raises(ValueError, match="row_tokens=5 is shorter than the longest group"):
        packed_layout([[1], [1, 5, 6, 8], [1]], [[[2], [3]], [[4], [5]], [[6], [7]]], 0, row_tokens=5)
    assert packed.position_ids[1].tolist() == [0, 1, 1, 0, 1, 1]
    assert not packed.attention_mask[1, 0, 3, :3].any()  # the second group cannot see the first


def test_group_logps_falls_back_with_one_warning(tiny_model_dir):
    """A model without a Hugging Face config runs the plain path, warns once, gives the same values."""
    from transformers import AutoModelForCausalLM

    from alphapo.training.logps import group_logps

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        ref = group_logps(model, GROUP_PROMPTS, PAIRS, pad_id=0)
        with pytest.warns(UserWarning, match="_NoKeepWrapper is not a Hugging Face model.*plain path"):
            out = group_logps(_NoKeepWrapper(model), GROUP_PROMPTS, PAIRS, pad_id=0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            group_logps(_NoKeepWrapper(model), GROUP_PROMPTS, PAIRS, pad_id=0)  # said once only
    assert ref.layout == "shared" and out.layout == "plain"

    class Bare(torch.nn.Module):  # no output layer to hook: full logits, rows picked afterwards
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, use_cache=False):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)

    with torch.no_grad(), pytest.warns(UserWarning, match="Bare is not a Hugging Face model"):
        bare = group_logps(Bare(model), GROUP_PROMPTS, PAIRS, pad_id=0)
    assert torch.allclose(bare.logps, ref.logps, atol=1e-5, rtol=0)
    assert torch.allclose(bare.logit_sums, ref.logit_sums, atol=1e-5, rtol=1e-6)

    class BareKeep(Bare):  # ... but takes logits_to_keep: trailing positions only, offsets shifted
        def forward(self, input_ids, attention_mask, use_cache=False, logits_to_keep=0):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache,
                              logits_to_keep=logits_to_keep)

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kept = group_logps(BareKeep(model), GROUP_PROMPTS, PAIRS, pad_id=0, trim=True)
    assert torch.allclose(kept.logps, ref.logps, atol=1e-5, rtol=0)
    # useful: each prompt once; sequence tokens: the prompt once per response, as SequenceBatch.num_tokens
    assert (ref.useful_tokens, ref.sequence_tokens) == (28, 28 + 5 + 2 + 3)
    assert out.sequence_tokens == collate_sequences([p for p in GROUP_PROMPTS for _ in range(2)],
                                                    [r for rs in PAIRS for r in rs], 0).num_tokens
    assert torch.allclose(out.logps, ref.logps, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="prompt 1 has 1 responses, prompt 0 has 2"):
        group_logps(model, GROUP_PROMPTS, [PAIRS[0], PAIRS[1][:1], PAIRS[2]], pad_id=0)
    with pytest.raises(ValueError, match="layout must be one of shared, packed, plain, got 'pack'"):
        group_logps(model, GROUP_PROMPTS, PAIRS, pad_id=0, layout="pack")


def test_prefix_sharing_support_reasons():
    """Kernels without arbitrary 4D masks, unchecked model types and too-short sliding windows are refused
    with a reason naming the cause; SDPA/eager models of a checked type are accepted."""
    from types import SimpleNamespace

    from transformers import LlamaConfig, MistralConfig

    from alphapo.training.logps import prefix_sharing_unsupported

    def model(config, impl):
        config._attn_implementation = impl
        return SimpleNamespace(config=config)

    assert prefix_sharing_unsupported(model(LlamaConfig(), "sdpa"), 10_000) is None
    assert prefix_sharing_unsupported(model(LlamaConfig(), "eager"), 10_000) is None
    assert "'flash_attention_2' takes no arbitrary 4D mask" in prefix_sharing_unsupported(
        model(LlamaConfig(), "flash_attention_2"))
    windowed = MistralConfig(sliding_window=16)
    assert prefix_sharing_unsupported(model(windowed, "sdpa"), 16) is None
    assert prefix_sharing_unsupported(model(windowed, "sdpa"), 17) == \
        "a row of 17 tokens exceeds the sliding window of 16"
    gpt2 = SimpleNamespace(config=SimpleNamespace(model_type="gpt2", _attn_implementation="sdpa"))
    assert "model type 'gpt2' is not among those checked" in prefix_sharing_unsupported(gpt2)
    assert "is not a Hugging Face model" in prefix_sharing_unsupported(torch.nn.Linear(2, 2))


def test_runnable_layout_is_the_layout_group_logps_runs():
    """The trainer's batch length key follows the layout the forward really runs: the requested one for a
    llama under SDPA or eager, "plain" where :func:`group_logps` would fall back (flash-attention, a
    non-Hugging Face model, a row longer than a sliding window)."""
    from types import SimpleNamespace

    from transformers import LlamaConfig, MistralConfig

    from alphapo.training.logps import runnable_layout

    def model(config, impl):
        config._attn_implementation = impl
        return SimpleNamespace(config=config)

    assert runnable_layout(model(LlamaConfig(), "sdpa")) == "shared"
    assert runnable_layout(model(LlamaConfig(), "eager"), "packed") == "packed"
    assert runnable_layout(model(LlamaConfig(), "sdpa"), "plain") == "plain"
    assert runnable_layout(model(LlamaConfig(), "flash_attention_2")) == "plain"
    assert runnable_layout(torch.nn.Linear(2, 2)) == "plain"
    assert runnable_layout(model(MistralConfig(sliding_window=16), "sdpa"), longest_row=16) == "shared"
    assert runnable_layout(model(MistralConfig(sliding_window=16), "sdpa"), longest_row=17) == "plain"
    with pytest.raises(ValueError, match="layout must be one of shared, packed, plain, got 'pack'"):
        runnable_layout(model(LlamaConfig(), "sdpa"), "pack")


def test_sum_by_owner_is_the_correctly_rounded_sum():
    """Per-sequence sums of float32 token log-probs equal the exact sum (math.fsum) rounded once to float32.

    4000 values near -10.4 (a 32000-token vocabulary) in two sequences: float32 index_add, one value after
    another, drifts from the exact sum by far more than one float32 ulp; float64 accumulation does not.
    Gradients reach every value unchanged.
    """
    from alphapo.training.logps import sum_by_owner

    g = torch.Generator().manual_seed(0)
    values = (-10.4 + torch.randn(4000, generator=g) * 0.5).requires_grad_()
    owners = torch.arange(4000) % 2
    out = sum_by_owner(values, owners, 2)
    exact = [math.fsum(values[owners == i].tolist()) for i in range(2)]
    assert out.dtype == torch.float32 and out.tolist() == torch.tensor(exact, dtype=torch.float32).tolist()
    naive = torch.zeros(2).index_add(0, owners, values.detach())
    # more than two float32 ulps (2 ** -9 at a magnitude of 20800)
    assert (naive.double() - torch.tensor(exact, dtype=torch.float64)).abs().max() > 2 * 2.0 ** -9
    (out * torch.tensor([1.0, -3.0])).sum().backward()
    assert values.grad.tolist() == [1.0 if i % 2 == 0 else -3.0 for i in range(4000)]
