"""Hand-written fake losses (DPO, SimPO, RPO-multi, from the papers' formulas) to test the loop apart from the package.

Used through the ``fake_losses`` fixture (conftest.py), which swaps them into ``alphapo.losses``.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
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

def _fake_rpo_multi(*, logps, lengths, scores, ref_logps, beta=0.1, eta=1.0):
    """KL(softmax(eta R) || softmax(beta (logp - logp_ref))) over k responses (spec: rpo_multi)."""
    rewards = beta * (logps - ref_logps)
    target = torch.softmax(eta * scores, dim=-1)
    losses = (target * (torch.log(target) - torch.log_softmax(rewards, dim=-1))).sum(-1)
    best, worst = scores.argmax(-1, keepdim=True), scores.argmin(-1, keepdim=True)
    r = rewards.detach()
    return SimpleNamespace(losses=losses, rewards=r, chosen_rewards=r.gather(-1, best)[:, 0],
                           rejected_rewards=r.gather(-1, worst)[:, 0])


_fake_rpo_multi.requires = frozenset({"ref_logps", "scores"})
_fake_rpo_multi.multi_response = True

REGISTRY = {"dpo": _fake_dpo, "simpo": _fake_simpo, "rpo_multi": _fake_rpo_multi}

