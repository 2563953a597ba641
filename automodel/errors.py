"""How an exception is described in one line: in failed trials, warnings and error messages."""

from __future__ import annotations


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name when it has none."""
    for line in str(err).splitlines():
        if line.strip():
            return line.strip()
    return type(err).__name__


def reason(err: BaseException, limit: int = 500) -> str:
    """`Type: first line`, cut to `limit` characters: what a failed trial records."""
    text = first_line(err)
    name = type(err).__name__
    return (f"{name}: {text}" if text != name else name)[:limit]
