"""Property tests (hypothesis): loaders never crash on any input except with our validation error;
relabel -> unrelabel round-trips; counts add up; tokenisation never drops rows and respects limits."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alphapo.data import DataValidationError, load_preferences, tokenize_preferences, validate
from alphapo.data.relabel import relabel, unrelabel
from alphapo.data.schema import normalize_row
from alphapo.errors import UserError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

text = st.text(max_size=12)
json_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | text
message = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool", "bot", 3]),
                                 "content": json_scalar})
json_value = st.recursive(json_scalar | message, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(text, inner, max_size=3), max_leaves=10)
KEYS = ["prompt", "chosen", "rejected", "score_chosen", "score_rejected", "responses", "scores", "id",
        "prompt_id", "chosen_attributes", "rejected_attributes", "attributes", "relabel"]
row = st.dictionaries(st.sampled_from(KEYS), json_value, max_size=7) | json_value


@SETTINGS
@given(row)
def test_normalize_row_never_crashes(raw):
    record, issues = normalize_row(raw, file="f", row=1)
    assert (record is None) == bool(issues)
    if record is not None:
        assert isinstance(record["id"], str) and record["prompt"]
        if "responses" in record:
            assert len(record["responses"]) == len(record["scores"]) >= 2
        else:
            assert record["chosen"] != record["rejected"]
            assert record["chosen"][-1]["role"] == "assistant" == record["rejected"][-1]["role"]


@SETTINGS
@given(st.lists(st.binary(max_size=40) | row.map(lambda r: json.dumps(r).encode()), max_size=6))
def test_jsonl_loader_counts_add_up_on_any_bytes(tmp_path, lines):
    path = tmp_path / "x.jsonl"
    content = b"\n".join(line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines) + b"\n"
    path.write_bytes(content)
    if not any(line.strip() for line in content.removeprefix(b"\xef\xbb\xbf").split(b"\n")):
        with pytest.raises(UserError, match="no rows"):  # an empty or blank-lines-only file is an error
            validate(path)
        return
    report = validate(path)
    assert report.rows == report.valid + report.invalid_rows
    assert sum(1 for _ in {(i.row) for i in report.issues}) == report.invalid_rows
    try:
        records = load_preferences(path)
    except DataValidationError as err:
        assert err.report.invalid_rows > 0
    else:
        assert len(records) == report.valid


messages_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=15)
score = st.integers(-5, 15).map(float) | st.floats(-100, 100, allow_nan=False)


@st.composite
def pair_records(draw, min_size=0):
    n = draw(st.integers(min_size, 6))
    out = []
    for i in range(n):
        prompt = [{"role": "user", "content": draw(messages_text)}]
        if draw(st.booleans()):
            prompt = [{"role": "system", "content": draw(st.text(max_size=5))}] + prompt
        chosen = draw(messages_text)
        rejected = draw(messages_text.filter(lambda t, c=chosen: t != c))
        out.append({"id": str(i), "prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                    "chosen_score": draw(score), "rejected_score": draw(score)})
    return out


@SETTINGS
@given(pair_records(), st.sampled_from(["ra", "ra-chosen", "half"]), st.sampled_from(["system", "prefix"]),
       st.sampled_from(["keep", "drop"]), st.sampled_from(["none", "minmax"]))
def test_relabel_counts_and_round_trip(records, mode, placement, ties, normalize):
    scores = [v for r in records for v in (r["chosen_score"], r["rejected_score"])]
    if normalize == "minmax" and scores and min(scores) == max(scores):
        normalize = "none"
    out, rep = relabel(records, mode=mode, placement=placement, ties=ties, normalize=normalize)
    used = len(records) // 2 if mode == "half" else len(records)
    per_pair = 1 if mode == "ra-chosen" else 2
    assert rep.not_used == len(records) - used
    assert rep.output_pairs == len(out) == per_pair * (used - rep.ties_dropped)
    back = unrelabel(out)
    kept = {r["relabel"]["source_index"] for r in out}
    assert back == [records[i] for i in range(used) if i in kept]
    for r in out:  # one goal per prompt, in the placement asked for
        joined = "".join(m["content"] for m in r["prompt"])
        assert joined.count(r["relabel"]["goal_text"]) == 1 + "".join(
            m["content"] for m in records[r["relabel"]["source_index"]]["prompt"]).count(r["relabel"]["goal_text"])


@pytest.mark.parametrize("template", ["system", None])
def test_tokenize_properties(template):
    from alphapo.tiny_models import build_tokenizer

    tok = build_tokenizer(chat_template=template)

    @SETTINGS
    @given(pair_records(min_size=1), st.none() | st.integers(8, 40), st.sampled_from(["keep_end", "keep_start"]))
    def check(records, max_length, mode):
        examples, rep = tokenize_preferences(records, tok, max_length=max_length, prompt_truncation=mode,
                                             on_identical="skip")
        assert len(examples) + rep.identical_skipped == len(records) == rep.rows
        kept = {ex["id"] for ex in examples}
        records = [r for r in records if r["id"] in kept]
        assert rep.truncated_rows <= rep.rows
        for rec, ex in zip(records, examples):
            for side in ("chosen", "rejected"):
                ids = ex[f"{side}_input_ids"]
                assert ids.count(tok.eos_token_id) <= 1
                if max_length is not None:
                    assert len(ex["prompt_input_ids"]) + len(ids) <= max_length
                elif template is None:  # plain text: content + one EOS
                    assert ids[-1] == tok.eos_token_id
                else:  # templated: prompt + completion is exactly the template's whole conversation
                    full = tok.apply_chat_template(rec["prompt"] + rec[side], tokenize=False)
                    assert tok.decode(ex["prompt_input_ids"] + ids) == full

    check()


@SETTINGS
@given(st.binary(max_size=200), st.sampled_from(["x.csv", "x.tsv", "x.json"]))
def test_csv_and_json_loaders_on_any_bytes(tmp_path, data, name):
    from alphapo.errors import UserError

    path = tmp_path / name
    path.write_bytes(b"prompt,chosen,rejected\n" + data if name != "x.json" else data)
    try:
        report = validate(path)
    except UserError:  # e.g. a JSON document that is not a list of rows: our error, with the reason
        return
    assert report.rows == report.valid + report.invalid_rows
