"""docs/conformance.md is the Conformance Statement (PS3.2) the code would write today
(importer/conformance.py): a change to a context list, a default or a bound makes it stale."""

from __future__ import annotations

from pathlib import Path

from adapter.config import DimseServerConfig
from adapter.dimse.implementation import IMPLEMENTATION_CLASS_UID
from importer.conformance import render
from importer.plugin import importer_contexts

DOC = Path(__file__).parents[2] / "docs" / "conformance.md"


def test_the_committed_statement_is_the_generated_one() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/conformance.md is stale: run `python -m importer.conformance > docs/conformance.md`"
    )


def test_the_statement_names_every_sop_class_the_importer_accepts() -> None:
    text = render()
    missing = [str(cx.abstract_syntax) for cx in importer_contexts()]
    missing = [uid for uid in missing if f"`{uid}`" not in text]
    assert missing == []
    assert IMPLEMENTATION_CLASS_UID in text
    limit = DimseServerConfig.model_fields["max_associations"].default
    assert f"| Maximum associations, both paths (else RJ 2/3/2) | {limit} |" in text
