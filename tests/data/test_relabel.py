"""Reward-augmented relabeling against hand-made expected records, for both chat-template kinds."""

from __future__ import annotations

import pytest

from alphapo.data import tokenize_preferences
from alphapo.data.relabel import (
    DEFAULT_GOAL_TEMPLATE,
    apply_goal,
    fit_scale,
    format_score,
    goal_prompt,
    goal_text,
    relabel,
    resolve_placement,
    supports_system_role,
    unrelabel,
)
from alphapo.errors import UserError
from alphapo.tiny_models import build_tokenizer

U = lambda text: {"role": "user", "content": text}  # noqa: E731
A = lambda text: {"role": "assistant", "content": text}  # noqa: E731
S = lambda text: {"role": "system", "content": text}  # noqa: E731

HEADER = ("You are an assistant that generates responses for the instruction while implicitly achieving the "
          "following target score (on a scale of 1-10, where 1 is lowest and 10 is highest):\n")
G8, G3 = HEADER + "Overall score: 8.", HEADER + "Overall score: 3."


def pair(rid="a", prompt="Q?", chosen="good", rejected="bad", cs=8.0, rs=3.0):
    return {"id": rid, "prompt": [U(prompt)], "chosen": [A(chosen)], "rejected": [A(rejected)],
            "chosen_score": cs, "rejected_score": rs}


def strip_meta(records):
    return [{k: v for k, v in r.items() if k != "relabel"} for r in records]


def test_goal_text_is_appendix_a1():
    """Appendix A.1 training prompt, with 8.0 printed as the integer 8."""
    assert goal_text(8.0) == G8
    assert goal_text({"overall": 10}) == HEADER + "Overall score: 10."
    assert goal_text({"helpfulness": 9, "honesty": 7.5}) == HEADER + "Helpfulness score: 9.\nHonesty score: 7.5."


def test_format_score():
    assert [format_score(v) for v in (8.0, 7.5, 7.125, 10, 3.0000001, 1.999)] == ["8", "7.5", "7.12", "10", "3", "2"]


def test_ra_system_template_expected_records():
    out, report = relabel([pair()], mode="ra", placement="system")
    assert strip_meta(out) == [
        {"id": "a/goal=chosen", "prompt": [S(G8), U("Q?")], "chosen": [A("good")], "rejected": [A("bad")],
         "chosen_score": 8.0, "rejected_score": 3.0},
        {"id": "a/goal=rejected", "prompt": [S(G3), U("Q?")], "chosen": [A("bad")], "rejected": [A("good")],
         "chosen_score": 3.0, "rejected_score": 8.0},
    ]
    assert out[1]["relabel"]["goal"] == "rejected" and out[1]["relabel"]["goal_scores"] == {"overall": 3.0}
    assert (report.input_pairs, report.output_pairs, report.ties) == (1, 2, 0)


def test_ra_no_system_template_swaps_and_prefixes_once():
    """The paper's code, for no-system templates, never swaps the negative-goal pair and prefixes twice.

    Here: goal=rejected swaps chosen/rejected, each prompt carries exactly one goal, the input is untouched.
    """
    src = [pair()]
    before = repr(src)
    out, _ = relabel(src, mode="ra", placement="prefix")
    assert strip_meta(out) == [
        {"id": "a/goal=chosen", "prompt": [U(G8 + "\n\nQ?")], "chosen": [A("good")], "rejected": [A("bad")],
         "chosen_score": 8.0, "rejected_score": 3.0},
        {"id": "a/goal=rejected", "prompt": [U(G3 + "\n\nQ?")], "chosen": [A("bad")], "rejected": [A("good")],
         "chosen_score": 3.0, "rejected_score": 8.0},
    ]
    assert repr(src) == before
    for rec in out:
        assert sum(m["content"].count(HEADER) for m in rec["prompt"]) == 1
    # and the result renders through a template that rejects a system role
    tok = build_tokenizer(chat_template="no_system")
    (ex_pos, ex_neg), _ = tokenize_preferences(out, tok)
    assert ex_neg["chosen_input_ids"] == ex_pos["rejected_input_ids"]


def test_placement_detection_by_trying_the_template():
    sys_tok, nosys_tok = build_tokenizer(chat_template="system"), build_tokenizer(chat_template="no_system")
    assert supports_system_role(sys_tok) and not supports_system_role(nosys_tok)
    assert supports_system_role(build_tokenizer(chat_template=None))
    assert resolve_placement("auto", sys_tok) == "system" and resolve_placement("auto", nosys_tok) == "prefix"
    assert resolve_placement("prefix", sys_tok) == "prefix"


def test_existing_system_message_is_merged_not_duplicated():
    rec = pair()
    rec["prompt"] = [S("Be brief."), U("Q?")]
    out, _ = relabel([rec], mode="ra-chosen")
    assert out[0]["prompt"] == [S(G8 + "\n\nBe brief."), U("Q?")]
    assert unrelabel(out) == [rec]


