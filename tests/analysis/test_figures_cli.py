"""Figures 1 and 6: their data against the analysis functions, the drawn arrays, the PNGs, and the CLI."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from alphapo.analysis import ILLUSTRATION_ALPHAS, ILLUSTRATIONS, gradient_terms, reward
from alphapo.analysis.figures import (
    SURFACE_SETTING,
    shapes_data,
    shapes_figure,
    surface_data,
    surface_figure,
)
from alphapo.cli import main


def _png_size(path) -> tuple[int, int]:
    """Width, height from a PNG's IHDR chunk, after checking the 8-byte signature."""
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
    return struct.unpack(">II", raw[16:24])


def test_shapes_data_is_eq3_and_its_differences_are_delta_r():
    """Rows are r_alpha(pibar) with |y| = 1: alpha=0 is beta*log(pibar), alpha=-1 is beta*(pibar - 1).

    Any two points of a row differ by gradient_terms' delta_r (beta=1.5, gamma irrelevant).
    """
    d = shapes_data((-1.0, 0.0, 0.5), beta=1.5, num=50)
    np.testing.assert_allclose(d.rewards[0], 1.5 * (d.pibar - 1.0), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(d.rewards[1], 1.5 * np.log(d.pibar), rtol=1e-14)
    np.testing.assert_allclose(d.rewards[2], 1.5 / 0.5 * (1 - d.pibar**-0.5), rtol=1e-12, atol=1e-15)
    assert np.all(d.rewards[:, -1] == 0.0)  # every shape passes through (pibar=1, r=0)
    for k, alpha in enumerate(d.alphas):
        g = gradient_terms(alpha, beta=1.5, gamma=0.0, logp_w=np.log(d.pibar[-2]), logp_l=np.log(d.pibar[3]),
                           len_w=1.0, len_l=1.0)
        assert g.delta_r == pytest.approx(d.rewards[k, -2] - d.rewards[k, 3], rel=1e-12)


def test_surface_data_is_gradient_terms_on_the_appendix_a10_grid():
    """beta=5, gamma=0, log pi_w=-5, log pi_l=-10, dpi=1, |y_w|=|y_l|=|y| (appendix A.10).

    Spot value by hand at alpha=0, |y|=5: c_w=1, c_l=2, delta_r=5, T1 = 5/(1+e^5) = 0.033464,
    T2 = |e^5 - e^10|/5 = 4375.58, |dl/dv| = 146.43.
    """
    assert SURFACE_SETTING == dict(beta=5.0, gamma=0.0, logp_w=-5.0, logp_l=-10.0, dpi_w=1.0, dpi_l=1.0)
    d = surface_data(np.array([-2.0, 0.0, 0.5]), np.array([1.0, 5.0, 20.0]))
    for i, n in enumerate(d.lengths):
        for j, a in enumerate(d.alphas):
            g = gradient_terms(a, beta=5.0, gamma=0.0, logp_w=-5.0, logp_l=-10.0, len_w=n, len_l=n)
            assert d.log10_abs_grad[i, j] == pytest.approx(g.log_abs_grad / math.log(10), rel=1e-12)
    t1, t2 = 5 / (1 + math.exp(5)), (math.exp(10) - math.exp(5)) / 5
    assert 10 ** d.log10_abs_grad[1, 1] == pytest.approx(t1 * t2, rel=1e-12)
    np.testing.assert_allclose(d.alpha0, -d.lengths, rtol=1e-14)  # Corollary 3.3 with equal lengths


def test_drawn_arrays_are_the_data():
    d1 = shapes_data((-2.0, 0.0, 1.0), num=40)
    fig = shapes_figure(d1)
    lines = fig.axes[0].get_lines()[:3]
    for line, row in zip(lines, d1.rewards):
        np.testing.assert_array_equal(line.get_xdata(), d1.pibar)
        np.testing.assert_array_equal(line.get_ydata(), row)
    d6 = surface_data(np.linspace(-3, 3, 31), np.linspace(1, 10, 10))
    fig = surface_figure(d6, z_floor=-10.0)
    drawn = fig.axes[1].collections[0].get_array()  # the top-view mesh
    np.testing.assert_array_equal(np.asarray(drawn).ravel(), np.maximum(d6.log10_abs_grad, -10.0).ravel())


def test_cli_writes_valid_pngs_atomically(tmp_path, capsys):
    shapes, surface = tmp_path / "fig" / "shapes.png", tmp_path / "fig" / "surface.png"
    assert main(["analyze", "shapes", "--out", str(shapes)]) == 0
    grid = "--alpha-min -3 --alpha-max 3 --num-alpha 61 --num-len 20".split()
    argv = ["analyze", "surface", "--out", str(surface), *grid]
    assert main(argv) == 0
    for path in (shapes, surface):
        w, h = _png_size(path)
        assert w > 300 and h > 300 and path.stat().st_size > 10_000
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == ["shapes.png", "surface.png"]  # no temp
    assert f"wrote {shapes}" in capsys.readouterr().out


def test_cli_refuses_a_non_png_path_and_leaves_nothing(tmp_path, capsys):
    assert main(["analyze", "shapes", "--out", str(tmp_path / "shapes.jpg")]) == 2
    assert "must name a .png" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _parse_table(text: str) -> dict[float, list[float]]:
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] != "alpha":
            rows[float(parts[0])] = [float(x) for x in parts[1:]]
    return rows


@pytest.mark.parametrize("name", list(ILLUSTRATIONS))
def test_cli_gradient_table_matches_gradient_terms(name, capsys):
    setting = ILLUSTRATIONS[name]
    flags = ["--logp-w", str(setting["logp_w"]), "--logp-l", str(setting["logp_l"])]
    assert main(["analyze", "gradient", *flags]) == 0
    out = capsys.readouterr().out
    rows = _parse_table(out)
    assert sorted(rows) == sorted(ILLUSTRATION_ALPHAS)  # default alphas are the paper's
    for alpha, (t1, t2, abs_grad, grad) in rows.items():
        g = gradient_terms(alpha, **setting)
        assert [t1, t2, abs_grad, grad] == pytest.approx([g.t1, g.t2, g.abs_grad, g.grad], rel=1e-5)
    assert "alpha_0 (Corollary 3.3) = -1:" in out


def test_cli_gradient_custom_inputs(capsys):
    """--alpha list and lengths: alpha=0, logp_w=-6 (|y_w|=3), logp_l=-4 (|y_l|=1), beta=2, gamma=1:
    delta_r = 2(-2 + 4) = 4, T1 = 2/(1+e^3) = 0.094852; T2 = |1/(pi_w 3) - 1/pi_l| = e^6/3 - e^4 = 79.878."""
    argv = "analyze gradient --alpha 0 0.5 --beta 2 --gamma 1 --logp-w -6 --len-w 3 --logp-l -4".split()
    assert main(argv) == 0
    rows = _parse_table(capsys.readouterr().out)
    assert rows[0.0][0] == pytest.approx(2 / (1 + math.e**3), rel=1e-5)
    assert rows[0.0][1] == pytest.approx(math.e**6 / 3 - math.e**4, rel=1e-5)
    assert set(rows) == {0.0, 0.5}


def test_cli_gradient_reports_bad_input_as_one_line(capsys):
    assert main(["analyze", "gradient", "--len-w", "0"]) == 2
    assert "len_w" in capsys.readouterr().err


def test_reward_is_exported_consistently():
    assert reward(0.0, beta=1.0, logp=-2.0, length=1.0) == -2.0
