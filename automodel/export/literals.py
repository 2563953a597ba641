"""Checked values -> Python source text, laid out as ruff formats it.

Nothing that came from a config reaches the script as text unchecked: numbers must be finite
ints or floats, names must be in an allowlist, and free text is written as an escaped string
literal (`string`) or escaped docstring text (`doc`), so it can never end a string or start a
line of code. Every failure is an ExportError naming the value.
"""

from __future__ import annotations

import math
import numbers
import unicodedata

LINE_LENGTH = 88  # ruff's and black's default: the script is formatted for it


class ExportError(ValueError):
    """The checkpoint cannot be written as code (an unknown layer, a value that is not allowed)."""


def checked_int(name: str, value, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ExportError(f"{name} must be an int, got {value!r}")
    if low is not None and value < low:
        raise ExportError(f"{name} must be >= {low}, got {value!r}")
    return int(value)


def checked_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ExportError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ExportError(f"{name} must be finite, got {value!r}")
    return float(value)


def choice(name: str, value, allowed) -> str:
    """`value`, when it is one of the strings `allowed`."""
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise ExportError(f"{name} {value!r} cannot be exported; allowed: {', '.join(allowed)}")
    return value


def float_literal(value: float) -> str:
    # repr round-trips exactly; ruff writes exponents without "+" (1e20, not 1e+20).
    return repr(float(value)).replace("e+", "e")


def _escape(text: str, quote: str) -> str:
    """Escape everything that could end the literal or hide in it: quotes, backslashes, and
    every non-printable character (newlines, controls, bidirectional overrides)."""
    out = []
    for ch in text:
        if ch == "\\" or ch == quote:
            out.append("\\" + ch)
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out)


def string(value) -> str:
    """A string literal for any text; quotes chosen as ruff would, so the file is stable."""
    if not isinstance(value, str):
        raise ExportError(f"expected a string, got {value!r}")
    quote = "'" if value.count('"') > value.count("'") else '"'
    return quote + _escape(value, quote) + quote


def doc(value) -> str:
    """Free text for the module docstring: one line that cannot end the docstring."""
    return _escape(str(value).rstrip(), '"')


def tuple_of(items: list[str]) -> str:
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def assign(name: str, items: list[str], comment: str = "") -> str:
    """`NAME = (a, b)` on one line when it fits, else one item per line (ruff's layout)."""
    one = f"{name} = {tuple_of(items)}"
    if width(one) <= LINE_LENGTH:
        return one + (f"  # {comment}" if comment else "")
    head = f"{name} = (" + (f"  # {comment}" if comment else "")
    return "\n".join([head, *(f"    {item}," for item in items), ")"])


def tuple_lines(prefix: str, items: list, indent: int, suffix: str) -> list[str]:
    """A nested tuple literal as ruff formats it: on one line when it fits, else one item per
    line (nested tuples split the same way), each with a trailing comma."""
    pad = " " * indent
    one = f"{pad}{prefix}{_flat(items)}{suffix}"
    if width(one) <= LINE_LENGTH:
        return [one]
    lines = [f"{pad}{prefix}("]
    for item in items:
        if isinstance(item, list):
            lines += tuple_lines("", item, indent + 4, ",")
        else:
            lines.append(f"{pad}    {item},")
    return [*lines, f"{pad}){suffix}"]


def _flat(items: list) -> str:
    return tuple_of([_flat(i) if isinstance(i, list) else i for i in items])


def width(line: str) -> int:
    """Columns as ruff counts them: wide (East Asian) characters take two, combining none."""
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in line
    )


def literal(name: str, value, choices: tuple[str, ...] = ()) -> str:
    """A layer argument: bools, ints, finite floats, tuples of them, strings in `choices`."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, numbers.Integral):
        return repr(int(value))
    if isinstance(value, numbers.Real):
        return float_literal(checked_float(name, value))
    if isinstance(value, str):
        return string(choice(name, value, choices))
    if isinstance(value, (tuple, list)):
        return tuple_of([literal(name, v, choices) for v in value])
    raise ExportError(f"{name} {value!r} cannot be written as a literal")
