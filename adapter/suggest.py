"""'Did you mean ...?' for mistyped flags, plugin names and config keys.

Config keys are looked up by walking the pydantic models along the error's key path, so a
suggestion always names a key that is valid at that place.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel

__all__ = ["close_match", "did_you_mean", "keys_at", "suggest_key"]


def close_match(word: str, choices: Iterable[str]) -> str | None:
    """The choice closest to ``word`` (case-insensitive), or None if nothing is close."""
    options = list(dict.fromkeys(choices))
    lowered = {c.lower(): c for c in options}
    found = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[found[0]] if found else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a choice is close to ``word``, else an empty string."""
    match = close_match(word, choices)
    return f" (did you mean {match!r}?)" if match and match != word else ""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, unions, tuples, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is None:
        return []
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    found: list[type[BaseModel]] = []
    if origin in (typing.Union, types.UnionType, tuple, list, set, frozenset, dict):
        for arg in typing.get_args(annotation):
            if arg is not Ellipsis:
                found += _models_in(arg)
    return found


def keys_at(model: type[BaseModel], path: Sequence[int | str]) -> list[str]:
    """The keys valid at ``path`` below ``model`` (list indexes and union tags are skipped)."""
    current: list[type[BaseModel]] = [model]
    for part in path:
        if isinstance(part, int):
            continue
        nested = [
            m
            for candidate in current
            if part in candidate.model_fields
            for m in _models_in(candidate.model_fields[part].annotation)
        ]
        if nested:
            current = nested
        # else: a discriminated-union tag (e.g. 'dimse'): stay on the union's members
    return sorted({name for m in current for name in m.model_fields})


def suggest_key(
    model: type[BaseModel] | None, loc: Sequence[int | str], extra: Iterable[str] = ()
) -> str:
    """The did-you-mean text for an unknown key at ``loc`` (its last part is the bad key)."""
    if model is None or not loc or not isinstance(loc[-1], str):
        return ""
    names = keys_at(model, loc[:-1]) + (list(extra) if len(loc) == 1 else [])
    return did_you_mean(loc[-1], names)