def test_ra_chosen_and_half_sizes_and_records():
    recs = [pair(str(i), cs=8.0, rs=3.0) for i in range(5)]
    out, rep = relabel(recs, mode="ra-chosen")
    assert [r["id"] for r in out] == [f"{i}/goal=chosen" for i in range(5)]
    assert all(r["prompt"][0] == S(G8) and r["chosen"] == [A("good")] for r in out)
    out, rep = relabel(recs, mode="half")
    assert [r["id"] for r in out] == ["0/goal=chosen", "0/goal=rejected", "1/goal=chosen", "1/goal=rejected"]
    assert rep.not_used == 3 and rep.output_pairs == 4


def test_tie_policies():
    recs = [pair("t", cs=5, rs=5), pair("u")]
    out, rep = relabel(recs, ties="drop")
    assert [r["id"] for r in out] == ["u/goal=chosen", "u/goal=rejected"] and rep.ties_dropped == 1
    out, rep = relabel(recs, ties="keep")
    assert len(out) == 4 and rep.ties == 1 and rep.ties_dropped == 0
    with pytest.raises(UserError, match="'t'"):
        relabel(recs, ties="error")


def test_inverted_pairs_are_relabeled_by_score():
    """chosen score 2 < rejected 6: under goal 2 the 'chosen' response is the one that matches the goal."""
    out, rep = relabel([pair(cs=2, rs=6)])
    assert rep.inverted == 1
    assert out[0]["prompt"][0]["content"].endswith("Overall score: 2.") and out[0]["chosen"] == [A("good")]
    assert out[1]["prompt"][0]["content"].endswith("Overall score: 6.") and out[1]["chosen"] == [A("bad")]


def test_normalisation_minmax_and_range():
    """minmax over {0, 0.5, 1, 2}: 0 -> 1, 2 -> 10, 0.5 -> 1 + 9 * 0.25 = 3.25, 1 -> 5.5."""
    recs = [pair("a", cs=2, rs=0), pair("b", cs=1, rs=0.5)]
    out, _ = relabel(recs, normalize="minmax")
    ends = [r["prompt"][0]["content"].rsplit(": ", 1)[1] for r in out]
    assert ends == ["10.", "1.", "5.5.", "3.25."]
    # declared range 0..4: 2 -> 1 + 9 * 0.5 = 5.5
    out, _ = relabel([pair(cs=2, rs=0)], normalize="range", score_range=(0, 4))
    assert out[0]["relabel"]["goal_scores"] == {"overall": 5.5}
    with pytest.raises(UserError, match="outside the declared range"):
        relabel([pair(cs=5, rs=0)], normalize="range", score_range=(0, 4))
    with pytest.raises(UserError, match="all 3"):
        fit_scale([3.0, 3.0], "minmax")


def test_multi_attribute_goals():
    rec = pair()
    rec["attributes"] = {"chosen": {"helpfulness": 9, "honesty": 7}, "rejected": {"helpfulness": 4, "honesty": 7}}
    out, _ = relabel([rec], attributes=["helpfulness", "honesty"])
    assert out[0]["prompt"][0] == S(HEADER + "Helpfulness score: 9.\nHonesty score: 7.")
    assert out[1]["prompt"][0] == S(HEADER + "Helpfulness score: 4.\nHonesty score: 7.")
    assert out[1]["attributes"] == {"chosen": {"helpfulness": 4, "honesty": 7},
                                    "rejected": {"helpfulness": 9, "honesty": 7}}
    assert unrelabel(out) == [rec]
    with pytest.raises(UserError, match="no attribute 'depth'"):
        relabel([rec], attributes=["depth"])


def test_implicit_mode_uses_given_scores_and_keeps_originals():
    recs = [pair("a", cs=None, rs=None), pair("b", cs=None, rs=None)]
    out, _ = relabel(recs, mode="implicit", scores=[(0.4, -0.2), (0.1, 0.0)], normalize="minmax")
    # minmax over {-0.2, 0, 0.1, 0.4}: 0.4 -> 10, -0.2 -> 1, 0.1 -> 1 + 9 * 0.5 = 5.5, 0 -> 1 + 9/3 = 4
    assert [r["relabel"]["goal_scores"]["overall"] for r in out] == pytest.approx([10, 1, 5.5, 4])
    assert out[0]["chosen_score"] is None
    assert unrelabel(out) == recs
    with pytest.raises(UserError, match="implicit"):
        relabel(recs, mode="implicit")


