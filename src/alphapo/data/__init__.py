"""Preference data: loading, validation, tokenisation and reward-augmented relabeling.

- :func:`load_preferences` / :func:`iter_preferences`: any supported source -> canonical records
  (schemas and record layout in :mod:`alphapo.data.schema`, file formats in :mod:`alphapo.data.readers`).
- :func:`validate`: a streaming pass that reports every bad row (file, row/line, field, what is wrong).
- :func:`tokenize_preferences`: records -> prompt / completion token ids for the trainer
  (``chat_template="auto"|"always"|"never"``, boundary and truncation rules in
  :mod:`alphapo.data.tokenize`, which is also the one home of chat rendering: ``prompt_text``,
  ``render_conversation``).
- :func:`pad_batch` (:mod:`alphapo.data.padding`): the padding helper for every batched forward.
- :mod:`alphapo.data.relabel`: reward-augmented relabeling (Zhang et al., "Reward-Augmented Data
  Enhances Direct Preference Alignment of LLMs"), and :func:`goal_prompt` for inference.

Command line: ``alphapo data validate|stats|convert|tokenize|relabel|unrelabel`` (``alphapo data -h``).
"""

from alphapo.data.loading import PreferenceRecords, iter_preferences, load_preferences, validate
from alphapo.data.padding import pad_batch
from alphapo.data.relabel import goal_prompt  # the package attribute `relabel` stays the module
from alphapo.data.tokenize import TokenizeReport, tokenize_preferences
from alphapo.data.validation import REASONS, DataValidationError, Issue, ValidationReport

__all__ = [
    "REASONS",
    "DataValidationError",
    "Issue",
    "PreferenceRecords",
    "TokenizeReport",
    "ValidationReport",
    "goal_prompt",
    "iter_preferences",
    "load_preferences",
    "pad_batch",
    "tokenize_preferences",
    "validate",
]
