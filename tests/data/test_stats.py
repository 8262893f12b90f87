"""Percentiles and histograms of `alphapo data stats`, checked by hand."""

from __future__ import annotations

from alphapo.data.stats import compute_stats, histogram, percentile


def test_percentile_nearest_rank():
    """[1, 2, 3, 4]: p50 -> rank ceil(2) = 2 -> 2; p90 -> rank ceil(3.6) = 4 -> 4; p25 -> rank 1 -> 1."""
    assert [percentile([4, 1, 3, 2], q) for q in (25, 50, 90, 100)] == [1, 2, 4, 4]


def test_histogram_counts():
    """0.5..9.5 in 2 bins over [0.5, 9.5]: width 4.5 -> [0.5, 5) holds 0.5-4.5 (5 values), [5, 9.5] holds 5."""
    rows = histogram([i + 0.5 for i in range(10)], bins=2, width=10)
    assert [r.split()[-1] for r in rows] == ["5", "5"] and rows[0].count("#") == 10


def test_histogram_integer_scores_one_row_per_value():
    """[1, 1, 3]: rows for 1, 2, 3 with counts 2, 0, 1; bar of 1 is full width, bar of 3 half."""
    rows = histogram([1, 1, 3], width=10)
    assert [r.split()[0] for r in rows] == ["1", "2", "3"] and [r.split()[-1] for r in rows] == ["2", "0", "1"]
    assert rows[0].count("#") == 10 and rows[2].count("#") == 5


def test_compute_stats_counts():
    U = {"role": "user", "content": "abc"}
    recs = [{"id": "1", "prompt": [U], "chosen": [{"role": "assistant", "content": "xy"}],
             "rejected": [{"role": "assistant", "content": "z"}], "chosen_score": 1.0, "rejected_score": 2.0},
            {"id": "2", "prompt": [U], "responses": [[{"role": "assistant", "content": "q"}]] * 2, "scores": [1, 1]}]
    s = compute_stats(recs)
    assert s.kinds == {"pair": 1, "multi": 1} and s.inverted == 1 and s.ties == 0
    assert s.lengths["chosen"] == [2] and s.lengths["prompt"] == [3, 3] and s.scores["responses"] == [1, 1]


def test_histogram_constant_and_empty():
    assert histogram([7.5, 7.5], width=4) == ["      7.5 | #### 2"] and histogram([]) == ["(no scores)"]
