"""Every reward shape x every link x both normalisations x both reference modes against a naive float64
implementation of the formulas, plus the README composition example."""

from __future__ import annotations

import inspect
import itertools
import math

import pytest
import torch

from alphapo.errors import UserError
from alphapo.losses import LINKS, SHAPES, compose, compose_multi, get_loss

ALPHA = 0.6


def naive_reward(shape, u, beta):
    return {"log": beta * u, "alpha": (beta / ALPHA) * (1 - math.exp(-ALPHA * u)),
            "linear": beta * (math.exp(u) - 1), "inverse_linear": beta * (1 - math.exp(-u))}[shape]


def logsig(x):
    return -math.log1p(math.exp(-x)) if x > -30 else x - math.log1p(math.exp(x))


def sig(x):
    return 1 / (1 + math.exp(-x))


def naive_link(link, z, beta, d_r, eps=0.2, tau=0.5):
    if link == "sigmoid":
        return -logsig(z)
    if link == "smoothed_sigmoid":
        return -(1 - eps) * logsig(z) - eps * logsig(-z)
    if link == "robust":
        return (-(1 - eps) * logsig(z) + eps * logsig(-z)) / (1 - 2 * eps)
    if link == "hinge":
        return max(0.0, 1 - z)
    if link == "squared":
        return (z / beta - 1 / (2 * beta)) ** 2
    if link == "exo":
        return sig(z) * (logsig(z) - math.log(1 - eps)) + sig(-z) * (logsig(-z) - math.log(eps))
    if link == "discopop":
        m = sig(z / tau)
        return -logsig(z) * (1 - m) + math.exp(-z) * m
    if link == "rpo_bwd":
        return sig(d_r) * (logsig(d_r) - logsig(z)) + sig(-d_r) * (logsig(-d_r) - logsig(-z))
    if link == "rpo_fwd":
        return sig(z) * (logsig(z) - logsig(d_r)) + sig(-z) * (logsig(-z) - logsig(-d_r))
    if link == "rpo_sqr":
        return (z - d_r) ** 2
    raise AssertionError(link)


# moderate values, so the naive formulas (no overflow protection) are exact to ~1e-15 here
EX = dict(chosen_logps=[-2.0, -5.0, -1.0], rejected_logps=[-3.0, -4.0, -1.2], chosen_lengths=[4, 10, 2],
          rejected_lengths=[6, 7, 3], ref_chosen_logps=[-2.5, -4.5, -0.5], ref_rejected_logps=[-2.8, -4.6, -1.5],
          chosen_scores=[2.0, -1.0, 0.5], rejected_scores=[1.0, 0.5, 0.5])


@pytest.mark.parametrize("shape,link,normalize,reference",
                         list(itertools.product(sorted(SHAPES), sorted(LINKS), ["sum", "mean"], ["ratio", "none"])))
def test_every_composition_matches_the_naive_formula(shape, link, normalize, reference):
    loss = compose(shape=shape, link=link, normalize=normalize, reference=reference)
    params = inspect.signature(loss).parameters
    inputs = {k: torch.tensor(v, dtype=torch.float64) if "lengths" not in k else torch.tensor(v)
              for k, v in EX.items() if k in params}
    hp = {"beta": 0.8, "gamma": 0.3}
    hp.update({k: v for k, v in {"alpha": ALPHA, "eps": 0.2, "tau": 0.5, "eta": 1.5}.items() if k in params})
    got = loss(**inputs, **hp).losses.tolist()
    for i in range(3):
        def u(side):
            lp = EX[f"{side}_logps"][i] - (EX[f"ref_{side}_logps"][i] if reference == "ratio" else 0.0)
            return lp / EX[f"{side}_lengths"][i] if normalize == "mean" else lp
        z = naive_reward(shape, u("chosen"), 0.8) - naive_reward(shape, u("rejected"), 0.8) - 0.3
        d_r = 1.5 * (EX["chosen_scores"][i] - EX["rejected_scores"][i])
        assert got[i] == pytest.approx(naive_link(link, z, 0.8, d_r), rel=1e-9, abs=1e-12), i


