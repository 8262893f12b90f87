"""``alphapo demo``: its printed numbers against the analysis functions and hand formulas, and its PNGs."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from alphapo.analysis import ILLUSTRATION_ALPHAS, ILLUSTRATIONS, gradient_terms
from alphapo.cli import main
from alphapo.demo import DEMO_BATCH


def _softplus(x: float) -> float:
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("demo")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["demo", "--out", str(out_dir)])
    assert rc == 0
    return buf.getvalue(), out_dir


def _section(text: str, number: int) -> str:
    return text.split(f"== {number}.")[1].split("\n== ")[0]


def _loss_table(text: str) -> dict[str, list[float]]:
    rows = {}
    for line in _section(text, 1).splitlines()[3:]:
        parts = line.split()
        if len(parts) >= 4:
            rows[parts[0]] = [float("nan") if p == "-" else float(p) for p in parts[1:4]]
    return rows


def test_demo_loss_table_matches_hand_formulas(demo_output):
    """dpo (beta=0.1): h = [2, -2.5, 3, 0], loss = mean softplus(-0.1 h), margin = 0.1 * mean(h) = 0.0625.
    simpo (beta=2.5, gamma=0.25): s_w = [-2, -3, -2, -3], s_l = [-3, -7/3, -2.5, -5],
    loss = mean softplus(0.25 - 2.5 (s_w - s_l)), margin = 2.5 * mean(s_w - s_l) = 1.770833."""
    text, _ = demo_output
    rows = _loss_table(text)
    from alphapo.losses import LOSSES

    assert set(rows) == set(LOSSES)  # every loss is listed, none dropped
    b = {k: np.array(v, dtype=float) for k, v in DEMO_BATCH.items()}
    h = (b["chosen_logps"] - b["ref_chosen_logps"]) - (b["rejected_logps"] - b["ref_rejected_logps"])
    np.testing.assert_array_equal(h, [2.0, -2.5, 3.0, 0.0])
    assert rows["dpo"][0] == pytest.approx(np.mean([_softplus(-0.1 * x) for x in h]), rel=1e-5)
    assert rows["dpo"][1] == pytest.approx(0.0625, rel=1e-5)
    d = b["chosen_logps"] / b["chosen_lengths"] - b["rejected_logps"] / b["rejected_lengths"]
    assert rows["simpo"][0] == pytest.approx(np.mean([_softplus(0.25 - 2.5 * x) for x in d]), rel=1e-5)
    assert rows["simpo"][1] == pytest.approx(2.5 * d.mean(), rel=1e-5) and rows["simpo"][2] == 0.75


def test_demo_alpha_sweep_matches_gradient_terms_delta_r(demo_output):
    """Each AlphaPO row equals mean softplus(gamma - delta_r) with delta_r from analysis.gradient_terms;
    the alpha=0 row equals the SimPO row, and the table's alphapo row (default alpha=0.25) the 0.25 row."""
    text, _ = demo_output
    sweep = {}
    for line in _section(text, 2).splitlines()[2:]:
        parts = line.split()
        if len(parts) == 2:
            sweep[parts[0]] = float(parts[1])
    b = {k: np.array(v, dtype=float) for k, v in DEMO_BATCH.items()}
    for key in ("-1", "-0.5", "0", "0.25", "1", "2"):
        pair = dict(logp_w=b["chosen_logps"], logp_l=b["rejected_logps"], len_w=b["chosen_lengths"],
                    len_l=b["rejected_lengths"])
        g = gradient_terms(float(key), beta=2.5, gamma=0.25, **pair)
        expected = np.mean([_softplus(0.25 - x) for x in g.delta_r])
        assert sweep[key] == pytest.approx(expected, rel=1e-6), key
    assert sweep["0"] == sweep["simpo"]
    assert _loss_table(text)["alphapo"][0] == pytest.approx(sweep["0.25"], rel=1e-5)


def test_demo_gradient_tables_match_gradient_terms(demo_output):
    text, _ = demo_output
    blocks = _section(text, 3).split("-- ")[1:]
    assert len(blocks) == 2
    for block, setting in zip(blocks, ILLUSTRATIONS.values()):
        rows = [line.split() for line in block.splitlines() if re.match(r"^\s+-?\d", line)]
        assert [float(r[0]) for r in rows] == list(ILLUSTRATION_ALPHAS)
        for r in rows:
            g = gradient_terms(float(r[0]), **setting)
            assert [float(x) for x in r[1:]] == pytest.approx([g.t1, g.t2, g.abs_grad, g.grad], rel=1e-5)
        assert "alpha_0 (Corollary 3.3) = -1:" in block


def test_demo_writes_both_figures(demo_output):
    text, out_dir = demo_output
    for name in ("shapes.png", "surface.png"):
        raw = (out_dir / name).read_bytes()
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 10_000
        assert str(out_dir / name) in text
    assert sorted(p.name for p in out_dir.iterdir()) == ["shapes.png", "surface.png"]
