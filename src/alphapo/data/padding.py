"""Padding token sequences into a batch: the one helper every forward pass over variable-length ids uses.

``pad_batch(sequences, pad_id, side="right")`` returns ``(input_ids, attention_mask)``, both ``(n, T)``
long tensors with ``T`` the longest sequence; padding positions hold ``pad_id`` and mask 0. Right padding
is for scoring (position ``t`` predicts token ``t + 1`` and the real tokens start at 0); left padding is
for generation (every row's last real token sits at the end, where new tokens are appended).
"""

from __future__ import annotations

from collections.abc import Sequence

PAD_SIDES = ("right", "left")


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, *, side: str = "right"):
    """``(input_ids, attention_mask)`` of ``sequences`` padded with ``pad_id`` on ``side``."""
    import torch

    if side not in PAD_SIDES:
        raise ValueError(f"side must be one of {PAD_SIDES}, got {side!r}")
    width = max((len(s) for s in sequences), default=0)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        if not len(seq):
            continue
        cols = slice(0, len(seq)) if side == "right" else slice(width - len(seq), width)
        ids[i, cols] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask
