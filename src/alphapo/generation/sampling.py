"""Batched, seeded sampling of k responses per prompt from any causal LM with a chat template.

``generate_responses(model, tokenizer, prompts, k=5, temperature=0.8, seed=0)`` renders each prompt with
the tokenizer's chat template (generation prompt on) and left-pads a batch of prompts. It then fills each
prompt's KV cache once (a forward over all prompt tokens but the last), repeats the cache ``k`` times
along the batch axis, and lets ``model.generate`` continue from it: the ``k`` samples of a prompt share
one prefill, and each decode step runs ``B k`` rows. (``generate(num_return_sequences=k)`` instead
repeats every prompt ``k`` times *before* the prefill, so the prompt is encoded ``k`` times;
``prefill="repeat"`` keeps that path for comparison. ``benchmarks/bench_paths.py`` measures both.)
Greedy outputs are identical on both paths (tests/generation/test_sampling.py). Models whose cache
cannot be repeated along the batch axis (no ``batch_repeat_interleave``), ``k = 1`` and one-token
prompts take the plain ``generate`` call. Each response is cut at the first EOS and decoded without
special tokens.

Seeding: ``model.generate`` draws from torch's global generator and takes no ``torch.Generator``. We run
each batch inside ``torch.random.fork_rng`` seeded with a hash of ``(seed, batch index)``, so results are
a fixed function of (seed, prompts, batch_size, prefill, device, dtype) and the caller's global RNG is
untouched. Changing ``batch_size`` changes the draws (each batch consumes random numbers for its own
rows). The prefill draws no random numbers, so both prefill paths consume the same draws; their samples
differ only where float rounding of the logits (the prompt's last token is encoded separately) changes a
draw.

``temperature=0`` means greedy decoding (then ``k`` must be 1). Sampling is plain temperature sampling:
``top_k`` is disabled (``top_k=0``, not Hugging Face's default of 50) and ``top_p=1`` unless given, as in
the papers' vLLM sampling. The model's own ``generation_config`` is ignored apart from its EOS / BOS ids
(a checkpoint's repetition penalty or ``min_new_tokens`` would silently change the sampling).
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alphapo.data.tokenize import render_conversation
from alphapo.errors import UserError
from alphapo.generation.judges import Conversation

__all__ = ["GenerationResult", "generate_responses", "load_policy", "batch_seed"]


@dataclass
class GenerationResult:
    """Responses ``[prompt][sample]`` with their generated-token counts and EOS flags, plus timing."""

    responses: list[list[str]]
    num_tokens: list[list[int]]  # generated tokens up to (excluding) the first EOS
    finished: list[list[bool]]  # False: hit max_new_tokens before EOS (truncated)
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return sum(len(r) for r in self.responses)

    @property
    def samples_per_second(self) -> float:
        return self.n_samples / self.seconds if self.seconds > 0 else float("nan")

    @property
    def truncated_fraction(self) -> float:
        flat = [f for row in self.finished for f in row]
        return 1.0 - sum(flat) / len(flat) if flat else 0.0


def batch_seed(seed: int, index: int) -> int:
    """A 63-bit seed for batch ``index`` of a run seeded with ``seed`` (a hash: no collisions between runs)."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def load_policy(path: str | Path, *, device: str | None = None, dtype: str | None = None):
    """Load ``(model, tokenizer)`` from a local folder (``AutoModelForCausalLM``), in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(f"model folder {str(path)!r} has no config.json (give a local Hugging Face model folder)")
    kwargs = {"dtype": getattr(torch, dtype)} if dtype else {}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs).eval()
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def _left_pad(ids: list[list[int]], pad_id: int, device) -> dict:
    """Left-pad token lists: decoder-only generation needs new tokens to follow each prompt directly.

    Done here rather than with ``tokenizer.padding_side = "left"`` so the caller's tokenizer (often shared
    with the trainer) is never mutated.
    """
    import torch

    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, x in enumerate(ids):
        input_ids[row, width - len(x):] = torch.tensor(x, dtype=torch.long)
        mask[row, width - len(x):] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device)}


def _generate_with_only(model, enc: dict, config):
    """``model.generate`` with exactly ``config``: Hugging Face fills every unset field of a passed config
    from ``model.generation_config``, so that is swapped for a bare one during the call (and restored)."""
    from transformers import GenerationConfig

    saved = model.generation_config
    model.generation_config = GenerationConfig(bos_token_id=saved.bos_token_id,
                                               eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id)
    try:
        return model.generate(**enc, generation_config=config)
    finally:
        model.generation_config = saved


def _prefill_once(model, enc: dict, config, k: int):
    """``model.generate`` of ``k`` samples per prompt from one shared prefill (see the module docstring).

    Returns None when the shortcut does not apply (then the caller uses ``num_return_sequences``).
    """
    import torch

    ids, mask = enc["input_ids"], enc["attention_mask"]
    if k == 1 or int(mask.sum(dim=1).min()) < 2:  # every row needs a prefix before its last token
        return None
    position_ids = (mask.cumsum(-1) - 1).clamp_(min=0)  # left padding: positions count real tokens only
    # the prefill's logits are not used: keep one position when the model allows it (a (B, T, V) tensor
    # would cost more than the prefill saves at a realistic vocabulary)
    import inspect

    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    out = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=position_ids[:, :-1],
                use_cache=True, **keep)
    # the KV cache is ``cache`` in transformers >= 5 (``past_key_values`` before, and still accepted)
    name = "cache" if getattr(out, "cache", None) is not None else "past_key_values"
    cache = getattr(out, name, None)
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return None
    cache.batch_repeat_interleave(k)
    single = copy.deepcopy(config)
    single.num_return_sequences = 1
    expanded = {"input_ids": torch.repeat_interleave(ids, k, dim=0),
                "attention_mask": torch.repeat_interleave(mask, k, dim=0), name: cache}
    return _generate_with_only(model, expanded, single)


def generate_responses(model, tokenizer, prompts: Sequence[Conversation], *, k: int = 1,
                       temperature: float = 0.8, top_p: float = 1.0, max_new_tokens: int = 128,
                       batch_size: int = 8, seed: int = 0, progress: bool = True,
                       desc: str = "generate", prefill: str = "once") -> GenerationResult:
    """Sample ``k`` responses for each prompt; returns a ``GenerationResult`` (responses[prompt][sample]).

    ``batch_size`` counts prompts per ``generate`` call (each call decodes ``batch_size * k`` rows).
    ``temperature == 0`` is greedy decoding and requires ``k == 1``. ``prefill``: ``"once"`` (default)
    encodes each prompt once for its ``k`` samples; ``"repeat"`` is Hugging Face's
    ``num_return_sequences`` path, which encodes it ``k`` times.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import GenerationConfig

    if k < 1:
        raise UserError(f"k must be >= 1, got {k}")
    if temperature < 0:
        raise UserError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0 and k > 1:
        raise UserError("greedy decoding (temperature 0) gives k identical responses; use k=1 or temperature > 0")
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    if prefill not in ("once", "repeat"):
        raise UserError(f"prefill must be 'once' or 'repeat', got {prefill!r}")

    # Stop at the model's EOS id(s) and at the tokenizer's: training appends the tokenizer's EOS to every
    # completion (data contract), and chat models often list several (e.g. end-of-turn and end-of-text).
    eos = model.generation_config.eos_token_id
    eos_ids = {e for e in (eos if isinstance(eos, (list, tuple)) else [eos]) + [tokenizer.eos_token_id]
               if e is not None}
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = min(eos_ids) if eos_ids else 0  # masked out by the attention mask either way
    rendered = []
    for n, p in enumerate(prompts):
        try:
            rendered.append(render_conversation(tokenizer, p))
        except Exception as err:  # noqa: BLE001 - jinja TemplateError, ValueError...: name the prompt
            raise UserError(f"prompt {n}: the chat template cannot render it ({type(err).__name__}: {err}); "
                            "e.g. templates without a system role need the system text in the user turn") from err
    device = next(model.parameters()).device
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    # A fresh config, not the model's: a checkpoint's generation_config.json may set repetition_penalty,
    # top_k, min_new_tokens..., which would silently change what "temperature sampling" means.
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 \
        else dict(do_sample=False)
    config = GenerationConfig(max_new_tokens=max_new_tokens, num_return_sequences=k, use_cache=True,
                              pad_token_id=pad_id, eos_token_id=sorted(eos_ids) or None,
                              bos_token_id=model.generation_config.bos_token_id, **sampling)

    responses: list[list[str]] = []
    num_tokens: list[list[int]] = []
    finished: list[list[bool]] = []
    start_time = time.perf_counter()
    bar = tqdm(total=len(prompts) * k, desc=desc, unit="sample", disable=not progress, leave=False)
    for b, start in enumerate(range(0, len(rendered), batch_size)):
        chunk = rendered[start:start + batch_size]
        ids = [tokenizer(text, add_special_tokens=not templated)["input_ids"] for text, templated in chunk]
        enc = _left_pad(ids, pad_id, device)
        with torch.random.fork_rng(devices=rng_devices), torch.inference_mode():
            torch.manual_seed(batch_seed(seed, b))
            out = _prefill_once(model, enc, config, k) if prefill == "once" else None
            if out is None:
                out = _generate_with_only(model, enc, config)
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        for i in range(len(chunk)):
            row_texts, row_lens, row_done = [], [], []
            for j in range(k):
                toks = new[i * k + j]
                cut = next((t for t, tok in enumerate(toks) if tok in eos_ids), None)
                kept = toks if cut is None else toks[:cut]
                row_texts.append(tokenizer.decode(kept, skip_special_tokens=True))
                row_lens.append(len(kept))
                row_done.append(cut is not None)
            responses.append(row_texts)
            num_tokens.append(row_lens)
            finished.append(row_done)
        bar.update(len(chunk) * k)
    bar.close()
    return GenerationResult(responses, num_tokens, finished, seconds=time.perf_counter() - start_time)
