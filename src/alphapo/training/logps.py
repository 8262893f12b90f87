"""Sequence log-probabilities of completions: collation, one forward pass, gather at completion labels.

The preference losses consume, per response ``y`` to prompt ``x``, the summed completion log-likelihood
``logp(y) = sum_t log pi(y_t | x, y_<t)`` and the completion length ``|y|`` (the conventions of
docs/papers.md). This module computes them:

- :func:`collate_sequences` right-pads ``prompt + completion`` token lists into ``input_ids``,
  ``attention_mask`` and a boolean ``completion_mask`` marking the positions whose *label* is a
  completion token (EOS included, prompt and padding excluded).
- :func:`gather_logps` turns logits into per-sequence sums. It never builds a full ``(B, T, V)``
  float32 log-softmax: it first selects the ``M`` rows of the logits where the label is a completion
  token (``logits[mask]``, shape ``(M, V)``), then takes ``logit[label] - logsumexp(logits)`` on those
  rows only (:func:`token_logps_and_logit_means`: chunks of rows upcast to float32 one at a time, forward
  and backward). Memory is ``O(M V)`` in the logits' dtype plus one float32 chunk, instead of ``O(B T V)``.
- :func:`sequence_logps` runs the model once over all sequences of a batch (chosen and rejected
  concatenated along the batch axis, or the ``k`` responses of each prompt flattened). By default a
  forward pre-hook on the model's output layer (:func:`lm_head_rows`) keeps only the ``M`` hidden
  states whose label is a completion token, so the LM head produces ``(M, V)`` logits instead of
  ``(N, T, V)``: prompt and padding positions never reach it (the saving grows with the vocabulary;
  ``benchmarks/bench_vs_trl.py`` measures it). Models without a discoverable output layer fall back to
  ``logits_to_keep`` (trailing positions from the earliest completion start on) when the forward
  accepts it, else full logits.

Pairwise batches are laid out ``[chosen_1..chosen_B, rejected_1..rejected_B]``; multi-response batches
``[y_11..y_1k, y_21..y_2k, ...]`` (row-major ``(B, k)``).

Prompt groups (:func:`group_logps`): the ``k`` responses of each prompt (``k = 2`` for a preference pair)
in one forward that encodes the prompt once. A row holds ``[prompt, response_1, ..., response_k]``; a
4D boolean mask lets each response see the prompt and its own earlier tokens but no other response,
and the position ids restart at ``len(prompt)`` for every response, so each response's tokens see
exactly what they see in their own ``prompt + response`` row (the approach of "Accelerating Direct
Preference Optimization with Prefix Sharing", Wang and Hegde, 2024). The last prompt position predicts
the first token of every response, so the LM head reads positions by index, repeats included
(:func:`lm_head_index`). :func:`packed_layout` also packs several groups into one row (block-diagonal
across groups, per-segment position ids); it is not the default because on length-grouped batches it
finds little to pack, and wider rows cost more attention than they save in padding (measurements in
docs/performance.md). Which kernels run it:

- SDPA and eager attention take the mask as given (Hugging Face models pass a 4D mask through
  unchanged); checked against the plain path for the model types in :data:`PREFIX_SHARING_MODEL_TYPES`.
- flash-attention 2/3 take no arbitrary mask, only causal attention over padded rows or packed
  sequences (``cu_seqlens``), which cannot let two responses share a prompt without seeing each other;
  flex-attention could (a block mask), but is not wired. Such models, model types not checked, and
  sliding-window models whose window is shorter than a row (a 4D mask bypasses the window) run the
  plain layout, one row per response, with a warning naming the reason (once per reason).
- Dropout draws one mask for the shared prompt instead of one per response; the trainer disables
  dropout, so values are equal.

Deviations: none from the conventions of docs/papers.md. TRL's ``concatenated_forward`` computes the same sums
but materialises a full-vocabulary log-softmax over every position; the values agree to float rounding
(tests/training/test_logps.py compares with a per-sequence full log-softmax).
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from dataclasses import dataclass

import torch


@dataclass
class SequenceBatch:
    """Right-padded sequences. ``completion_mask[i, t]`` is True when token ``t`` is a completion token."""

    input_ids: torch.Tensor  # (N, T) long
    attention_mask: torch.Tensor  # (N, T) long
    completion_mask: torch.Tensor  # (N, T) bool
    num_tokens: int  # non-pad tokens (throughput accounting)


def collate_sequences(prompts: list[list[int]], completions: list[list[int]], pad_id: int) -> SequenceBatch:
    """Concatenate each prompt with its completion and right-pad to the longest sequence.

    Shapes: N = len(prompts) sequences, T = max(len(prompt) + len(completion)).
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions)]
    width = max(lengths)
    n = len(prompts)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    completion = torch.zeros((n, width), dtype=torch.bool)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        if not c:
            raise ValueError(f"sequence {i} has an empty completion")
        if not p:  # nothing predicts the first completion token: |y| would count a token logp(y) lacks
            raise ValueError(f"sequence {i} has an empty prompt; the first completion token needs context "
                             f"(prepend a BOS token)")
        ids = list(p) + list(c)
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[i, : len(ids)] = 1
        completion[i, len(p): len(ids)] = True
    return SequenceBatch(input_ids, attention, completion, int(sum(lengths)))


