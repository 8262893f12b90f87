"""Exceptions shared across alphapo.

``AlphapoError`` is what the command line catches and prints as one clear line (no traceback). Raise a
subclass of it for anything the user can fix: bad data, a bad config key, a missing input to a loss.
"""

from __future__ import annotations


class AlphapoError(Exception):
    """Base class of errors the user can act on."""


class UserError(AlphapoError, ValueError):
    """Bad input from the user (arguments, config, files)."""