def test_goal_prompt_is_the_training_text_with_top_score():
    train, _ = relabel([pair(cs=10, rs=3)], mode="ra-chosen", placement="prefix")
    assert goal_prompt([U("Q?")], placement="prefix") == train[0]["prompt"]
    assert goal_prompt([U("Q?")]) == [S(HEADER + "Overall score: 10."), U("Q?")]
    nosys = build_tokenizer(chat_template="no_system")
    assert goal_prompt([U("Q?")], placement="auto", tokenizer=nosys) == [U(HEADER + "Overall score: 10.\n\nQ?")]
    assert goal_prompt([U("Q?")], attributes=("helpfulness", "honesty"))[0]["content"].endswith(
        "Helpfulness score: 10.\nHonesty score: 10.")


def test_custom_template_and_bad_template():
    out, _ = relabel([pair()], mode="ra-chosen", template="Aim for {scores}")
    assert out[0]["prompt"][0] == S("Aim for Overall score: 8.")
    with pytest.raises(UserError, match="exactly once"):
        relabel([pair()], template="no placeholder")
    assert DEFAULT_GOAL_TEMPLATE.count("{scores}") == 1


def test_round_trip_and_edit_detection():
    recs = [pair("a"), pair("b", prompt="Other", cs=1, rs=9)]
    for mode in ("ra", "ra-chosen"):
        for placement in ("system", "prefix"):
            out, _ = relabel(recs, mode=mode, placement=placement, ties="keep")
            assert unrelabel(out) == recs
    out, _ = relabel(recs, mode="ra")
    out[1]["chosen"] = [A("edited")]
    with pytest.raises(UserError, match="disagree"):
        unrelabel(out)
    with pytest.raises(UserError, match="no user turn"):
        apply_goal([S("x")], "g", "prefix")


def test_errors_name_the_record():
    with pytest.raises(UserError, match="'a' has no chosen_score"):
        relabel([pair(cs=None, rs=None)])
    multi = {"id": "m", "prompt": [U("Q")], "responses": [[A("x")], [A("y")]], "scores": [1, 2]}
    with pytest.raises(UserError, match="multi-response"):
        relabel([multi])
    with pytest.raises(UserError, match="mode"):
        relabel([pair()], mode="RA")


def _expected(rid, goal, score, placement, q, chosen, rejected, cs, rs):
    text = HEADER + f"Overall score: {score}."
    prompt = [S(text), U(q)] if placement == "system" else [U(text + "\n\n" + q)]
    return {"id": f"{rid}/goal={goal}", "prompt": prompt, "chosen": [A(chosen)], "rejected": [A(rejected)],
            "chosen_score": cs, "rejected_score": rs}


@pytest.mark.parametrize("placement", ["system", "prefix"])
@pytest.mark.parametrize("mode", ["ra", "ra-chosen", "half", "implicit"])
def test_every_mode_against_hand_made_records(mode, placement):
    """Input a: (good 8, bad 3) on "Q?", b: (yes 2, no 7) on "R?".

    implicit: rewards a (0.3, -0.6), b (0, 0.3); min-max over {-0.6, 0, 0.3}: 0.3 -> 10, -0.6 -> 1,
    0 -> 1 + 9 * 0.6 / 0.9 = 7. The records' own scores are kept (8/3 and 2/7), goals come from rewards.
    """
    recs = [pair("a", "Q?", "good", "bad", 8.0, 3.0), pair("b", "R?", "yes", "no", 2.0, 7.0)]
    E = _expected
    a_pos = E("a", "chosen", 8, placement, "Q?", "good", "bad", 8.0, 3.0)
    a_neg = E("a", "rejected", 3, placement, "Q?", "bad", "good", 3.0, 8.0)
    b_pos = E("b", "chosen", 2, placement, "R?", "yes", "no", 2.0, 7.0)
    b_neg = E("b", "rejected", 7, placement, "R?", "no", "yes", 7.0, 2.0)
    kwargs = {}
    if mode == "implicit":
        kwargs = {"scores": [(0.3, -0.6), (0.0, 0.3)], "normalize": "minmax"}
        a_pos = E("a", "chosen", 10, placement, "Q?", "good", "bad", 8.0, 3.0)
        a_neg = E("a", "rejected", 1, placement, "Q?", "bad", "good", 3.0, 8.0)
        b_pos = E("b", "chosen", 7, placement, "R?", "yes", "no", 2.0, 7.0)
        b_neg = E("b", "rejected", 10, placement, "R?", "no", "yes", 7.0, 2.0)
    expected = {"ra": [a_pos, a_neg, b_pos, b_neg], "ra-chosen": [a_pos, b_pos], "half": [a_pos, a_neg],
                "implicit": [a_pos, a_neg, b_pos, b_neg]}[mode]
    out, _ = relabel(recs, mode=mode, placement=placement, **kwargs)
    assert strip_meta(out) == expected
    # and both template kinds accept the result
    tok = build_tokenizer(chat_template="system" if placement == "system" else "no_system")
    examples, _ = tokenize_preferences(out, tok)
    assert len(examples) == len(expected)
