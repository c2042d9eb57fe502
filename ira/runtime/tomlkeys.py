"""Where a key of a TOML document is written: its line, for error messages.

``tomllib`` (the standard library's parser, which ira uses to read TOML)
returns plain dicts without positions.  Rather than a second parser, this
module scans the text once for what carries a key — table headers
(``[link]``, ``[[device]]``, counted per array), ``key = value`` lines (dotted
and quoted keys too) and the keys of one-line inline tables — and records the
first line of each key path, e.g. ``("device", 1, "options", "mtu")``.  It is
used only after ``tomllib`` accepted the text, so it need not judge syntax;
text inside multi-line strings is skipped.
"""

from __future__ import annotations

import re

KeyPath = tuple[str | int, ...]

_BARE = r"[A-Za-z0-9_-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"|\'[^\']*\''
_KEY = rf"(?:{_BARE}|{_QUOTED})"
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_HEADER = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]\]?")
_ASSIGN = re.compile(rf"^\s*({_DOTTED})\s*=\s*(.*)$")
_INLINE_KEY = re.compile(rf"[{{,]\s*({_DOTTED})\s*=")
_PART = re.compile(rf"{_BARE}|{_QUOTED}")


def _parts(dotted: str) -> tuple[str, ...]:
    out = []
    for part in _PART.findall(dotted):
        if part[0] in "\"'":
            part = part[1:-1]
        out.append(part)
    return tuple(out)


def key_lines(text: str) -> dict[KeyPath, int]:
    """The first line (1-based) of every key path written in ``text``."""
    lines: dict[KeyPath, int] = {}
    arrays: dict[tuple[str, ...], int] = {}
    table: KeyPath = ()
    in_string: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_string is not None:
            if line.count(in_string) % 2:
                in_string = None
            continue
        header = _HEADER.match(line)
        if header is not None:
            path = _parts(header.group(2))
            if header.group(1) == "[[":
                index = arrays.get(path, -1) + 1
                arrays[path] = index
                table = (*_within_arrays(arrays, path[:-1]), path[-1], index)
            else:
                table = _within_arrays(arrays, path)
            _record(lines, table, number)
            continue
        assign = _ASSIGN.match(line)
        if assign is None:
            continue
        key = (*table, *_parts(assign.group(1)))
        _record(lines, key, number)
        value = assign.group(2)
        if value.lstrip().startswith("{"):
            for inner in _INLINE_KEY.finditer(value):
                _record(lines, (*key, *_parts(inner.group(1))), number)
        for quote in ('"""', "'''"):
            if value.count(quote) % 2:
                in_string = quote
    return lines


def _within_arrays(arrays: dict[tuple[str, ...], int], path: tuple[str, ...]) -> KeyPath:
    """``path`` of a header with the current element of each array of tables it passes
    (``[device.options]`` after the second ``[[device]]`` is ``device[1].options``)."""
    out: list[str | int] = []
    for end in range(1, len(path) + 1):
        out.append(path[end - 1])
        index = arrays.get(path[:end])
        if index is not None:
            out.append(index)
    return tuple(out)


def _record(lines: dict[KeyPath, int], path: KeyPath, number: int) -> None:
    for end in range(1, len(path) + 1):
        lines.setdefault(path[:end], number)


def line_of(lines: dict[KeyPath, int], path: KeyPath) -> int:
    """The line of ``path``, else of its nearest written parent, else 1."""
    for end in range(len(path), 0, -1):
        number = lines.get(path[:end])
        if number is not None:
            return number
    return 1


def format_key(path: KeyPath) -> str:
    """``("device", 1, "options", "mtu")`` as ``device[1].options.mtu``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out