CHUNK_ELEMENTS = 1 << 22  # float32 elements of one chunk of the log-prob tail (16 MiB)


class _TokenLogps(torch.autograd.Function):
    """``log softmax(logits)[target]`` per row, computed chunk by chunk (see :func:`token_logps_and_logit_means`).

    Forward keeps only the ``(M,)`` log-normalisers; backward recomputes each chunk's softmax and writes
    ``g * (onehot - softmax)`` straight into the gradient buffer (in the logits' dtype).
    """

    @staticmethod
    def forward(ctx, logits, targets, chunk):
        m = logits.shape[0]
        token_logps = torch.empty(m, dtype=torch.float32, device=logits.device)
        means = torch.empty(m, dtype=torch.float32, device=logits.device)
        lse = torch.empty(m, dtype=torch.float32, device=logits.device)
        for s in range(0, m, chunk):
            x = logits[s: s + chunk].float()  # one chunk upcast (a view when logits are float32)
            lse[s: s + chunk] = torch.logsumexp(x, dim=-1)
            token_logps[s: s + chunk] = x.gather(1, targets[s: s + chunk, None])[:, 0] - lse[s: s + chunk]
            means[s: s + chunk] = x.mean(dim=-1)
        ctx.save_for_backward(logits, targets, lse)
        ctx.chunk = chunk
        ctx.mark_non_differentiable(means)
        return token_logps, means

    @staticmethod
    def backward(ctx, grad_logps, _grad_means):
        logits, targets, lse = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for s in range(0, logits.shape[0], ctx.chunk):
            g = grad_logps[s: s + ctx.chunk, None].float()
            p = (logits[s: s + ctx.chunk].float() - lse[s: s + ctx.chunk, None]).exp_()  # softmax, new buffer
            p.mul_(-g).scatter_add_(1, targets[s: s + ctx.chunk, None], g)  # g * (onehot - softmax)
            grad[s: s + ctx.chunk] = p
        return grad, None, None


