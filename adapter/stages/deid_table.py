"""PS3.15 Table E.1-1 as data (``annex_e.tsv``, from the standard) resolved into one action per
attribute for a chosen set of options; and the CHC_BASIC tag list of the Java redactor.

Actions (PS3.15 Table E.1-1a): D dummy value, Z zero-length (or dummy), X remove, K keep,
C clean, U replace the UID. The table's conditional codes depend on the IOD's module types,
which a generic stage does not know; each is resolved to the choice that keeps every IOD
conformant: X/Z -> Z, X/D -> D, Z/D -> D, X/Z/D -> D, X/Z/U* -> U (a sequence kept, the UIDs
inside replaced). An enabled option's K wins over its C, and either over the basic profile.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources

from adapter.stages.deidentify_config import OPTIONS

__all__ = ["ActionTable", "chc_basic_tags", "load_rows", "resolve"]

_CONDITIONAL = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U"}
_ACTIONS = frozenset("DZXKCU")


@dataclass(frozen=True)
class Row:
    """One row of Table E.1-1: the tag (or pattern), the basic action, each option's action."""

    tag: str
    name: str
    basic: str
    options: dict[str, str]


@cache
def load_rows() -> tuple[Row, ...]:
    text = resources.files("adapter.stages").joinpath("annex_e.tsv").read_text(encoding="utf-8")
    lines = [line for line in text.split("\n") if line and not line.startswith("#")]
    header = lines[0].split("\t")
    rows = []
    for line in lines[1:]:
        cells = dict(zip(header, line.split("\t"), strict=False))
        options = {k: cells[k] for k in header[3:] if cells.get(k)}
        rows.append(Row(cells["tag"], cells["name"], cells["basic"], options))
    return tuple(rows)


def resolve(row: Row, options: Iterable[str]) -> str:
    """The one action of ``row`` with ``options`` enabled."""
    chosen = {row.options[o] for o in options if o in row.options}
    if "K" in chosen:
        return "K"
    if "C" in chosen:
        return "C"
    action = _CONDITIONAL.get(row.basic, row.basic)
    if action not in _ACTIONS:
        raise ValueError(f"Table E.1-1: unknown action {row.basic!r} for {row.name}")
    return action


def _pattern(tag: str) -> tuple[int, int]:
    """(mask, value) of a tag such as ``60XX,3000`` (X: any hex digit)."""
    digits = tag.replace(",", "")
    mask = int("".join("0" if c == "X" else "F" for c in digits), 16)
    value = int("".join("0" if c == "X" else c for c in digits), 16)
    return mask, value


@dataclass(frozen=True)
class ActionTable:
    """Tag -> action for one option set; repeating groups (curves, overlays) by pattern."""

    exact: dict[int, str]
    patterns: tuple[tuple[int, int, str], ...]

    @classmethod
    def for_options(cls, options: Iterable[str], keep: Iterable[int] = ()) -> ActionTable:
        options = tuple(options)
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}")
        exact: dict[int, str] = {}
        patterns: list[tuple[int, int, str]] = []
        for row in load_rows():
            if row.tag == "private":
                continue  # private attributes: removed unless a keep_private rule keeps them
            action = resolve(row, options)
            if "X" in row.tag:
                mask, value = _pattern(row.tag)
                patterns.append((mask, value, action))
            else:
                exact[int(row.tag.replace(",", ""), 16)] = action
        for tag in keep:
            exact[tag] = "K"
        return cls(exact, tuple(patterns))

    def action(self, tag: int) -> str | None:
        """The action for ``tag``; None: not in the table (kept; a sequence is walked)."""
        found = self.exact.get(tag)
        if found is not None:
            return found
        group = tag >> 16
        if 0x5000 <= group <= 0x60FF:
            for mask, value, action in self.patterns:
                if tag & mask == value:
                    return action
        return None


@cache
def chc_basic_tags() -> tuple[str, ...]:
    """The CHC_BASIC remove list (keywords), as the Java redactor's resource holds it."""
    text = resources.files("adapter.stages").joinpath("chc_basic.txt").read_text(encoding="utf-8")
    return tuple(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )
