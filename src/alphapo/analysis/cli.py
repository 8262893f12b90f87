"""``alphapo analyze``: the AlphaPO gradient analysis from the command line.

alphapo analyze gradient [--alpha -2 0 0.25 1 2] [--beta 1 --gamma 0 --logp-w -1 --logp-l -2
                         --len-w 1 --len-l 1 --dpi-w 1 --dpi-l 1]
    prints T1, T2, |dl/dv| and the signed dl/dv per alpha (defaults: the paper's illustration 1),
    plus alpha_0 of Corollary 3.3 where it is defined.
alphapo analyze shapes --out shapes.png       reward shapes r_alpha for several alpha (paper Figure 1)
alphapo analyze surface --out surface.png     log10 |dl/dv| over alpha and |y| (paper Figure 6)
"""

from __future__ import annotations

import argparse

from alphapo.errors import UserError


def format_gradient_table(alphas, **setting) -> str:
    """Text table of ``gradient_terms`` for each alpha (one row per alpha), ``setting`` as its keywords."""
    from alphapo.analysis.gradient import gradient_terms

    lines = [f"{'alpha':>8} {'T1':>13} {'T2':>13} {'|dl/dv|':>13} {'dl/dv':>13}"]
    for alpha in alphas:
        g = gradient_terms(alpha, **setting)
        lines.append(f"{alpha:>8g} {g.t1:>13.6g} {g.t2:>13.6g} {g.abs_grad:>13.6g} {g.grad:>13.6g}")
    return "\n".join(lines)


def format_alpha_zero(**setting) -> str:
    """One line with ``alpha_0`` (Corollary 3.3) for a scalar ``v``, or why it is undefined."""
    from alphapo.analysis.gradient import alpha_zero

    kw = {k: setting[k] for k in ("logp_w", "logp_l", "len_w", "len_l")}
    try:
        a0 = alpha_zero(**kw, sq_norm_w=setting["dpi_w"] ** 2, inner_wl=setting["dpi_w"] * setting["dpi_l"])
    except UserError as err:
        return f"alpha_0 (Corollary 3.3): not defined here: {err}"
    margin = kw["logp_w"] / kw["len_w"] - kw["logp_l"] / kw["len_l"]
    side = "alpha <= alpha_0" if margin > 0 else "alpha >= alpha_0"
    return (
        f"alpha_0 (Corollary 3.3) = {a0:.6g}: margin {margin:+.4g}, so pi_w increases under gradient flow "
        f"for {side}; T2(alpha_0) = 0"
    )


def _run_gradient(args) -> int:
    setting = dict(
        beta=args.beta,
        gamma=args.gamma,
        logp_w=args.logp_w,
        logp_l=args.logp_l,
        len_w=args.len_w,
        len_l=args.len_l,
        dpi_w=args.dpi_w,
        dpi_l=args.dpi_l,
    )
    print("AlphaPO gradient terms (paper eqs. 6-8): " + ", ".join(f"{k}={v:g}" for k, v in setting.items()))
    print(format_gradient_table(args.alpha, **setting))
    print(format_alpha_zero(**setting))
    return 0


def _run_shapes(args) -> int:
    from alphapo.analysis.figures import plot_shapes, shapes_data

    path = plot_shapes(args.out, shapes_data(args.alpha, beta=args.beta))
    print(f"wrote {path}")
    return 0


def _run_surface(args) -> int:
    import numpy as np

    from alphapo.analysis.figures import plot_surface, surface_data

    if args.alpha_min >= args.alpha_max or args.len_min >= args.len_max or args.len_min <= 0:
        raise UserError("need --alpha-min < --alpha-max and 0 < --len-min < --len-max")
    if args.num_alpha < 2 or args.num_len < 2:
        raise UserError("--num-alpha and --num-len must be >= 2")
    data = surface_data(
        np.linspace(args.alpha_min, args.alpha_max, args.num_alpha),
        np.linspace(args.len_min, args.len_max, args.num_len),
        beta=args.beta,
        gamma=args.gamma,
        logp_w=args.logp_w,
        logp_l=args.logp_l,
    )
    path = plot_surface(args.out, data, z_floor=args.z_floor)
    print(f"wrote {path}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="AlphaPO gradient analysis: terms table and the paper's figures",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="analyze_command", metavar="SUBCOMMAND", required=True)

    g = sub.add_parser("gradient", help="print T1, T2 and |dl/dv| for given inputs (default: illustration 1)")
    g.add_argument("--alpha", type=float, nargs="+", default=[-2.0, 0.0, 0.25, 1.0, 2.0])
    g.add_argument("--beta", type=float, default=1.0)
    g.add_argument("--gamma", type=float, default=0.0)
    g.add_argument("--logp-w", type=float, default=-1.0, help="log pi(y_w), summed over tokens")
    g.add_argument("--logp-l", type=float, default=-2.0, help="log pi(y_l), summed over tokens")
    g.add_argument("--len-w", type=float, default=1.0, help="|y_w|")
    g.add_argument("--len-l", type=float, default=1.0, help="|y_l|")
    g.add_argument("--dpi-w", type=float, default=1.0, help="d pi_w / dv (of the probability)")
    g.add_argument("--dpi-l", type=float, default=1.0, help="d pi_l / dv (of the probability)")
    g.set_defaults(func=_run_gradient)

    s = sub.add_parser("shapes", help="PNG of the reward shapes r_alpha (paper Figure 1)")
    s.add_argument("--out", required=True, help="output .png file")
    s.add_argument("--alpha", type=float, nargs="+", default=[-2.0, -1.0, -0.5, 0.0, 0.25, 1.0, 2.0])
    s.add_argument("--beta", type=float, default=1.0)
    s.set_defaults(func=_run_shapes)

    f = sub.add_parser("surface", help="PNG of log10 |dl/dv| over alpha and |y| (paper Figure 6)")
    f.add_argument("--out", required=True, help="output .png file")
    f.add_argument("--beta", type=float, default=5.0)
    f.add_argument("--gamma", type=float, default=0.0)
    f.add_argument("--logp-w", type=float, default=-5.0)
    f.add_argument("--logp-l", type=float, default=-10.0)
    f.add_argument("--alpha-min", type=float, default=-5.0)
    f.add_argument("--alpha-max", type=float, default=5.0)
    f.add_argument("--len-min", type=float, default=1.0)
    f.add_argument("--len-max", type=float, default=20.0)
    f.add_argument("--num-alpha", type=int, default=201, help="grid points along alpha")
    f.add_argument("--num-len", type=int, default=96, help="grid points along |y|")
    f.add_argument("--z-floor", type=float, default=-10.0, help="display clip for log10 |dl/dv|")
    f.set_defaults(func=_run_surface)
