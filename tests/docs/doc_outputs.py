"""Is what the docs show what the service printed? `mismatches(shown, printed)` says where not.

JSON (when the shown lines parse as one JSON value, elisions allowed) is compared as a structure:
keys, strings, integers, booleans and null exactly; a number with a fraction equal to the live
number rounded to the digits shown (0.9919 matches 0.9919471891331609; 2.67e-05 matches
2.6747e-05). `…` elides: as an array's last element, the rest of the array; as an object's last
member (or `{…}`), the object's other keys; at the end of a string, the rest of the string.

Anything else is compared line by line: the text between numbers exactly (runs of spaces count
as one, so a table's column widths do not matter), numbers by the same rounding rule. `…` in a
line stands for any text (at its end: the rest of the line); a line that is only `…` stands for
any number of lines, none included.
"""

from __future__ import annotations

import json
import re
from typing import Any

ELISION = "…"
_ELIDED = "\x00elided"  # what a bare … becomes inside JSON: no real string holds a NUL
NUMBER = re.compile(r"(-?\d+\.\d+(?:[eE][-+]?\d+)?)")


class Shown(str):
    """A JSON number with a fraction, as written: its digits say how closely it must match."""


def mismatches(shown: list[str], printed: str) -> list[str]:
    """What differs, one line each; empty when the output matches what is shown."""
    expected = _json("\n".join(shown))
    if expected is not _NOT_JSON:
        try:
            actual = json.loads(printed)
        except json.JSONDecodeError:
            return [f"shown JSON, but the output is not JSON: {printed[:200]!r}"]
        return _compare(expected, actual, "$")
    return _lines(shown, printed.rstrip("\n").split("\n") if printed.strip() else [])


def same_number(shown: str, value: float) -> bool:
    """`value` rounded to the digits of `shown` (a decimal, or one in e-notation) is `shown`."""
    mantissa, _, exponent = shown.lower().partition("e")
    digits = len(mantissa.partition(".")[2])
    written = f"{value:.{digits}e}" if exponent else f"{value:.{digits}f}"
    return float(written) == float(shown)


# -- JSON


_NOT_JSON = object()


def _json(text: str) -> Any:
    if not text.strip():
        return _NOT_JSON
    try:
        return json.loads(_with_elisions(text), parse_float=Shown)
    except json.JSONDecodeError:
        return _NOT_JSON


def _with_elisions(text: str) -> str:
    """Each bare … (outside strings) as valid JSON: an element in arrays, a member in objects."""
    out, stack, in_string, escaped = [], [], False, False
    for ch in text:
        if in_string:
            in_string = ch != '"' or escaped
            escaped = ch == "\\" and not escaped
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
        elif ch == ELISION and stack:
            out.append('"\\u0000elided"' + (":null" if stack[-1] == "{" else ""))
            continue
        out.append(ch)
    return "".join(out)


def _compare(shown: Any, live: Any, path: str) -> list[str]:
    if isinstance(shown, Shown):
        number = isinstance(live, (int, float)) and not isinstance(live, bool)
        if number and same_number(shown, live):
            return []
        return [f"{path}: shown {shown}, live {live!r}"]
    if isinstance(shown, dict):
        if not isinstance(live, dict):
            return [f"{path}: shown an object, live {_short(live)}"]
        elided = _ELIDED in shown
        shown = {k: v for k, v in shown.items() if k != _ELIDED}
        problems = [f"{path}: live has no key {k!r}" for k in shown if k not in live]
        if not elided:
            problems += [f"{path}: live has a key not shown: {k!r}" for k in live if k not in shown]
        for key in shown.keys() & live.keys():
            problems += _compare(shown[key], live[key], f"{path}.{key}")
        return problems
    if isinstance(shown, list):
        if not isinstance(live, list):
            return [f"{path}: shown an array, live {_short(live)}"]
        elided = bool(shown) and shown[-1] == _ELIDED
        if elided:
            shown = shown[:-1]
        if len(live) < len(shown) or (not elided and len(live) != len(shown)):
            return [f"{path}: shown {len(shown)} items{'+' * elided}, live has {len(live)}"]
        return [p for i, s in enumerate(shown) for p in _compare(s, live[i], f"{path}[{i}]")]
    if isinstance(shown, str) and shown.endswith(ELISION):
        if isinstance(live, str) and live.startswith(shown[:-1]):
            return []
        return [f"{path}: shown {shown!r}, live {_short(live)}"]
    if type(shown) is not type(live) or shown != live:
        return [f"{path}: shown {shown!r}, live {_short(live)}"]
    return []


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 120 else text[:117] + "..."


# -- text


def _lines(shown: list[str], printed: list[str]) -> list[str]:
    if _match(shown, printed):
        return []
    return ["the output differs from what is shown, line by line"]


def _match(shown: list[str], printed: list[str]) -> bool:
    if not shown:
        return not printed
    if shown[0].strip() == ELISION:
        return any(_match(shown[1:], printed[i:]) for i in range(len(printed) + 1))
    return bool(printed) and _line(shown[0], printed[0]) and _match(shown[1:], printed[1:])


def _line(shown: str, printed: str) -> bool:
    """One line: `…` anywhere in it stands for any text; numbers by the rounding rule."""
    numbers: list[str] = []
    pattern = []
    for i, piece in enumerate(_parts(shown)):
        if i % 2:
            numbers.append(piece)
            pattern.append(NUMBER.pattern)
        else:
            pattern.append(".*?".join(re.escape(text) for text in piece.split(ELISION)))
    found = re.fullmatch("".join(pattern), " ".join(printed.split()))
    return bool(found) and all(
        same_number(n, float(g)) for n, g in zip(numbers, found.groups(), strict=True)
    )


def _parts(line: str) -> list[str]:
    """Text, number, text, number, ..., text; runs of spaces as one, the ends stripped."""
    return NUMBER.split(" ".join(line.split()))
