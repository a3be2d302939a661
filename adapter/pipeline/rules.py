"""Routing rules in YAML: conditions on an instance's header and origin, combined with
all/any/not, each rule naming its destinations (and stages) or dropping the instance.

A condition is one of::

    {all: [cond, ...]}    {any: [cond, ...]}    {not: cond}
    {attribute: Modality, equals: MG}            # or a list: equals: [MG, CT]
    {attribute: PatientID, wildcard: "RES-*"}    # DICOM wildcards * and ? (PS3.4 C.2.2.2.4)
    {attribute: InstitutionName, regex: "^St\\."} # Python regex, searched
    {attribute: StudyDate, range: {min: 20240101, max: 20241231}}   # numbers or DA/TM values
    {attribute: BurnedInAnnotation, present: false}
    {Modality: MG, calling_ae: "MODALITY*"}      # shorthand: every key equals (or wildcard)

``attribute`` is a DICOM keyword (PS3.6), an 8-hex-digit tag, or one of the origin facts
``calling_ae``, ``called_ae``, ``source`` (dimse, pubsub). Only the header is read, never the
pixel data, and only when a condition needs more than the UIDs and the origin.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal, Protocol

from pydantic import BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag, Tag

from adapter.config_types import ConfigModel

__all__ = [
    "ORIGIN_FACTS",
    "Condition",
    "Facts",
    "RouteRule",
    "RoutingConfig",
    "parse_condition",
]

ORIGIN_FACTS = frozenset({"calling_ae", "called_ae", "source"})
#: Attributes answered from the spool's record of the instance, without reading the header.
META_FACTS = {
    "SOPClassUID": "sop_class_uid",
    "SOPInstanceUID": "sop_instance_uid",
    "StudyInstanceUID": "study_instance_uid",
    "SeriesInstanceUID": "series_instance_uid",
    "TransferSyntaxUID": "transfer_syntax_uid",
}
_OPS = ("equals", "wildcard", "regex", "range", "present")
_COMBINERS = ("all", "any", "not")


class Facts(Protocol):
    """What a condition can ask of an instance: an attribute's values (None: absent)."""

    def values(self, attribute: str) -> list[str] | None: ...


# ------------------------------------------------------------------------------ conditions
class Condition(Protocol):
    def matches(self, facts: Facts) -> bool: ...

    def attributes(self) -> set[str]: ...


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Condition, ...]

    def matches(self, facts: Facts) -> bool:
        return all(p.matches(facts) for p in self.parts)

    def attributes(self) -> set[str]:
        return set().union(*(p.attributes() for p in self.parts)) if self.parts else set()


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Condition, ...]

    def matches(self, facts: Facts) -> bool:
        return any(p.matches(facts) for p in self.parts)

    def attributes(self) -> set[str]:
        return set().union(*(p.attributes() for p in self.parts)) if self.parts else set()


@dataclass(frozen=True)
class Not:
    part: Condition

    def matches(self, facts: Facts) -> bool:
        return not self.part.matches(facts)

    def attributes(self) -> set[str]:
        return self.part.attributes()


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class AttributeTest:
    """One test on one attribute; a multi-valued attribute matches if any value does."""

    attribute: str
    op: str
    operand: Any

    def attributes(self) -> set[str]:
        return {self.attribute}

    def matches(self, facts: Facts) -> bool:
        values = facts.values(self.attribute)
        if self.op == "present":
            return (values is not None) is bool(self.operand)
        if not values:
            return False
        return any(self._one(v) for v in values)

    def _one(self, value: str) -> bool:
        if self.op == "equals":
            return value in self.operand
        if self.op == "wildcard":
            return fnmatchcase(value, self.operand)
        if self.op == "regex":
            return self.operand.search(value) is not None
        low, high = self.operand  # range: numbers compare as numbers, else as text
        number = _number(value)
        if number is not None and all(b is None or isinstance(b, float) for b in (low, high)):
            return (low is None or number >= low) and (high is None or number <= high)
        text = value.strip()
        return (low is None or text >= str(low)) and (high is None or text <= str(high))


