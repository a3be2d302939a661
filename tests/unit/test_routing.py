"""Routing rules: their YAML form, what they match, first/all, drop, default, echoes; the
waiter that answers after delivery; ``dicom-adapter route`` on real files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydicom
import pytest
import yaml
from pydantic import ValidationError

from adapter import cli
from adapter.config import load_config_data
from adapter.errors import ConfigError
from adapter.pipeline.instance import Instance, Origin
from adapter.pipeline.router import Router
from adapter.pipeline.rules import RoutingConfig
from adapter.pipeline.waiter import DeliveryWaiter, Verdict
from adapter.provenance import ProvenanceLog
from adapter.spool_files import read_spool_meta
from adapter.status import Status
from tests.peers.datasets import make_ct_series


def instance_of(path: Path, calling_ae: str | None = "MODALITY1", **attrs: Any) -> Instance:
    if attrs:
        ds = pydicom.dcmread(path)
        for keyword, value in attrs.items():
            setattr(ds, keyword, value)
        ds.save_as(path)
    return Instance(path, read_spool_meta(path, calling_ae), Origin("dimse", calling_ae, "IMP"))


@pytest.fixture
def ct(tmp_path: Path) -> Path:
    [path] = make_ct_series(tmp_path, 1, rows=8, cols=8)
    return path


def router(routing: dict[str, Any], default: tuple[str, ...] = ("store",), **kw: Any) -> Router:
    return Router(RoutingConfig.model_validate(routing), default, **kw)


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        ({"Modality": "CT"}, True),
        ({"Modality": "MG"}, False),
        ({"Modality": ["MG", "CT"]}, True),
        ({"calling_ae": "MOD*"}, True),
        ({"calling_ae": "MODALITY?"}, True),
        ({"called_ae": "IMP"}, True),
        ({"source": "pubsub"}, False),
        ({"attribute": "PatientName", "wildcard": "TEST^*"}, True),
        ({"attribute": "PatientID", "regex": "^TEST-0+1$"}, True),
        ({"attribute": "StudyDate", "range": {"min": 19000101, "max": 29991231}}, True),
        ({"attribute": "StudyDate", "range": {"max": 19000101}}, False),
        ({"attribute": "Rows", "range": {"min": 8, "max": 8}}, True),
        ({"attribute": "BurnedInAnnotation", "present": False}, True),
        ({"attribute": "Modality", "present": True}, True),
        ({"all": [{"Modality": "CT"}, {"calling_ae": "MODALITY1"}]}, True),
        ({"all": [{"Modality": "CT"}, {"calling_ae": "OTHER"}]}, False),
        ({"any": [{"Modality": "MG"}, {"calling_ae": "MODALITY1"}]}, True),
        ({"not": {"Modality": "CT"}}, False),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"}, True),
        ({"00080060": "CT"}, True),
        ({}, True),
    ],
)
def test_a_condition_matches_what_the_header_and_origin_say(
    ct: Path, match: dict[str, Any], expected: bool
) -> None:
    r = router({"rules": [{"name": "r", "match": match, "destinations": ["other"]}]})
    decision = r.route(instance_of(ct))
    assert decision.destinations == (("other",) if expected else ("store",))
    assert decision.rule == ("r" if expected else "default")


def test_dicom_wildcards_are_only_star_and_question_mark(ct: Path) -> None:
    r = router({"rules": [{"name": "r", "match": {"PatientID": "[T]*"}, "destinations": ["x"]}]})
    assert r.route(instance_of(ct)).destinations == ("store",)  # [T] is not a character class
    assert r.route(instance_of(ct, PatientID="[T]EST")).destinations == ("x",)


def test_first_match_wins_or_every_match_adds_its_destinations(ct: Path) -> None:
    rules = [
        {"name": "a", "match": {"Modality": "CT"}, "destinations": ["one"]},
        {"name": "b", "match": {"calling_ae": "MODALITY1"}, "destinations": ["two", "one"]},
    ]
    assert router({"rules": rules}).route(instance_of(ct)).destinations == ("one",)
    decision = router({"mode": "all", "rules": rules}).route(instance_of(ct))
    assert decision.destinations == ("one", "two")
    assert [r.rule for r in decision.routes] == ["a", "b"]


def test_a_matching_drop_rule_drops_and_a_default_can_drop(ct: Path) -> None:
    rules = [
        {"name": "keep", "match": {"Modality": "CT"}, "destinations": ["one"]},
        {"name": "junk", "match": {"calling_ae": "MODALITY1"}, "drop": True},
    ]
    decision = router({"mode": "all", "rules": rules}).route(instance_of(ct))
    assert decision.routes == () and decision.dropped == "rule 'junk'"
    decision = router({"rules": [], "default": "drop"}).route(instance_of(ct))
    assert decision.routes == () and decision.dropped is not None


def test_an_instance_never_goes_back_to_the_pacs_it_came_from(ct: Path, tmp_path: Path) -> None:
    rules = [{"name": "all", "destinations": ["pacs-a", "pacs-b", "store"]}]
    echoes = {"pacs-a": frozenset({"PACS_A", "PACS_A_SCU"}), "pacs-b": frozenset({"PACS_B"})}
    decision = router({"rules": rules}, echo_aets=echoes).route(instance_of(ct, "PACS_A_SCU"))
    assert decision.destinations == ("pacs-b", "store") and decision.echoes == ("pacs-a",)
    provenance = ProvenanceLog(tmp_path / "provenance.sqlite")  # exported: known by its UID
    inst = instance_of(ct, None)
    provenance.record(inst.sop_instance_uid, "PACS_B")
    decision = router({"rules": rules}, echo_aets=echoes, provenance=provenance).route(inst)
    assert decision.destinations == ("pacs-a", "store") and decision.echoes == ("pacs-b",)


def test_rules_that_need_only_uids_and_origin_never_read_the_header(ct: Path) -> None:
    inst = instance_of(ct)
    ct.write_bytes(b"not DICOM any more")  # a header read would fail now
    r = router(
        {"rules": [{"name": "r", "match": {"calling_ae": "MODALITY1"}, "destinations": ["x"]}]}
    )
    assert r.route(inst).destinations == ("x",)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            [{"name": "r", "match": {"Modalty": "CT"}, "destinations": ["x"]}],
            "unknown DICOM keyword 'Modalty'",
        ),
        (
            [
                {
                    "name": "r",
                    "match": {"attribute": "PatientID", "regex": "("},
                    "destinations": ["x"],
                }
            ],
            "regex: regular expression '(' does not compile",
        ),
        (
            [
                {
                    "name": "r",
                    "match": {"all": [{"Modality": "CT"}, {"attribute": "Rows"}]},
                    "destinations": ["x"],
                }
            ],
            "all[1]: expected exactly one of",
        ),
        (
            [{"name": "r", "match": {"all": [], "Modality": "CT"}, "destinations": ["x"]}],
            "must stand alone",
        ),
        (
            [
                {
                    "name": "r",
                    "match": {"attribute": "StudyDate", "range": {"min": 1, "max": "x"}},
                    "destinations": ["x"],
                }
            ],
            "both be numbers",
        ),
        ([{"name": "r"}], "a rule needs destinations"),
        ([{"name": "r", "drop": True, "destinations": ["x"]}], "a drop rule names no destinations"),
        (
            [{"name": "r", "destinations": ["x"]}, {"name": "r", "destinations": ["x"]}],
            "two rules are named 'r'",
        ),
    ],
)
def test_bad_rules_fail_validation_naming_what_and_where(
    rules: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        RoutingConfig.model_validate({"rules": rules})
    assert message in str(info.value)


def site(routing: dict[str, Any], **destinations: Any) -> dict[str, Any]:
    return {
        "dicomweb": {"url": "http://127.0.0.1:1/dicom-web"},
        "destinations": destinations,
        "importer": {"routing": routing},
    }


def test_unknown_destinations_and_bad_rules_are_reported_with_the_key_path() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_data(site({"rules": [{"name": "r", "destinations": ["nope"]}]}))
    assert (
        "importer.routing.rules[0].destinations: unknown destination 'nope' (have: store)"
        in str(info.value)
    )
    with pytest.raises(ConfigError) as info:
        load_config_data(
            site({"rules": [{"name": "r", "match": {"Modalty": "CT"}, "destinations": ["store"]}]})
        )
    assert "importer.routing.rules.0.match" in str(info.value).replace("[0]", ".0")
    with pytest.raises(ConfigError) as info:
        load_config_data(site({}, **{"bad name!": {"kind": "folder", "path": "/tmp/x"}}))
    assert "destinations" in str(info.value)


def test_the_waiter_answers_after_every_destination_or_the_first_rejection() -> None:
    waiter = DeliveryWaiter("delivered")
    waiter.expect(["a", "b"])
    waiter.delivered("a")
    waiter.held("b", "HTTP 503")
    assert waiter.wait(0.01) is None and waiter.last_error() == "b: HTTP 503"
    waiter.delivered("b")
    assert waiter.wait(0.01) == Verdict(Status.SUCCESS)
    rejected = DeliveryWaiter("delivered")
    rejected.expect(["a", "b"])
    rejected.rejected("b", Verdict(Status.CANNOT_UNDERSTAND, "b rejected it"))
    assert rejected.wait(0.01) == Verdict(Status.CANNOT_UNDERSTAND, "b rejected it")
    settled = DeliveryWaiter("settled")  # export: held durably counts as settled
    settled.expect(["a", "b"])
    settled.delivered("a")
    settled.held("b", "PACS down")
    assert settled.wait(0.01) == Verdict(Status.SUCCESS)
    dropped = DeliveryWaiter("delivered")
    dropped.expect([])
    assert dropped.wait(0.01) == Verdict(Status.SUCCESS)
    late = DeliveryWaiter("delivered")
    late.expect(["a"])
    assert late.cancel() and late.cancelled and late.wait(0.01) is None


def test_route_command_prints_rule_and_destinations_without_sending(
    tmp_path: Path, ct: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mg = tmp_path / "mg.dcm"
    mg.write_bytes(ct.read_bytes())
    instance_of(mg, Modality="MG")
    routing = {
        "rules": [
            {"name": "mammo", "match": {"Modality": "MG"}, "destinations": ["mammo", "store"]},
            {"name": "er", "match": {"calling_ae": "ER_*"}, "drop": True},
        ]
    }
    cfg = tmp_path / "site.yaml"
    cfg.write_text(
        yaml.safe_dump(site(routing, mammo={"kind": "folder", "path": str(tmp_path / "out")}))
    )
    assert cli.main(["route", "--config", str(cfg), str(mg), str(ct)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{mg}: rule 'mammo' -> mammo, store", f"{ct}: rule 'default' -> store"]
    assert cli.main(["route", "-c", str(cfg), "--calling-ae", "ER_1", "--json", str(ct)]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["dropped"] == "rule 'er'" and row["destinations"] == []
    assert not (tmp_path / "out").exists()  # nothing was sent
