"""A reduced quickstart end to end (tiny sizes): summary.json and report.md hold what the run measured."""

from __future__ import annotations

import json

import pytest

from alphapo.quickstart import METHODS, QuickstartConfig, render_report, run_quickstart
from alphapo.toyworld import GoldJudge, parse_task
from alphapo.toyworld.sft import ToySFTConfig
from alphapo.toyworld.tasks import TASK_TYPES, split_tasks


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart")
    sft = ToySFTConfig(n_train=300, n_heldout=40, hidden_size=16, layers=1, heads=2, kv_heads=1,
                       intermediate_size=32, steps=60, batch_size=16, warmup_steps=5)
    config = QuickstartConfig(seed=1, sft=sft, n_pair_prompts=48, n_eval=40, batch_size=8, progress=False)
    summary = run_quickstart(out, config)
    return out, summary


@pytest.mark.slow
def test_quickstart_writes_what_it_measured(tiny_run):
    out, summary = tiny_run
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert set(on_disk["methods"]) == set(METHODS) == {"dpo", "simpo", "alphapo"}
    assert on_disk["methods"]["alphapo"]["params"]["alpha"] == 1.0
    for name, m in on_disk["methods"].items():
        for key in ("win_rate", "win_rate_ci", "lc_win_rate", "mean_gold_score", "mean_length"):
            assert key in m, (name, key)
        n = m["n_wins"] + m["n_ties"] + m["n_losses"]
        assert n == on_disk["n_eval"] == 40
        # the win rate is the measured preferences: ties count half
        assert m["win_rate"] == pytest.approx((m["n_wins"] + 0.5 * m["n_ties"]) / n)
        lo, hi = m["win_rate_ci"]
        assert 0.0 <= lo <= m["win_rate"] <= hi <= 1.0
        assert 1.0 <= m["mean_gold_score"] <= 10.0
        assert (out / name / "final" / "config.json").is_file()
        assert (out / name / "metrics.jsonl").is_file()
    # the pairs file holds exactly the counted pairs, each chosen scored strictly above its rejected
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == on_disk["pairs"]["n_pairs"] > 0
    assert all(r["score_chosen"] > r["score_rejected"] for r in rows)
    judge = GoldJudge()
    first = rows[0]
    assert judge.score([first["prompt"]], [first["chosen"][0]["content"]]) == [first["score_chosen"]]
    # example responses carry their gold scores
    for ex in on_disk["examples"]:
        for resp, score in ex["responses"].values():
            assert judge.score([ex["user"]], [resp]) == [pytest.approx(score)]
        assert " ".join(parse_task(ex["user"]).answer) == ex["answer"]
    # paired correctness gains: the mean of per-prompt differences is the difference of the means
    sft_corr = on_disk["sft"]["mean_correctness"]
    _, heldout = split_tasks(1, 300, 40)
    for name, m in on_disk["methods"].items():
        assert m["correctness_gain"] == pytest.approx(m["mean_correctness"] - sft_corr)
        lo, hi = m["correctness_gain_ci"]
        assert lo <= m["correctness_gain"] <= hi
        # per-task means, weighted by the number of prompts of each type, give the overall mean
        assert set(m["per_task"]) == set(on_disk["sft"]["per_task"]) == set(TASK_TYPES)
        weighted = sum(m["per_task"][t.kind] for t in heldout) / len(heldout)
        assert weighted == pytest.approx(m["mean_correctness"])
        assert 0.0 <= m["lc_win_rate"] <= 1.0
    assert set(on_disk["method_differences"]) == {"dpo-simpo", "dpo-alphapo", "simpo-alphapo"}
    for key, d in on_disk["method_differences"].items():
        a, b = key.split("-")
        assert d["diff"] == pytest.approx(on_disk["methods"][a]["mean_correctness"]
                                          - on_disk["methods"][b]["mean_correctness"])
        assert d["ci"][0] <= d["diff"] <= d["ci"][1]
    assert (out / "displacement.png").stat().st_size > 0
    assert (out / "reward_histogram.png").stat().st_size > 0
    assert on_disk["wall_time_s"] > 0


@pytest.mark.slow
def test_report_table_matches_summary(tiny_run):
    out, summary = tiny_run
    report = (out / "report.md").read_text()
    assert report == render_report(json.loads((out / "summary.json").read_text()))
    for name, m in summary["methods"].items():
        row = next(line for line in report.splitlines() if line.startswith(f"| {name} |"))
        assert f"{m['win_rate']:.3f}" in row and f"{m['lc_win_rate']:.3f}" in row
        assert f"{m['mean_gold_score']:.2f}" in row and f"{m['n_wins']} / {m['n_ties']} / {m['n_losses']}" in row
        assert f"{m['mean_correctness']:.3f}" in row
        lo, hi = m["correctness_gain_ci"]
        sentence = next(line for line in report.splitlines() if line.startswith(f"- **{name}**"))
        assert f"{m['correctness_gain']:+.3f} [{lo:+.3f}, {hi:+.3f}]" in sentence
        assert ("excludes 0" in sentence) == (lo > 0 or hi < 0)
    assert f"Wall time **{summary['wall_time_s']:.0f} s**" in report
    assert "![displacement](displacement.png)" in report and "![reward histogram](reward_histogram.png)" in report


@pytest.mark.slow
def test_stage_cpu_seconds_cover_the_same_stages_and_reach_the_report(tiny_run):
    """CPU seconds per stage (the compute, whatever else runs on a shared machine) for the same four stages
    as the wall times; each stage did work (> 0), one torch thread cannot use more CPU than wall time by
    more than the rounding and helper threads allow (2x), and the report prints them."""
    out, summary = tiny_run
    cpu, wall = summary["stage_cpu_seconds"], summary["stage_seconds"]
    assert list(cpu) == list(wall) == ["sft", "pairs", "evaluation", "training"]
    for stage in cpu:
        assert 0 < cpu[stage] <= 2 * wall[stage] + 0.2, stage
    report = (out / "report.md").read_text()
    assert "; CPU time " + ", ".join(f"{k} {v:.0f} s" for k, v in cpu.items()) + "." in report
    assert summary["config"]["precision"] == summary["config"]["sft"]["precision"] == "float32"


def test_precision_names_map_to_the_trainer_and_a_wrong_one_stops_before_any_work(tmp_path):
    from alphapo.errors import UserError
    from alphapo.quickstart import TRAINER_PRECISION
    from alphapo.toyworld.sft import PRECISIONS

    assert TRAINER_PRECISION == {"float32": "no", "bf16-autocast": "bf16"} and tuple(TRAINER_PRECISION) == PRECISIONS
    with pytest.raises(UserError, match="precision='bf16': use one of float32, bf16-autocast"):
        run_quickstart(tmp_path / "q", QuickstartConfig(precision="bf16", progress=False))
    assert not (tmp_path / "q").exists()
