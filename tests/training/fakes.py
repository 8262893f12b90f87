"""Hand-written fake losses (DPO and SimPO from spec/losses.md) to test the loop apart from alphapo.losses.

``install()`` swaps them into ``alphapo.losses`` (used by subprocess runners, see test_resume.py).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch.nn.functional as F


def _fake_dpo(*, chosen_logps, rejected_logps, chosen_lengths, rejected_lengths, ref_chosen_logps,
              ref_rejected_logps, beta=0.1):
    cr = beta * (chosen_logps - ref_chosen_logps)
    rr = beta * (rejected_logps - ref_rejected_logps)
    return SimpleNamespace(losses=-F.logsigmoid(cr - rr), chosen_rewards=cr.detach(), rejected_rewards=rr.detach())


def _fake_simpo(*, chosen_logps, rejected_logps, chosen_lengths, rejected_lengths, beta=2.0, gamma=0.5):
    cr = beta * chosen_logps / chosen_lengths
    rr = beta * rejected_logps / rejected_lengths
    return SimpleNamespace(losses=-F.logsigmoid(cr - rr - gamma), chosen_rewards=cr.detach(),
                           rejected_rewards=rr.detach())


_fake_dpo.requires = frozenset({"ref_chosen_logps", "ref_rejected_logps"})
_fake_simpo.requires = frozenset()
_fake_dpo.multi_response = _fake_simpo.multi_response = False

REGISTRY = {"dpo": _fake_dpo, "simpo": _fake_simpo}


def install() -> None:
    import alphapo.losses as losses_mod

    losses_mod.LOSSES = dict(REGISTRY)
    losses_mod.get_loss = REGISTRY.__getitem__
