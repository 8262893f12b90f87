"""``HFRewardJudge``: a local Hugging Face sequence-classification reward model as a ``Judge``.

The (prompt, response) conversation is rendered with the reward model's own chat template
(``render_conversation``) and the logit of ``label_index`` is the score. Progress bars follow
``progress`` and transformers' global switch (``transformers.utils.logging.disable_progress_bar``,
which ``--no-progress`` turns off).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alphapo.errors import UserError
from alphapo.generation.judges import Conversation, check_lengths, render_conversation

__all__ = ["HFRewardJudge"]


class HFRewardJudge:
    """A Hugging Face sequence-classification reward model loaded from a local folder.

    The score of (prompt, response) is ``logits[label_index]`` of the model on the conversation rendered
    with the reward model's chat template (or plain text if it has none). The model pools the last
    non-padding token itself (``*ForSequenceClassification``); we pad on the right and process in
    length-sorted batches of ``batch_size`` so padding is small.

    Deviations: with ``max_length`` set, over-long inputs are truncated on the *left* (the prompt start is
    lost, the response kept) and counted in ``n_truncated``; reward models usually score truncated inputs
    without telling you.
    """

    def __init__(self, path: str | Path, *, batch_size: int = 8, max_length: int | None = None,
                 device: str | None = None, dtype: str | None = None, label_index: int = 0,
                 progress: bool = True):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        if not path.exists():
            raise UserError(f"reward model folder {str(path)!r} does not exist (give a local path: hf:PATH)")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        kwargs: dict[str, Any] = {}
        if dtype is not None:
            kwargs["dtype"] = getattr(torch, dtype)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs).eval()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            # batched pooling needs it: the model looks for the last token that is not padding
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "left"
        num_labels = self.model.config.num_labels
        if not 0 <= label_index < num_labels:
            raise UserError(f"label_index={label_index} but the reward model at {str(path)!r} has "
                            f"{num_labels} label(s)")
        self.label_index = label_index
        self.batch_size = batch_size
        self.max_length = max_length
        self.n_truncated = 0
        self.progress = progress

    def score(self, prompts: Sequence[Conversation], responses: Sequence[str]) -> list[float]:
        import torch
        from tqdm.auto import tqdm
        from transformers.utils import logging as hf_logging

        check_lengths("HFRewardJudge.score", prompts, responses)
        rendered = [render_conversation(self.tokenizer, p, r) for p, r in zip(prompts, responses)]
        encoded = [self.tokenizer(text, add_special_tokens=not templated)["input_ids"]
                   for text, templated in rendered]
        if self.max_length is not None:
            self.n_truncated += sum(len(ids) > self.max_length for ids in encoded)
            encoded = [ids[-self.max_length:] for ids in encoded]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        scores = [0.0] * len(encoded)
        pad = self.tokenizer.pad_token_id
        starts = range(0, len(order), self.batch_size)
        show = self.progress and hf_logging.is_progress_bar_enabled() and len(starts) > 1
        for start in tqdm(starts, desc="judge", unit="batch", leave=False, disable=not show):
            idx = order[start:start + self.batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, :len(encoded[i])] = torch.tensor(encoded[i])
                mask[row, :len(encoded[i])] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            for row, i in enumerate(idx):
                scores[i] = float(logits[row, self.label_index].float())
        return scores
