"""The one error type of the learn workflow: its message is written for the user (a notification)."""

from __future__ import annotations


class LearnError(ValueError):
    """A learn action cannot be done as asked; the message says why and what to do instead."""
