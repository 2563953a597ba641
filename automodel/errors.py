"""How an exception is described in one line: in failed trials, warnings and error messages."""

from __future__ import annotations

import sys


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


class StorageError(RuntimeError):
    """The study's storage cannot be read, or went away mid-search: one line, exit code 1."""


def lost_database(err: BaseException | None) -> BaseException | None:
    """The database error behind `err` (SQLAlchemy's OperationalError or InterfaceError: a
    server that stopped, restarted or cannot be reached), or None."""
    exc = sys.modules.get("sqlalchemy.exc")  # never imported here: only a database raises it
    seen = set()
    while exc is not None and err is not None and id(err) not in seen:
        if isinstance(err, (exc.OperationalError, exc.InterfaceError)):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def interrupted(err: BaseException | None) -> bool:
    """Whether `err` was raised while Ctrl-C (or SIGTERM, which workers turn into it) was being
    handled: cleanup code that the interrupt cut short fails in its own way (Optuna's
    optimize, interrupted while it records a trial, raises UnboundLocalError)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return True
        seen.add(id(err))
        err = err.__context__
    return False
