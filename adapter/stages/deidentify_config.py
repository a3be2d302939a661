"""Config model of the de-identification stage (PS3.15 Annex E).

Two profiles: ``basic`` (the Basic Application Level Confidentiality Profile with its options,
driven by the standard's Table E.1-1) and ``redact`` (the Java adapter's redactor: a remove
list, a keep list or the CHC_BASIC list, top-level attributes emptied). Both replace UIDs with
the same rule (``uids``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydicom.datadict import tag_for_keyword

from adapter.config_types import ConfigModel

__all__ = ["OPTIONS", "DeidentifyStageConfig", "PrivateKeepRule", "UidConfig", "parse_tag"]

Option = Literal[
    "retain_uids",
    "retain_device_identity",
    "retain_institution_identity",
    "retain_patient_characteristics",
    "retain_longitudinal_full_dates",
    "retain_longitudinal_modified_dates",
    "clean_descriptors",
    "clean_structured_content",
    "clean_graphics",
]
#: The profile options of PS3.15 Table E.1-1 that take effect through its columns.
OPTIONS: tuple[Option, ...] = get_args(Option)
_HEX_GROUP = re.compile(r"^[0-9A-Fa-f]{4}$")
_HEX_BYTE = re.compile(r"^[0-9A-Fa-f]{2}$")
_HEX_TAG = re.compile(r"^[0-9A-Fa-f]{1,8}$")


def parse_tag(text: str) -> int:
    """A tag named as the Java redactor names it: a PS3.6 keyword, else hexadecimal digits."""
    tag = tag_for_keyword(text) if text else None
    if tag is not None:
        return int(tag)
    if _HEX_TAG.match(text):
        return int(text, 16)
    raise ValueError(f"not a DICOM keyword or hex tag: {text!r}")


class UidConfig(ConfigModel):
    """How UIDs are replaced: ``name-based`` is the Java adapter's rule (``2.25.`` + the
    version-3 UUID of the UID's bytes, anyone can recompute it); ``hmac`` keys it with a site
    secret (from ``secret_file`` or the environment variable ``secret_env``)."""

    method: Literal["name-based", "hmac"] = "name-based"
    secret_env: str | None = None
    secret_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("secret" in data or "key" in data):
            raise PydanticCustomError(
                "inline_secret", "secrets never live in the YAML: use secret_env or secret_file"
            )
        return data

    @model_validator(mode="after")
    def _secret(self) -> UidConfig:
        if self.method == "hmac" and not (self.secret_env or self.secret_file):
            raise PydanticCustomError("uids", "method 'hmac' needs secret_env or secret_file")
        if self.method == "name-based" and (self.secret_env or self.secret_file):
            raise PydanticCustomError("uids", "a secret is only used with method 'hmac'")
        return self


class PrivateKeepRule(ConfigModel):
    """Private attributes kept: those of ``creator`` in ``group`` (hex, odd), all of its block
    or only the element bytes listed (``elements``: hex, e.g. ``["10", "1A"]``)."""

    creator: str
    group: str
    elements: tuple[str, ...] = ()

    @field_validator("group")
    @classmethod
    def _odd_group(cls, value: str) -> str:
        if not _HEX_GROUP.match(value) or int(value, 16) % 2 == 0:
            raise PydanticCustomError("group", "expected an odd group in hex, e.g. '0029'")
        return value.upper()

    @field_validator("elements")
    @classmethod
    def _bytes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if not _HEX_BYTE.match(item):
                raise PydanticCustomError("elements", "expected element bytes in hex, e.g. '10'")
        return tuple(v.upper() for v in value)


class DeidentifyStageConfig(ConfigModel):
    """De-identify each instance (PS3.15 E.1, Basic Application Level Confidentiality Profile).

    ``burned_in``: what happens to an instance whose pixels may show identifying text (Burned
    In Annotation YES, or absent where the SOP class often has it): ``quarantine`` (dead
    letter, with the reason) or ``pass``. Pixel data is never redacted.
    """

    kind: Literal["deidentify"] = "deidentify"
    profile: Literal["basic", "redact"] = "basic"
    options: tuple[Option, ...] = ()
    #: basic: attributes (keyword or 8-digit hex tag) kept whatever the table says.
    keep: tuple[str, ...] = ()
    #: basic: private attributes kept (every other private attribute is removed).
    keep_private: tuple[PrivateKeepRule, ...] = ()
    #: retain_longitudinal_modified_dates: days added to every date (negative: earlier);
    #: unset: derived per patient from the Patient ID (keyed with the UID secret if any).
    date_offset_days: int | None = None
    #: redact: exactly one of these (the Java --redact_* flags).
    remove_list: tuple[str, ...] | None = None
    keep_list: tuple[str, ...] | None = None
    filter_profile: Literal["CHC_BASIC"] | None = None
    uids: UidConfig = Field(default_factory=UidConfig)
    burned_in: Literal["quarantine", "pass"] = "quarantine"

    @field_validator("keep", "remove_list", "keep_list")
    @classmethod
    def _tags(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for item in value or ():
            try:
                parse_tag(item)
            except ValueError as exc:
                raise PydanticCustomError("tag", str(exc)) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DeidentifyStageConfig:
        lists = [
            n
            for n in ("remove_list", "keep_list", "filter_profile")
            if getattr(self, n) is not None
        ]
        if self.profile == "redact":
            if len(lists) != 1:
                raise PydanticCustomError(
                    "redact",
                    "profile 'redact' needs exactly one of remove_list, keep_list, filter_profile",
                )
            if self.options or self.keep or self.keep_private:
                raise PydanticCustomError(
                    "redact", "options, keep and keep_private belong to profile 'basic'"
                )
        elif lists:
            raise PydanticCustomError(
                "basic", "remove_list, keep_list and filter_profile belong to profile 'redact'"
            )
        if {"retain_longitudinal_full_dates", "retain_longitudinal_modified_dates"} <= set(
            self.options
        ):
            raise PydanticCustomError(
                "options", "retain longitudinal dates either full or modified, not both"
            )
        return self
