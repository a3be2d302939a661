"""A JSON reader as lenient as the one the Java adapter used (org.json's JSONTokener), so that
its users' inline JSON flags parse here unchanged.

Beyond strict JSON it accepts what org.json 20240303 accepts:

* trailing commas: ``[1, 2,]``, ``{"a": 1,}``; an empty array slot is a null: ``[1,,2]``;
* ``;`` as well as ``,`` between the members of an object;
* single-quoted strings (``'x'``, with ``\\'`` as an escape too);
* unquoted keys and values: a run of characters up to one of ``, : ] } / \\ " [ { ; = #``
  (or a control character), trimmed. ``true``/``false``/``null`` in any case are those
  values; a number-like run is a number (``2576``, ``-1.5e3``; ``007`` stays text);
  anything else is text, e.g. ``0.0.0.0`` or ``STORE SCP``.

It refuses what org.json refuses: comments, duplicate keys, unterminated strings and unknown
escapes. Errors say where (line and column, from 1) and what. org.json ignores whatever
follows the first value; :func:`loads` refuses it, :func:`loads_leading` returns it.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["LenientJsonError", "loads", "loads_leading"]

_STOP = frozenset(',:]}/\\"[{;=#')
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "'": "'"}
_ESCAPES.update({"\\": "\\", "/": "/"})
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
_DECIMAL = re.compile(r"-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


class LenientJsonError(ValueError):
    """Malformed input: ``line`` and ``column`` (from 1) of the offending character."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"line {line}, column {column}: {message}")
        self.message, self.line, self.column = message, line, column


class _Reader:
    """A cursor over the text; whitespace is any character up to and including space."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, message: str, pos: int | None = None) -> LenientJsonError:
        at = self.pos if pos is None else pos
        line = self.text.count("\n", 0, at) + 1
        column = at - (self.text.rfind("\n", 0, at) + 1) + 1
        return LenientJsonError(message, line, column)

    def skip_blank(self) -> str:
        """Skip whitespace; the next character, or "" at the end."""
        text, n = self.text, len(self.text)
        while self.pos < n and text[self.pos] <= " ":
            self.pos += 1
        return text[self.pos] if self.pos < n else ""

    def value(self) -> Any:
        c = self.skip_blank()
        if c == "{":
            return self.obj()
        if c == "[":
            return self.array()
        return self.simple(c)

    def simple(self, c: str) -> Any:
        """A quoted string, or an unquoted run converted like org.json's stringToValue."""
        if c in ('"', "'"):
            return self.string(c)
        start, text, n = self.pos, self.text, len(self.text)
        end = start
        while end < n and text[end] >= " " and text[end] not in _STOP:
            end += 1
        token = text[start:end].strip()
        if not token:
            found = repr(text[start]) if start < n else "the end"
            raise self.error(f"missing value (found {found})", start)
        self.pos = end
        return _convert(token)

    def string(self, quote: str) -> str:
        start = self.pos
        self.pos += 1
        text, n = self.text, len(self.text)
        out: list[str] = []
        while True:
            if self.pos >= n or text[self.pos] in "\n\r":
                raise self.error(f"unterminated string (opened with {quote})", start)
            c = text[self.pos]
            self.pos += 1
            if c == quote:
                return "".join(out)
            if c != "\\":
                out.append(c)
                continue
            esc = text[self.pos] if self.pos < n else ""
            if esc == "u":
                digits = text[self.pos + 1 : self.pos + 5]
                if not re.fullmatch(r"[0-9A-Fa-f]{4}", digits):
                    raise self.error("illegal escape: \\u needs 4 hex digits", self.pos - 1)
                out.append(chr(int(digits, 16)))
                self.pos += 5
            elif esc in _ESCAPES:
                out.append(_ESCAPES[esc])
                self.pos += 1
            else:
                raise self.error(f"illegal escape \\{esc}", self.pos - 1)

    def array(self) -> list[Any]:
        opened = self.pos
        self.pos += 1
        items: list[Any] = []
        if self.skip_blank() == "]":
            self.pos += 1
            return items
        while True:
            c = self.skip_blank()
            if c == "":
                raise self.error("unclosed array: expected ',' or ']'", opened)
            items.append(None if c == "," else self.value())  # [1,,2]: a null in between
            c = self.skip_blank()
            if c == "]":
                self.pos += 1
                return items
            if c != ",":
                what = "the end" if c == "" else repr(c)
                raise self.error(f"expected ',' or ']', found {what}")
            self.pos += 1
            c = self.skip_blank()
            if c == "]":  # a trailing comma
                self.pos += 1
                return items
            if c == "":
                raise self.error("unclosed array: expected ',' or ']'", opened)

    def obj(self) -> dict[str, Any]:
        opened = self.pos
        self.pos += 1
        members: dict[str, Any] = {}
        while True:
            c = self.skip_blank()
            if c == "":
                raise self.error("unclosed object: expected '}'", opened)
            if c == "}":
                self.pos += 1
                return members
            key_at = self.pos
            key = self.simple(c)
            key = key if isinstance(key, str) else self.text[key_at : self.pos].strip()
            if self.skip_blank() != ":":
                raise self.error(f"expected ':' after the key {key!r}")
            self.pos += 1
            if key in members:
                raise self.error(f"duplicate key {key!r}", key_at)
            members[key] = self.value()
            c = self.skip_blank()
            if c == "}":
                self.pos += 1
                return members
            if c not in (",", ";"):
                what = "the end" if c == "" else repr(c)
                raise self.error(f"expected ',' or '}}', found {what}")
            self.pos += 1
            # a trailing separator before '}' is fine; '}' is taken at the loop's top


def _convert(token: str) -> Any:
    """org.json's stringToValue: keywords, numbers, else the text itself."""
    lowered = token.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    if token[0].isdigit() or token[0] == "-":
        if token == "-0":
            return -0.0
        if _INTEGER.fullmatch(token):
            return int(token)
        if any(ch in token for ch in ".eE") and _DECIMAL.fullmatch(token):
            return float(token)
    return token


def loads_leading(text: str) -> tuple[Any, str]:
    """Parse the first value of ``text``; returns it and whatever follows it (org.json
    ignores that rest: callers may warn about it)."""
    reader = _Reader(text[1:] if text.startswith("\ufeff") else text)
    if reader.skip_blank() == "":
        raise reader.error("no value (empty input)")
    value = reader.value()
    reader.skip_blank()
    return value, reader.text[reader.pos :]


def loads(text: str) -> Any:
    """Parse ``text`` leniently; anything but whitespace after the value is an error."""
    value, rest = loads_leading(text)
    if rest:
        at = len(text) - len(rest)
        raise _Reader(text).error("unexpected text after the value", at)
    return value
