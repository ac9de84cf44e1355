"""Counts in log messages, in words a reader would write ("1 client", "2 clients")."""

from __future__ import annotations


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """``count`` and the noun in the form that agrees with it."""
    return f"{count} {singular if count == 1 else plural or singular + 's'}"
