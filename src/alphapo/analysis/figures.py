"""The AlphaPO paper's two analysis figures, as data (pure functions) plus PNG writers.

- Figure 1, reward shapes: ``r_alpha`` (eq. 3) against the length-normalised likelihood
  ``pibar = pi^(1/|y|)`` for several ``alpha`` (``alpha = 0`` is SimPO's log reward, ``-1`` linear,
  ``+1`` inverse-linear). ``shapes_data`` returns the arrays, ``plot_shapes`` draws them.
- Figure 6 (appendix A.10), gradient surface: ``log10 |dl/dv|`` over ``alpha`` (x) and the common length
  ``|y| = |y_w| = |y_l|`` (y) at ``beta=5, gamma=0, dpi_w=dpi_l=1, log pi_w=-5, log pi_l=-10``.
  ``surface_data`` evaluates ``gradient_terms`` on the grid, ``plot_surface`` draws a 3-D surface and a
  top view with the Corollary 3.3 line ``alpha_0 = -|y|`` (where ``T2 = 0``, a log-scale valley).

PNG files are written atomically (``alphapo.io.write_png_atomic``), with the
Agg renderer and no pyplot global state.

Deviations: the paper does not state the axis ranges of Figure 6 nor the alpha values of Figure 1;
our defaults are ``alpha in [-5, 5]`` (step 0.05), ``|y| in [1, 20]`` (step 0.2, treated as a real number)
and ``alpha in {-2, -1, -0.5, 0, 0.25, 1, 2}``.
``log10 |dl/dv|`` is clipped below at ``z_floor`` (default -10) for display only: at small ``|y|`` and
positive ``alpha`` it falls to about ``-1e12`` (T1 vanishes super-exponentially, Theorem 3.1), and it is
``-inf`` on the ``alpha_0`` line.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from alphapo.analysis.gradient import alpha_zero, gradient_terms, reward
from alphapo.errors import UserError
from alphapo.io import write_png_atomic

SHAPE_ALPHAS = (-2.0, -1.0, -0.5, 0.0, 0.25, 1.0, 2.0)
# Appendix A.10: beta = 5, gamma = 0, |y_w| = |y_l|, dpi_w = dpi_l = 1, log pi_w = -5, log pi_l = -10.
SURFACE_SETTING = dict(beta=5.0, gamma=0.0, logp_w=-5.0, logp_l=-10.0, dpi_w=1.0, dpi_l=1.0)


class ShapesData(NamedTuple):
    """Figure 1 data: ``rewards[i, j] = r_alpha[i](pibar[j])`` with ``beta`` and ``|y| = 1``."""

    pibar: np.ndarray  # (P,) length-normalised likelihood in (0, 1]
    alphas: np.ndarray  # (A,)
    rewards: np.ndarray  # (A, P)
    beta: float


class SurfaceData(NamedTuple):
    """Figure 6: ``log10_abs_grad[i, j] = log10 |dl/dv|`` at ``lengths[i]``, ``alphas[j]``, unclipped."""

    alphas: np.ndarray  # (A,)
    lengths: np.ndarray  # (L,)
    log10_abs_grad: np.ndarray  # (L, A); -inf where T2 = 0
    alpha0: np.ndarray  # (L,) Corollary 3.3 at each length
    setting: dict


def shapes_data(
    alphas=SHAPE_ALPHAS, *, beta: float = 1.0, num: int = 300, pibar_min: float = 0.02
) -> ShapesData:
    """Reward ``r_alpha`` (AlphaPO eq. 3, via ``analysis.reward``) on ``pibar`` in ``[pibar_min, 1]``."""
    if not 0 < pibar_min < 1:
        raise UserError(f"pibar_min must be in (0, 1) (got {pibar_min})")
    pibar = np.linspace(pibar_min, 1.0, num)
    alphas = np.asarray(alphas, dtype=np.float64)
    # With |y| = 1 the per-token likelihood pibar is pi itself: logp = log(pibar).
    rewards = np.asarray(reward(alphas[:, None], beta=beta, logp=np.log(pibar)[None, :], length=1.0))
    return ShapesData(pibar, alphas, rewards, float(beta))


def surface_data(alphas=None, lengths=None, **setting) -> SurfaceData:
    """``log10 |dl/dv|`` (via ``gradient_terms``) over ``alpha`` x ``|y|`` for the appendix A.10 example.

    ``setting`` overrides keys of ``SURFACE_SETTING`` (beta, gamma, logp_w, logp_l, dpi_w, dpi_l).
    """
    unknown = set(setting) - set(SURFACE_SETTING)
    if unknown:
        raise UserError(f"unknown surface setting(s) {sorted(unknown)}; valid: {sorted(SURFACE_SETTING)}")
    params = {**SURFACE_SETTING, **setting}
    alphas = np.linspace(-5.0, 5.0, 201) if alphas is None else np.asarray(alphas, np.float64)
    lengths = np.linspace(1.0, 20.0, 96) if lengths is None else np.asarray(lengths, np.float64)
    terms = gradient_terms(alphas[None, :], len_w=lengths[:, None], len_l=lengths[:, None], **params)
    log10 = np.asarray(terms.log_abs_grad) / np.log(10.0)
    try:  # with |y_w| = |y_l| and dpi_w = dpi_l this is -|y| (T2 = 0 there)
        a0 = np.asarray(
            alpha_zero(
                logp_w=params["logp_w"],
                logp_l=params["logp_l"],
                len_w=lengths,
                len_l=lengths,
                sq_norm_w=params["dpi_w"] ** 2,
                inner_wl=params["dpi_w"] * params["dpi_l"],
            )
        )
    except UserError:  # zero margin or <grad pi_w, grad pi_l> <= 0: Corollary 3.3 does not apply
        a0 = np.full_like(lengths, np.nan)
    return SurfaceData(alphas, lengths, log10, a0, params)


def _save_atomically(fig, out) -> Path:
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out must name a .png file (got {str(out)!r})")
    write_png_atomic(fig, out, dpi=120)
    return out


def _label(alpha: float) -> str:
    names = {0.0: " (log, SimPO)", -1.0: " (linear)", 1.0: " (inverse-linear)"}
    return f"α = {alpha:g}{names.get(float(alpha), '')}"


def plot_shapes(out, data: ShapesData | None = None, *, ylim=(-5.0, 1.0)) -> Path:
    """Write Figure 1 (reward shapes) to the PNG ``out``; returns its path."""
    return _save_atomically(shapes_figure(shapes_data() if data is None else data, ylim=ylim), out)


def shapes_figure(data: ShapesData, *, ylim=(-5.0, 1.0)):
    """Figure 1 as a matplotlib ``Figure`` (one line per alpha, drawn from ``data.rewards`` as is)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.6), layout="constrained")
    ax = fig.add_subplot()
    for alpha, r in zip(data.alphas, data.rewards):
        ax.plot(
            data.pibar, r, lw=2.2 if alpha == 0 else 1.5, ls="-" if alpha >= 0 else "--", label=_label(alpha)
        )
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.set_ylim(*ylim)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel(r"length-normalised likelihood  $\bar\pi(y|x) = \pi(y|x)^{1/|y|}$")
    ax.set_ylabel(
        r"reward  $r_\alpha = \frac{\beta}{\alpha}(1 - \bar\pi^{-\alpha})$" + f"   (β = {data.beta:g})"
    )
    ax.set_title("AlphaPO reward shapes (paper Figure 1)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def plot_surface(out, data: SurfaceData | None = None, *, z_floor: float = -10.0) -> Path:
    """Write Figure 6 (``log10 |dl/dv|`` over alpha and ``|y|``) to the PNG ``out``; returns its path."""
    return _save_atomically(surface_figure(surface_data() if data is None else data, z_floor=z_floor), out)


def surface_figure(data: SurfaceData, *, z_floor: float = -10.0):
    """Figure 6 as a ``Figure``: 3-D surface and top view of ``max(data.log10_abs_grad, z_floor)``."""
    from matplotlib.figure import Figure

    z = np.maximum(data.log10_abs_grad, z_floor)  # display clip only, see module docstring
    A, L = np.meshgrid(data.alphas, data.lengths)
    s = data.setting
    fig = Figure(figsize=(12.0, 5.0), layout="constrained")
    fig.suptitle(
        f"|∂ℓ/∂v| over α and |y| = |y_w| = |y_l|  (β={s['beta']:g}, γ={s['gamma']:g}, "
        f"log π_w={s['logp_w']:g}, "
        f"log π_l={s['logp_l']:g}, ∂π/∂v=1; paper Figure 6)"
    )
    ax3 = fig.add_subplot(1, 2, 1, projection="3d")
    ax3.plot_surface(
        A,
        L,
        z,
        cmap="viridis",
        linewidth=0,
        antialiased=True,
        rcount=len(data.lengths),
        ccount=len(data.alphas),
    )
    ax3.set_xlabel("α")
    ax3.set_ylabel("|y|")
    ax3.set_zlabel(r"$\log_{10}|\partial\ell/\partial v|$")
    ax3.view_init(elev=30, azim=-130)  # alpha left to right, the hump and both falls in view
    ax2 = fig.add_subplot(1, 2, 2)
    mesh = ax2.pcolormesh(A, L, z, cmap="viridis", shading="auto")
    fig.colorbar(mesh, ax=ax2, label=rf"$\log_{{10}}|\partial\ell/\partial v|$ (clipped at {z_floor:g})")
    ax2.plot(data.alpha0, data.lengths, "w--", lw=1.2, label=r"$\alpha_0 = -|y|$ (Cor. 3.3): $T_2 = 0$")
    ax2.set_xlim(data.alphas[0], data.alphas[-1])
    ax2.set_xlabel("α")
    ax2.set_ylabel("|y|")
    ax2.set_title("top view")
    ax2.legend(loc="upper right", fontsize=8)
    return fig