def token_logps_and_logit_means(logits: torch.Tensor, targets: torch.Tensor, *,
                                chunk_elements: int = CHUNK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """``log p(target)`` of each row of ``logits`` ``(M, V)``, float32 ``(M,)``, and each row's mean logit.

    Equals ``log_softmax(logits.float(), -1).gather(-1, targets[:, None])[:, 0]`` (values and gradients,
    tests/training/test_logps.py) but works on chunks of ``chunk_elements // V`` rows: at most one chunk
    of ``(rows, V)`` float32 exists besides ``logits`` itself, in forward and in backward (a log-softmax
    + gather keeps an ``(M, V)`` float32 output for backward and builds another for the gradient;
    ``F.cross_entropy(reduction="none")`` keeps one). Measured on 800 rows x 32000 vocab, one CPU thread,
    forward + backward: log-softmax + gather 0.45 s, ``cross_entropy`` 0.18 s, this 0.13 s (median of 5).

    The second output, ``logits.float().mean(-1)`` (detached), lets the trainer log Hugging Face TRL's
    ``logits/chosen`` and ``logits/rejected`` (means over completion tokens of the vocabulary-mean logit).
    """
    if logits.ndim != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (M, V) and targets (M,), got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}")
    chunk = max(1, chunk_elements // max(1, logits.shape[1]))
    return _TokenLogps.apply(logits, targets, chunk)


def sum_by_owner(values: torch.Tensor, owners: torch.Tensor, n: int) -> torch.Tensor:
    """``out[i] = sum of values[m] with owners[m] == i``, ``(n,)`` float32, accumulated in float64.

    ``index_add`` adds one value after another; in float32 a sum of ~50 token log-probs near -10 (vocabulary
    32000) then drifts by up to ~1e-4 from the exact sum, which moved AlphaPO's first-step loss by 2e-5
    against a float64 reference (Hugging Face TRL's pairwise ``sum`` stayed within 1e-6). Accumulating in
    float64 and rounding once gives the correctly rounded float32 sum; gradients pass through unchanged.
    Apple's MPS has no float64; there the sum stays float32.
    """
    dtype = torch.float32 if values.device.type == "mps" else torch.float64
    acc = torch.zeros(n, dtype=dtype, device=values.device).index_add(0, owners, values.to(dtype))
    return acc.float()


def gather_logps(logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor,
                 offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs and completion lengths from next-token logits.

    ``logits`` is ``(N, L, V)`` and holds the predictions for positions ``offset .. offset+L-1`` of the
    ``(N, T)`` sequences, i.e. ``logits[:, j]`` predicts token ``offset + j + 1``. Only rows whose label
    is a completion token are normalised (``logsumexp`` over ``V``, in float32).

    Returns ``(logps, lengths)``, each ``(N,)`` float32: ``logps[i] = sum_t log p(x_it | x_i<t)`` over
    completion tokens ``t``, ``lengths[i]`` their count.
    """
    n, seq_len = input_ids.shape
    labels = input_ids[:, offset + 1: offset + 1 + logits.shape[1]]
    label_mask = completion_mask[:, offset + 1: offset + 1 + logits.shape[1]]
    if labels.shape[1] < logits.shape[1]:  # the last position predicts nothing
        logits = logits[:, : labels.shape[1]]
    rows = logits[label_mask]  # (M, V): only completion-label rows
    targets = labels[label_mask]
    token_logps, _ = token_logps_and_logit_means(rows, targets)
    seq_index = torch.arange(n, device=input_ids.device)[:, None].expand_as(label_mask)[label_mask]
    logps = sum_by_owner(token_logps, seq_index, n)
    lengths = completion_mask.sum(dim=1).to(torch.float32)
    return logps, lengths


def accepts_logits_to_keep(model) -> bool:
    """True when ``model.forward`` (or a peft model's base model) takes ``logits_to_keep``."""
    base = getattr(model, "get_base_model", None)
    model = base() if callable(base) else model
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False
    return "logits_to_keep" in params


def output_head(model):
    """The LM head of ``model``, looking through DDP/FSDP ``.module`` and peft wrappers; None if none."""
    inner = getattr(model, "module", model)
    base = getattr(inner, "get_base_model", None)
    inner = base() if callable(base) else inner
    get = getattr(inner, "get_output_embeddings", None)
    return get() if callable(get) else None


@contextlib.contextmanager
def lm_head_rows(head, rows: torch.Tensor):
    """Within the block, ``head`` projects only the hidden states at ``rows`` (an ``(N, T)`` bool mask).

    A forward pre-hook replaces the head's input ``(N, T, H)`` by ``hidden[rows][None]``, ``(1, M, H)``,
    so the model returns logits ``(1, M, V)`` in row-major order of ``rows``: prompt and padding positions
    never reach the head, and no ``(N, T, V)`` tensor exists. The model's own forward still runs (DDP's
    gradient hooks, FSDP's unsharding unchanged), whatever it applies after the head is elementwise
    (soft-capping, logit scales), and the state dict is untouched (a hook, not a module swap).
    """
    def select(module, args):
        hidden = args[0]
        if hidden.shape[:2] != rows.shape:
            raise RuntimeError(f"LM head input {tuple(hidden.shape)} does not match the row mask "
                               f"{tuple(rows.shape)}; call sequence_logps(..., rows_only=False)")
        return (hidden[rows].unsqueeze(0), *args[1:])

    handle = head.register_forward_pre_hook(select)
    try:
        yield
    finally:
        handle.remove()


def sequence_logps(model, batch: SequenceBatch, *, trim: bool | None = None,
                   rows_only: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward over all ``N`` sequences; returns summed completion logps ``(N,)`` and lengths ``(N,)``.

    ``rows_only`` (default): the LM head runs only on the ``M`` positions whose label is a completion
    token (:func:`lm_head_rows`), so logits are ``(M, V)``. Otherwise, when the model's forward accepts
    ``logits_to_keep`` the LM head runs on positions from the earliest completion start (minus one) to the
    end, which is exact: earlier positions have prompt labels and are never used. ``trim`` forces that
    choice (pass it when ``model`` is a DDP/FSDP wrapper whose forward signature hides the argument);
    None detects it.
    """
    device = next(model.parameters()).device
    input_ids = batch.input_ids.to(device)
    attention_mask = batch.attention_mask.to(device)
    completion_mask = batch.completion_mask.to(device)
    head = output_head(model) if rows_only else None
    if head is not None:
        label_mask = completion_mask[:, 1:]  # (N, T-1): the label of position t is a completion token
        rows = torch.zeros_like(completion_mask)
        rows[:, :-1] = label_mask
        with lm_head_rows(head, rows):
            logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[0]
        targets = input_ids[:, 1:][label_mask]
        token_logps, _ = token_logps_and_logit_means(logits, targets)  # logits: (M, V)
        n = input_ids.shape[0]
        seq_index = torch.arange(n, device=device)[:, None].expand_as(label_mask)[label_mask]
        logps = sum_by_owner(token_logps, seq_index, n)
        return logps, completion_mask.sum(dim=1).to(torch.float32)
    first = int(batch.completion_mask.float().argmax(dim=1).min())  # earliest completion token
    offset = max(first - 1, 0)
    kwargs = {}
    if trim is None:
        trim = accepts_logits_to_keep(model)
    if offset > 0 and trim:
        kwargs["logits_to_keep"] = input_ids.shape[1] - offset
    else:
        offset = 0
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    return gather_logps(out.logits, input_ids, completion_mask, offset=offset)


# --------------------------------------------------------------------------------------------------
# prompt groups: the k responses of a prompt in one forward, the prompt encoded once

LAYOUTS = ("shared", "packed", "plain")
DEFAULT_LAYOUT = "shared"
# Model types whose Hugging Face implementation passes a 4D attention mask through unchanged and takes
# rotary position ids, checked by comparing the prefix-shared and plain paths (docs/performance.md).
PREFIX_SHARING_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "phi3"})
_MASK_ATTENTION = ("sdpa", "eager")  # kernels that take an arbitrary (R, 1, L, L) mask
_warned: set[str] = set()


@dataclass
class RowLayout:
    """Token rows to run through the model, and where each completion token's prediction is read.

    ``attention_mask`` is ``(R, L)`` (1 = real token, causal attention implied) for the plain layout, or a
    boolean ``(R, 1, L, L)`` "query may attend to key" mask with explicit ``position_ids`` for the
    prefix-shared layouts. Completion token ``m`` (of ``M``) is ``targets[m]``; its log-prob is read from
    the logits at flat position ``predictors[m]`` of the ``(R, L)`` rows and is summed into response
    ``owners[m]`` (row-major index into ``(B, k)``).
    """

    input_ids: torch.Tensor  # (R, L) long
    attention_mask: torch.Tensor  # (R, L) long, or (R, 1, L, L) bool
    position_ids: torch.Tensor | None  # (R, L) long, None: 0..L-1 (the model's default)
    predictors: torch.Tensor  # (M,) long
    targets: torch.Tensor  # (M,) long
    owners: torch.Tensor  # (M,) long
    lengths: torch.Tensor  # (B, k) float32
    useful_tokens: int  # each prompt once plus its responses
    processed_tokens: int  # R * L positions the model runs over


def _check_groups(prompt_ids: list[list[int]], response_ids: list[list[list[int]]]) -> int:
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} response lists")
    if not prompt_ids:
        raise ValueError("no prompts")
    k = len(response_ids[0])
    for i, (p, rs) in enumerate(zip(prompt_ids, response_ids)):
        if len(rs) != k or k == 0:
            raise ValueError(f"prompt {i} has {len(rs)} responses, prompt 0 has {k}; every prompt needs the "
                             f"same number (at least one)")
        if not p:  # nothing predicts the first completion token: |y| would count a token logp(y) lacks
            raise ValueError(f"prompt {i} is empty; the first completion token needs context (prepend a BOS token)")
        for j, r in enumerate(rs):
            if not r:
                raise ValueError(f"prompt {i}, response {j} is empty")
    return k


def plain_layout(prompt_ids: list[list[int]], response_ids: list[list[list[int]]], pad_id: int) -> RowLayout:
    """One right-padded row ``prompt + response`` per response (the prompt is encoded ``k`` times)."""
    k = _check_groups(prompt_ids, response_ids)
    prompts = [p for p, rs in zip(prompt_ids, response_ids) for _ in rs]
    comps = [r for rs in response_ids for r in rs]
    batch = collate_sequences(prompts, comps, pad_id)
    n, width = batch.input_ids.shape
    predictors, targets, owners = [], [], []
    for row, (p, r) in enumerate(zip(prompts, comps)):
        predictors.extend(range(row * width + len(p) - 1, row * width + len(p) - 1 + len(r)))
        targets.extend(r)
        owners.extend([row] * len(r))
    return RowLayout(batch.input_ids, batch.attention_mask, None, torch.tensor(predictors),
                     torch.tensor(targets, dtype=torch.long), torch.tensor(owners),
                     _lengths(response_ids, k), _useful(prompt_ids, response_ids), n * width)


def shared_layout(prompt_ids: list[list[int]], response_ids: list[list[list[int]]], pad_id: int) -> RowLayout:
    """One right-padded row ``[prompt, response_1, ..., response_k]`` per prompt (prefix sharing)."""
    _check_groups(prompt_ids, response_ids)
    return _prefix_rows(prompt_ids, response_ids, pad_id, [[i] for i in range(len(prompt_ids))])


def packed_layout(prompt_ids: list[list[int]], response_ids: list[list[list[int]]], pad_id: int, *,
                  row_tokens: int | None = None) -> RowLayout:
    """Prefix-shared groups packed first-fit decreasing into rows of at most ``row_tokens`` tokens.

    ``row_tokens`` defaults to the longest group, the row width of :func:`shared_layout`: wider rows
    cost more attention than they save in padding, since a dense-mask kernel computes every query-key
    pair of a row (docs/performance.md).
    """
    _check_groups(prompt_ids, response_ids)
    sizes = [len(p) + sum(len(r) for r in rs) for p, rs in zip(prompt_ids, response_ids)]
    width = max(sizes) if row_tokens is None else row_tokens
    if width < max(sizes):
        raise ValueError(f"row_tokens={row_tokens} is shorter than the longest group ({max(sizes)} tokens)")
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        for r, free in enumerate(room):
            if sizes[i] <= free:
                rows[r].append(i)
                room[r] -= sizes[i]
                break
        else:
            rows.append([i])
            room.append(width - sizes[i])
    return _prefix_rows(prompt_ids, response_ids, pad_id, rows)


def _lengths(response_ids: list[list[list[int]]], k: int) -> torch.Tensor:
    return torch.tensor([[float(len(r)) for r in rs] for rs in response_ids], dtype=torch.float32).view(-1, k)


def _useful(prompt_ids, response_ids) -> int:
    return sum(len(p) + sum(len(r) for r in rs) for p, rs in zip(prompt_ids, response_ids))


def _prefix_rows(prompt_ids, response_ids, pad_id: int, rows: list[list[int]]) -> RowLayout:
    """Rows holding the groups listed in ``rows`` (prompt indices), each ``[prompt, r_1, ..., r_k]``.

    Per position: the group (-1 for padding), the segment (0 prompt, j for response j) and the position id
    (restarting at ``len(prompt)`` for each response). Query ``q`` may attend to key ``t <= q`` of the same
    group when ``t`` is a prompt token or in the same response; a padding query attends to itself only (a
    fully masked row would give NaN in some kernels; its output is never read).
    """
    k = len(response_ids[0])
    width = max(sum(len(prompt_ids[i]) + sum(len(r) for r in response_ids[i]) for i in row) for row in rows)
    n_rows = len(rows)
    ids = torch.full((n_rows, width), pad_id, dtype=torch.long)
    group = torch.full((n_rows, width), -1, dtype=torch.long)
    segment = torch.zeros((n_rows, width), dtype=torch.long)
    positions = torch.zeros((n_rows, width), dtype=torch.long)
    predictors, targets, owners = [], [], []
    for r, members in enumerate(rows):
        at = 0
        for i in members:
            p = prompt_ids[i]
            ids[r, at: at + len(p)] = torch.tensor(p, dtype=torch.long)
            group[r, at: at + len(p)] = i
            positions[r, at: at + len(p)] = torch.arange(len(p))
            last_prompt = r * width + at + len(p) - 1
            at += len(p)
            for j, resp in enumerate(response_ids[i]):
                ids[r, at: at + len(resp)] = torch.tensor(resp, dtype=torch.long)
                group[r, at: at + len(resp)] = i
                segment[r, at: at + len(resp)] = j + 1
                positions[r, at: at + len(resp)] = torch.arange(len(p), len(p) + len(resp))
                # the last prompt token predicts every response's first token; then each token the next
                predictors.append(last_prompt)
                predictors.extend(range(r * width + at, r * width + at + len(resp) - 1))
                targets.extend(resp)
                owners.extend([i * k + j] * len(resp))
                at += len(resp)
    same_group = (group[:, :, None] == group[:, None, :]) & (group[:, None, :] >= 0)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    visible = (segment[:, None, :] == 0) | (segment[:, :, None] == segment[:, None, :])
    allowed = (same_group & causal & visible) | torch.eye(width, dtype=torch.bool)
    return RowLayout(ids, allowed[:, None], positions, torch.tensor(predictors),
                     torch.tensor(targets, dtype=torch.long), torch.tensor(owners),
                     _lengths(response_ids, k), _useful(prompt_ids, response_ids), n_rows * width)


def _hf_model(model):
    """The Hugging Face model inside DDP/FSDP (``.module``) and peft wrappers, or None."""
    inner = getattr(model, "module", model)
    base = getattr(inner, "get_base_model", None)
    inner = base() if callable(base) else inner
    return inner if hasattr(getattr(inner, "config", None), "model_type") else None


def prefix_sharing_unsupported(model, longest_row: int = 0) -> str | None:
    """Why ``model`` cannot run the prefix-shared layouts exactly, or None when it can.

    Needs a Hugging Face model of a type in :data:`PREFIX_SHARING_MODEL_TYPES` with an attention
    implementation that takes an arbitrary 4D mask (SDPA or eager), and no sliding window shorter than
    the longest row (a 4D mask is used as given, so a sliding window would not be applied).
    """
    hf = _hf_model(model)
    if hf is None:
        return f"{type(model).__name__} is not a Hugging Face model with a config"
    config = hf.config
    if config.model_type not in PREFIX_SHARING_MODEL_TYPES:
        return (f"model type {config.model_type!r} is not among those checked for 4D masks "
                f"({', '.join(sorted(PREFIX_SHARING_MODEL_TYPES))})")
    impl = getattr(config, "_attn_implementation", None) or "eager"
    if impl not in _MASK_ATTENTION:
        return (f"attention implementation {impl!r} takes no arbitrary 4D mask (flash-attention kernels take "
                f"only causal or packed-sequence masks)")
    window = getattr(config, "sliding_window", None)
    if window is not None and getattr(config, "use_sliding_window", True) and longest_row > window:
        return f"a row of {longest_row} tokens exceeds the sliding window of {window}"
    return None


def runnable_layout(model, layout: str = DEFAULT_LAYOUT, longest_row: int = 0) -> str:
    """The layout :func:`group_logps` runs for ``model`` when asked for ``layout``: ``layout`` itself, or
    ``"plain"`` when the prefix-shared layouts are unsupported (:func:`prefix_sharing_unsupported`; rows of
    ``longest_row`` tokens). No warning here: :func:`group_logps` warns when it falls back."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout == "plain" or prefix_sharing_unsupported(model, longest_row) is not None:
        return "plain"
    return layout


def _note_once(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"prefix-shared log-probs unavailable ({reason}); using the plain path, which encodes "
                      f"each prompt once per response (same values, more compute)", stacklevel=3)


@contextlib.contextmanager
def lm_head_index(head, index: torch.Tensor):
    """Within the block, ``head`` projects only the hidden states at flat positions ``index`` ``(M,)``.

    Like :func:`lm_head_rows`, but positions may repeat (in a prefix-shared row the last prompt token
    predicts the first token of every response): the head's input ``(R, L, H)`` becomes
    ``hidden.view(R * L, H)[index][None]`` and the model returns logits ``(1, M, V)``.
    """
    def select(module, args):
        hidden = args[0]
        if hidden.ndim != 3 or (index.numel() and int(index.max()) >= hidden.shape[0] * hidden.shape[1]):
            raise RuntimeError(f"LM head input {tuple(hidden.shape)} does not cover the selected positions")
        return (hidden.reshape(-1, hidden.shape[-1])[index].unsqueeze(0), *args[1:])

    handle = head.register_forward_pre_hook(select)
    try:
        yield
    finally:
        handle.remove()


def layout_logps(model, layout: RowLayout, *, trim: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` over ``layout``; returns per-token log-probs and mean logits, each ``(M,)`` float32.

    The LM head sees only the ``M`` predicting positions (:func:`lm_head_index`). Without a discoverable
    output layer the model returns full logits (or, with ``trim``/``logits_to_keep``, those from the first
    predicting position on) and the rows are selected afterwards.
    """
    device = next(model.parameters()).device
    ids = layout.input_ids.to(device)
    predictors = layout.predictors.to(device)
    kwargs = {"input_ids": ids, "attention_mask": layout.attention_mask.to(device), "use_cache": False}
    if layout.position_ids is not None:
        kwargs["position_ids"] = layout.position_ids.to(device)
        hf = _hf_model(model)
        if getattr(hf.config, "_attn_implementation", None) != "sdpa":  # eager adds the mask to the scores
            mask = torch.zeros(kwargs["attention_mask"].shape, dtype=torch.float32, device=device)
            kwargs["attention_mask"] = mask.masked_fill_(~kwargs["attention_mask"], torch.finfo(torch.float32).min)
    head = output_head(model)
    if head is not None:
        with lm_head_index(head, predictors):
            logits = model(**kwargs).logits[0]
    else:
        width = ids.shape[1]
        keep = width - int((predictors % width).min())
        if trim is None:
            trim = accepts_logits_to_keep(model)
        if trim and keep < width:
            kwargs["logits_to_keep"] = keep
        else:
            keep = width
        out = model(**kwargs).logits  # (R, keep, V)
        rows, cols = predictors // width, predictors % width - (width - keep)
        logits = out[rows, cols]
    return token_logps_and_logit_means(logits, layout.targets.to(device))


@dataclass
class GroupLogps:
    """Per-(prompt, response) results of :func:`group_logps`, each ``(B, k)`` float32."""

    logps: torch.Tensor  # summed completion log-probs
    lengths: torch.Tensor  # completion lengths (EOS included)
    logit_sums: torch.Tensor  # sums over completion tokens of the vocabulary-mean logit (detached)
    useful_tokens: int  # each prompt once plus its responses
    processed_tokens: int  # positions the model ran over (padding and repeated prompts included)
    sequence_tokens: int  # sum over responses of len(prompt) + len(response): SequenceBatch.num_tokens
    layout: str  # the layout that ran ("shared", "packed" or "plain")

    @property
    def useful_fraction(self) -> float:
        return self.useful_tokens / self.processed_tokens


def group_logps(model, prompt_ids: list[list[int]], response_ids: list[list[list[int]]], pad_id: int, *,
                trim: bool | None = None, layout: str = DEFAULT_LAYOUT) -> GroupLogps:
    """Summed completion log-probs of ``k`` responses to each of ``B`` prompts, in one forward.

    ``response_ids[i]`` lists the ``k`` responses to ``prompt_ids[i]`` (a preference pair is
    ``[chosen, rejected]``). ``layout``: ``"shared"`` (default) encodes each prompt once, its responses
    after it in the same row under a block mask (:func:`shared_layout`); ``"packed"`` also packs several
    such groups into one row (:func:`packed_layout`); ``"plain"`` runs one row per response. The shared
    layouts need a model that takes a 4D mask (:func:`prefix_sharing_unsupported`); other models run the
    plain path, with a warning (once per reason). All layouts give the same values up to float rounding.
    ``trim`` is passed on as in :func:`sequence_logps`.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    k = _check_groups(prompt_ids, response_ids)
    if layout != "plain":
        longest = max(len(p) + max(len(r) for r in rs) for p, rs in zip(prompt_ids, response_ids))
        reason = prefix_sharing_unsupported(model, longest)
        if reason is not None:
            _note_once(reason)
            layout = "plain"
    build = {"shared": shared_layout, "packed": packed_layout, "plain": plain_layout}[layout]
    rows = build(prompt_ids, response_ids, pad_id)
    token_logps, logit_means = layout_logps(model, rows, trim=trim)
    n = len(prompt_ids) * k
    owners = rows.owners.to(token_logps.device)
    logps = sum_by_owner(token_logps, owners, n)
    logit_sums = sum_by_owner(logit_means, owners, n)
    sequence_tokens = sum(len(p) * k + sum(len(r) for r in rs) for p, rs in zip(prompt_ids, response_ids))
    return GroupLogps(logps.view(-1, k), rows.lengths.to(token_logps.device), logit_sums.view(-1, k),
                      rows.useful_tokens, rows.processed_tokens, sequence_tokens, layout)
