"""Attacker-controlled strings (issuer, kid, subject) go to logs only through :func:`safe`."""

from __future__ import annotations


def safe(value: object, limit: int = 80) -> str:
    """Printable-ASCII, quoted, truncated form of ``value`` for log lines and messages."""
    text = value if isinstance(value, str) else repr(value)
    clipped = text[:limit]
    shown = ascii(clipped)
    return shown + "..." if len(text) > limit else shown
