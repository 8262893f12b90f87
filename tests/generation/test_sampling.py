"""Sampling on a tiny local model: seeded determinism, left padding, EOS handling; generate_pairs and CLI."""

from __future__ import annotations

import json

import pytest

from alphapo.errors import UserError
from alphapo.generation.judges import LengthJudge
from alphapo.generation.pairs import generate_pairs
from alphapo.generation.sampling import generate_responses, load_policy

PROMPTS = [
    [{"role": "user", "content": "Sort the words: banana apple cherry"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 12 plus 7?"}],
    [{"role": "user", "content": "Hi"}],
]


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_policy(tiny_model_dir, device="cpu")


def test_sampling_is_deterministic_given_seed_and_leaves_global_rng_alone(policy):
    import torch

    model, tok = policy
    side = tok.padding_side
    kw = dict(k=3, temperature=0.8, max_new_tokens=12, batch_size=2, progress=False)
    torch.manual_seed(123)
    a = generate_responses(model, tok, PROMPTS, seed=5, **kw)
    after = torch.rand(1)
    torch.manual_seed(123)
    b = generate_responses(model, tok, PROMPTS, seed=5, **kw)
    assert torch.equal(after, torch.rand(1))  # the caller's RNG stream is untouched
    assert a.responses == b.responses and a.num_tokens == b.num_tokens
    assert tok.padding_side == side  # the (possibly shared) tokenizer is not mutated
    c = generate_responses(model, tok, PROMPTS, seed=6, **kw)
    assert c.responses != a.responses
    assert [len(r) for r in a.responses] == [3, 3, 3]
    assert len({r for row in a.responses for r in row}) > 3  # k samples actually differ
    for row_n, row_f in zip(a.num_tokens, a.finished):
        for n, f in zip(row_n, row_f):
            assert n <= 12 and (f or n == 12)
    assert a.samples_per_second > 0


def test_greedy_batched_equals_one_at_a_time(policy):
    """Left padding + attention mask: a padded batch decodes exactly like each prompt alone."""
    model, tok = policy
    kw = dict(k=1, temperature=0.0, max_new_tokens=10, progress=False)
    batched = generate_responses(model, tok, PROMPTS, batch_size=3, **kw)
    single = [generate_responses(model, tok, [p], batch_size=1, **kw).responses[0] for p in PROMPTS]
    assert batched.responses == single
    # a checkpoint's generation config (repetition penalty, min length) does not leak into our sampling
    model.generation_config.repetition_penalty = 50.0
    model.generation_config.min_new_tokens = 10
    try:
        assert generate_responses(model, tok, PROMPTS, batch_size=3, **kw).responses == batched.responses
    finally:
        model.generation_config.repetition_penalty = 1.0
        model.generation_config.min_new_tokens = None
    with pytest.raises(UserError, match="greedy"):
        generate_responses(model, tok, PROMPTS, k=2, temperature=0.0)


def test_response_is_cut_at_eos_and_decoded_without_special_tokens(policy):
    """Force EOS after the first token: every response is one token long and marked finished."""
    model, tok = policy
    eos = tok.eos_token_id
    model.generation_config.min_new_tokens = None
    # a logits bias making EOS certain from step 2 on
    from transformers import LogitsProcessor

    class ForceEosAfterOne(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if input_ids.shape[1] > self.start:
                scores[:] = -1e9
                scores[:, eos] = 0
            return scores

    import transformers

    orig = model.generate

    def generate_with_eos(**kw):
        proc = ForceEosAfterOne()
        proc.start = kw["input_ids"].shape[1]
        return orig(logits_processor=transformers.LogitsProcessorList([proc]), **kw)

    model.generate = generate_with_eos
    try:
        res = generate_responses(model, tok, PROMPTS, k=2, temperature=1.0, max_new_tokens=8, progress=False)
    finally:
        del model.generate
    assert all(n == 1 for row in res.num_tokens for n in row)
    assert all(all(row) for row in res.finished)
    assert not any("<|end|>" in r or "<|pad|>" in r for row in res.responses for r in row)


def test_generate_pairs_keeps_longest_and_shortest(policy):
    model, tok = policy
    res = generate_pairs(model, tok, PROMPTS, LengthJudge(), k=4, temperature=1.0, max_new_tokens=12,
                         seed=1, progress=False)
    assert res.stats.n_prompts == 3
    by_id = {r["id"]: r for r in res.records}
    for n, row in enumerate(res.generation.responses):
        lengths = [len(r) for r in row]
        if max(lengths) == min(lengths):
            assert f"prompt-{n}" not in by_id
            continue
        rec = by_id[f"prompt-{n}"]
        assert rec["score_chosen"] == max(lengths) and rec["score_rejected"] == min(lengths)
        assert rec["chosen"][0]["content"] == row[lengths.index(max(lengths))]
    assert res.stats.n_kept + res.stats.n_dropped_all_equal == 3


def test_generate_cli_writes_dataset_the_loader_accepts(tiny_model_dir, tmp_path, capsys):
    from alphapo.cli import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p, "id": f"p{i}"}) + "\n" for i, p in enumerate(PROMPTS)))
    out = tmp_path / "pairs.jsonl"
    rc = main(["generate", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--judge", "length",
               "--k", "3", "--max-new-tokens", "8", "--out", str(out), "--no-progress", "--judge-noise", "0.1"])
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    stats = json.loads((tmp_path / "pairs.jsonl.stats.json").read_text())
    assert stats["n_kept"] == len(rows) and stats["n_prompts"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl", "pairs.jsonl.stats.json", "prompts.jsonl"]
    assert all(r["score_chosen"] > r["score_rejected"] for r in rows)
    from alphapo.data.loading import load_preferences

    records = load_preferences(str(out))
    assert [r["id"] for r in records] == [r["id"] for r in rows]
    assert records[0]["chosen_score"] == rows[0]["score_chosen"]
    # a bad prompt file is a one-line user error naming the line
    prompts.write_text('{"prompt": "ok"}\n{"nope": 1}\n')
    assert main(["generate", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--judge", "length",
                 "--out", str(out)]) == 2
    assert "prompts.jsonl:2" in capsys.readouterr().err


def test_pairs_carry_judge_attributes(policy):
    """A judge with ``score_attributes`` (like the toy gold judge) adds chosen/rejected attributes."""
    model, tok = policy

    class AttributeJudge(LengthJudge):
        def score_attributes(self, prompts, responses):
            return [{"length": float(len(r)), "has_space": float(" " in r)} for r in responses]

    res = generate_pairs(model, tok, PROMPTS, AttributeJudge(), k=4, temperature=1.0, max_new_tokens=12,
                         seed=1, progress=False)
    assert res.records
    for rec in res.records:
        assert rec["chosen_attributes"]["length"] == rec["score_chosen"]
        assert rec["rejected_attributes"]["length"] == rec["score_rejected"]


def test_plain_text_prompts_match_the_training_tokenisation(tmp_path):
    """Without a chat template the prompt text is what alphapo.data.tokenize feeds the trainer."""
    from alphapo.generation.judges import render_conversation
    from alphapo.tiny_models import save_tiny_model

    model, tok = load_policy(save_tiny_model(tmp_path / "plain", chat_template=None), device="cpu")
    text, templated = render_conversation(tok, PROMPTS[1])
    assert not templated and text == "Be brief.\n\nWhat is 12 plus 7?"
    from alphapo.data.tokenize import prompt_text

    assert text == prompt_text(tok, PROMPTS[1])
    res = generate_responses(model, tok, PROMPTS, k=2, max_new_tokens=5, progress=False)
    assert [len(r) for r in res.responses] == [2, 2, 2]


def test_template_without_system_role_is_a_user_error(tiny_model_dir_no_system):
    model, tok = load_policy(tiny_model_dir_no_system, device="cpu")
    with pytest.raises(UserError, match="prompt 1: the chat template cannot render it"):
        generate_responses(model, tok, PROMPTS, max_new_tokens=4, progress=False)


def test_prefill_once_encodes_each_prompt_once_and_matches_repeat_path(policy):
    """k samples per prompt from one shared prefill: the prompts reach the model once (B rows, all prompt
    tokens but the last), every later forward is one token for B k rows; with the same seed the samples
    equal Hugging Face's ``num_return_sequences`` path (same random draws, same logits up to rounding),
    and greedy continuations of the k copies are identical to each other and to a k = 1 greedy decode."""
    import torch

    from alphapo.generation.sampling import _generate_with_only, _left_pad, _prefill_once

    model, tok = policy
    kw = dict(k=3, temperature=0.8, max_new_tokens=10, batch_size=3, seed=4, progress=False)
    import functools

    shapes, keeps = [], []
    orig = model.forward

    @functools.wraps(orig)
    def recording(*args, **kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        keeps.append(kwargs.get("logits_to_keep"))
        return orig(*args, **kwargs)

    model.forward = recording
    try:
        once = generate_responses(model, tok, PROMPTS, **kw)
    finally:
        del model.forward
    width = shapes[0][1] + 1
    assert shapes[0] == (3, width - 1)  # the prefill: 3 prompts, not 9 rows
    assert keeps[0] == 1  # and no (B, T, V) logits: the LM head runs on one position
    assert all(s == (9, 1) for s in shapes[1:]) and len(shapes) >= 2
    repeat = generate_responses(model, tok, PROMPTS, prefill="repeat", **kw)
    assert once.responses == repeat.responses and once.num_tokens == repeat.num_tokens
    with pytest.raises(UserError, match="prefill must be 'once' or 'repeat'"):
        generate_responses(model, tok, PROMPTS, prefill="twice")
    # greedy: the k copies of a prompt continue identically, and as a plain k = 1 greedy decode
    from transformers import GenerationConfig

    ids = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=True) for p in PROMPTS]
    ids = [x["input_ids"] if isinstance(x, dict) or hasattr(x, "keys") else x for x in ids]
    enc = _left_pad(ids, tok.pad_token_id, "cpu")
    config = GenerationConfig(max_new_tokens=8, do_sample=False, use_cache=True, pad_token_id=tok.pad_token_id,
                              eos_token_id=tok.eos_token_id)
    with torch.inference_mode():
        shared = _prefill_once(model, enc, config, 3)[:, enc["input_ids"].shape[1]:]
        plain = _generate_with_only(model, enc, config)[:, enc["input_ids"].shape[1]:]
    assert torch.equal(shared, plain.repeat_interleave(3, dim=0))