# ------------------------------------------------------------------------------ parsing
def _fail(where: str, message: str) -> PydanticCustomError:
    prefix = f"{where}: " if where else ""
    return PydanticCustomError("condition", "{detail}", {"detail": prefix + message})


def _check_attribute(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name:
        raise _fail(where, f"expected an attribute keyword, got {name!r}")
    if name in ORIGIN_FACTS:
        return name
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        return name.upper()
    if tag_for_keyword(name) is None:
        raise _fail(
            where,
            f"unknown DICOM keyword {name!r} (PS3.6), nor one of calling_ae, called_ae, source",
        )
    return name


def _escape_fnmatch(pattern: str) -> str:
    """DICOM wildcards are only * and ?: brackets match themselves."""
    return re.sub(r"([\[\]])", r"[\1]", pattern)


def _bound(value: Any, where: str) -> float | str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _fail(where, f"expected a number or a DICOM date/time, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value.strip():
        number = _number(value)
        return number if number is not None else value.strip()
    raise _fail(where, f"expected a number or a DICOM date/time, got {value!r}")


def _test(attribute: str, op: str, operand: Any, where: str) -> AttributeTest:
    at = f"{where}.{op}" if where else op
    if op == "equals":
        items = operand if isinstance(operand, list | tuple) else [operand]
        if not items or not all(isinstance(i, str | int | float) for i in items):
            raise _fail(at, "expected a value or a list of values")
        return AttributeTest(attribute, op, frozenset(str(i) for i in items))
    if op == "wildcard":
        if not isinstance(operand, str):
            raise _fail(at, f"expected a pattern with * and ?, got {operand!r}")
        return AttributeTest(attribute, op, _escape_fnmatch(operand))
    if op == "regex":
        if not isinstance(operand, str):
            raise _fail(at, f"expected a regular expression, got {operand!r}")
        try:
            return AttributeTest(attribute, op, re.compile(operand))
        except re.error as exc:
            raise _fail(at, f"regular expression {operand!r} does not compile: {exc}") from None
    if op == "range":
        if not isinstance(operand, Mapping) or not set(operand) <= {"min", "max"} or not operand:
            raise _fail(at, "expected {min: ..., max: ...} (either may be left out)")
        low, high = _bound(operand.get("min"), at + ".min"), _bound(operand.get("max"), at + ".max")
        if isinstance(low, float) != isinstance(high, float) and None not in (low, high):
            raise _fail(at, "min and max must both be numbers or both be dates/times")
        return AttributeTest(attribute, op, (low, high))
    if not isinstance(operand, bool):
        raise _fail(at, f"expected true or false, got {operand!r}")
    return AttributeTest(attribute, op, operand)


def _shorthand_value(attribute: str, value: Any, where: str) -> AttributeTest:
    if isinstance(value, str) and ("*" in value or "?" in value):
        return _test(attribute, "wildcard", value, where)
    return _test(attribute, "equals", value, where)


def parse_condition(value: Any, where: str = "") -> Condition:
    """Build a condition from its YAML form; errors name the path inside it."""
    if not isinstance(value, Mapping):
        raise _fail(where, f"expected a condition mapping, got {value!r}")
    keys = set(value)
    if not keys:
        return AllOf(())
    combiners = keys & set(_COMBINERS)
    if combiners:
        if len(keys) != 1:
            raise _fail(
                where,
                f"{sorted(combiners)[0]!r} must stand alone in its mapping, "
                f"found also {sorted(keys - combiners) or sorted(combiners)[1:]}",
            )
        (name,) = combiners
        inner = value[name]
        if name == "not":
            return Not(parse_condition(inner, f"{where}.not" if where else "not"))
        if not isinstance(inner, list) or not inner:
            raise _fail(f"{where}.{name}" if where else name, "expected a non-empty list")
        parts = tuple(
            parse_condition(item, f"{where}.{name}[{i}]" if where else f"{name}[{i}]")
            for i, item in enumerate(inner)
        )
        return AllOf(parts) if name == "all" else AnyOf(parts)
    if "attribute" in keys:
        attribute = _check_attribute(value["attribute"], f"{where}.attribute".lstrip("."))
        ops = keys & set(_OPS)
        extra = keys - set(_OPS) - {"attribute"}
        if extra:
            raise _fail(where, f"unknown key {sorted(extra)[0]!r} (tests: {', '.join(_OPS)})")
        if len(ops) != 1:
            raise _fail(where, f"expected exactly one of {', '.join(_OPS)} beside attribute")
        (op,) = ops
        return _test(attribute, op, value[op], where)
    parts = tuple(
        _shorthand_value(
            _check_attribute(k, f"{where}.{k}".lstrip(".")), v, f"{where}.{k}".lstrip(".")
        )
        for k, v in value.items()
    )
    return parts[0] if len(parts) == 1 else AllOf(parts)


def _condition(value: Any) -> Condition:
    if value is None:
        return AllOf(())
    if isinstance(value, AllOf | AnyOf | Not | AttributeTest):
        return value
    return parse_condition(value)


ConditionField = Annotated[Any, BeforeValidator(_condition)]


# ------------------------------------------------------------------------------ models
class RouteRule(ConfigModel):
    """One rule: when ``match`` holds, send to ``destinations`` (through ``stages``) or drop."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    match: ConditionField = None
    destinations: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()
    drop: bool = False

    @model_validator(mode="after")
    def _one_outcome(self) -> RouteRule:
        if self.drop and (self.destinations or self.stages):
            raise PydanticCustomError("route", "a drop rule names no destinations or stages")
        if not self.drop and not self.destinations:
            raise PydanticCustomError("route", "a rule needs destinations (or drop: true)")
        return self

    @property
    def condition(self) -> Condition:
        """The parsed ``match`` (no match: always)."""
        return self.match if self.match is not None else AllOf(())


class RoutingConfig(ConfigModel):
    """Which destinations each instance goes to. ``first``: the first matching rule decides;
    ``all``: every matching rule adds its destinations (a matching drop rule drops)."""

    mode: Literal["first", "all"] = "first"
    rules: tuple[RouteRule, ...] = ()
    #: Where instances go that no rule matches: destination names, or "drop". Unset: the
    #: plugin's own default (the importer's store, the exporter's destination).
    default: tuple[str, ...] | Literal["drop"] | None = None
    #: Stages the default route applies (rules name their own ``stages``).
    default_stages: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> RoutingConfig:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise PydanticCustomError(
                    "route", "two rules are named {name}", {"name": repr(rule.name)}
                )
            seen.add(rule.name)
        return self

    def stage_names(self) -> set[str]:
        """Every stage a rule or the default route names."""
        return {s for rule in self.rules for s in rule.stages} | set(self.default_stages)

    def destination_names(self) -> set[str]:
        """Every destination a rule or the default names."""
        names = {d for rule in self.rules for d in rule.destinations}
        if isinstance(self.default, tuple):
            names.update(self.default)
        return names


# ------------------------------------------------------------------------------ header facts
def dataset_values(ds: Dataset, attribute: str) -> list[str] | None:
    """An attribute's values as text (None: absent; [] present but empty or a sequence)."""
    tag: BaseTag = (
        Tag(int(attribute, 16)) if re.fullmatch(r"[0-9A-F]{8}", attribute) else Tag(attribute)
    )
    elem = ds.get(tag)
    if elem is None:
        return None
    value = elem.value
    if value is None or value == "" or isinstance(value, DicomSequence):
        return []
    if isinstance(value, bytes):
        return [value.decode("latin-1", "replace").strip(" \0")]
    items: Sequence[Any] = value if isinstance(value, MultiValue | list) else [value]
    return [str(v).strip() for v in items]


def is_known_keyword(name: str) -> bool:
    """True for a PS3.6 keyword (used by config checks outside this module)."""
    tag = tag_for_keyword(name)
    return tag is not None and bool(dictionary_VR(tag))