def test_named_losses_are_compositions():
    """The named losses are the compositions they claim (same values on random inputs)."""
    g = torch.Generator().manual_seed(0)
    inp = {k: -torch.rand(8, generator=g, dtype=torch.float64) * 20 for k in
           ("chosen_logps", "rejected_logps", "ref_chosen_logps", "ref_rejected_logps")}
    inp["chosen_lengths"], inp["rejected_lengths"] = torch.randint(1, 9, (8,), generator=g), torch.randint(1, 9, (8,),
                                                                                                          generator=g)
    cases = {"dpo": ("log", "sigmoid", "sum", "ratio"), "simpo": ("log", "sigmoid", "mean", "none"),
             "alphapo": ("alpha", "sigmoid", "mean", "none"), "alphapo_ref": ("alpha", "sigmoid", "mean", "ratio"),
             "simpo_ref": ("log", "sigmoid", "mean", "ratio"), "fdpo_alpha": ("alpha", "sigmoid", "sum", "ratio"),
             "ipo": ("log", "squared", "mean", "ratio"), "hinge": ("log", "hinge", "sum", "ratio")}
    for name, (shape, link, normalize, reference) in cases.items():
        composed = compose(shape=shape, link=link, normalize=normalize, reference=reference)
        kw = {k: v for k, v in inp.items() if k in inspect.signature(composed).parameters}
        hp = {"beta": 1.3, "gamma": 0.2} | ({"alpha": 0.4} if shape == "alpha" else {})
        assert torch.equal(get_loss(name)(**kw, **hp).losses, composed(**kw, **hp).losses), name


def test_compose_errors_name_the_bad_piece():
    with pytest.raises(UserError, match="valid: alpha, inverse_linear, linear, log"):
        compose(shape="cubic")
    with pytest.raises(UserError, match="hinge"):
        compose(link="hinj")
    with pytest.raises(UserError, match="unknown hyper-parameter 'alpha'"):
        compose(shape="log", defaults={"alpha": 1.0})
    with pytest.raises(UserError, match="score-using link"):
        compose_multi(link="sigmoid")


def test_readme_example():
    """The composition example given for the README, with its printed values checked by hand:
    alphapo on s_w = -12/6 = -2, s_l = -15/5 = -3 (alpha 0.25, beta 2.5, gamma 0.25): loss 0.0118113
    (test_values.test_alphapo). IPO on alpha rewards of per-token log-ratios u_w = (-12+13)/6 = 1/6,
    u_l = (-15+14)/5 = -0.2 with beta = 0.1, alpha = 0.5: z = 0.2 (1 - e^{-1/12}) - 0.2 (1 - e^{0.1})
    = 0.2 * 0.0799556 + 0.2 * 0.1051709 = 0.0370253; loss = (z/0.1 - 5)^2 = (0.370253 - 5)^2 = 21.43456."""
    batch = dict(chosen_logps=torch.tensor([-12.0]), rejected_logps=torch.tensor([-15.0]),
                 chosen_lengths=torch.tensor([6]), rejected_lengths=torch.tensor([5]))
    refs = dict(ref_chosen_logps=torch.tensor([-13.0]), ref_rejected_logps=torch.tensor([-14.0]))

    out = get_loss("alphapo")(**batch, alpha=0.25, beta=2.5, gamma=0.25)
    assert out.losses.item() == pytest.approx(0.0118113, rel=1e-5)

    ipo_on_alpha = compose(shape="alpha", link="squared", normalize="mean", reference="ratio")
    out = ipo_on_alpha(**batch, **refs, beta=0.1, alpha=0.5)
    z = 0.2 * (1 - math.exp(-1 / 12)) - 0.2 * (1 - math.exp(0.1))
    assert out.losses.item() == pytest.approx((z / 0.1 - 5) ** 2, rel=1e-6)
    assert out.losses.item() == pytest.approx(21.43456, rel=1e-6)
    assert "alpha" in inspect.signature(ipo_on_alpha).parameters and ipo_on_alpha.requires == {
        "ref_chosen_logps", "ref_rejected_logps"}
