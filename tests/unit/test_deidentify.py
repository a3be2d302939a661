"""The de-identification stage: the basic profile against the standard's Table E.1-1 attribute
by attribute (top level and inside a sequence, with and without options), private attributes,
the UID rules, the Java redactor's lists, burned-in annotation, streaming of Pixel Data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from adapter.errors import ConfigError, PermanentError
from adapter.pipeline.instance import Instance, Origin
from adapter.provenance import ProvenanceLog
from adapter.spool_files import SpoolMeta
from adapter.stages.deid_uids import UidMapper, name_based_uid
from adapter.stages.deidentify import DeidentifyStage
from adapter.stages.deidentify_config import DeidentifyStageConfig, UidConfig
from tests.peers import dcmtk
from tests.peers.datasets import compress, make_ct_series, make_mr_instance

TABLE = Path(__file__).resolve().parents[2] / "adapter" / "stages" / "annex_e.tsv"
CONDITIONAL = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U"}
NESTING = 0x00209222  # Dimension Index Sequence: not in the table, so it is walked
SECRET = "s3cret-s3cret-s3cret"


def table_rows() -> list[dict[str, str]]:
    lines = [line for line in TABLE.read_text().split("\n") if line and line[0] != "#"]
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


def expected_action(row: dict[str, str], options: tuple[str, ...]) -> str:
    chosen = {row[o] for o in options if row.get(o)}
    if "K" in chosen:
        return "K"
    if "C" in chosen:
        return "C"
    return CONDITIONAL.get(row["basic"], row["basic"])


def sample(vr: str, n: int) -> Any:
    values: dict[str, Any] = {
        "AE": "SENDER",
        "AS": "045Y",
        "CS": "VALUE",
        "DA": "20200102",
        "DT": "20200102030405",
        "TM": "030405",
        "DS": "1.5",
        "IS": "7",
        "PN": "Smith^John",
        "UR": "http://example.invalid/x",
        "FL": 1.5,
        "FD": 1.5,
        "AT": 0x00100010,
        "OF": b"\x01\x02\x03\x04",
        "OL": b"\x01\x02\x03\x04",
        "OD": b"\x01" * 8,
        "OV": b"\x01" * 8,
    }
    if vr in ("LO", "LT", "SH", "ST", "UC", "UT"):
        return "Secret Smith"
    if vr == "UI":
        return f"1.2.826.0.1.3680043.10.1.{n}"
    if vr in ("SL", "SS", "SV", "UL", "US", "UV"):
        return 5
    if vr in ("OB", "OW", "UN"):
        return b"\x01\x02"
    return values[vr]


def table_attributes() -> list[tuple[int, str, dict[str, str]]]:
    """(tag, VR, row) of every row with a plain tag that the dictionary knows."""
    out = []
    for row in table_rows():
        tag_text = row["tag"]
        if tag_text == "private" or "X" in tag_text or tag_text[:4] in ("0000", "0002"):
            continue
        tag = int(tag_text.replace(",", ""), 16)
        try:
            vr = dictionary_VR(tag).split(" or ")[0]
        except KeyError:
            continue
        out.append((tag, vr, row))
    return out


def fill(ds: Dataset, attributes: list[tuple[int, str, dict[str, str]]]) -> None:
    for n, (tag, vr, _) in enumerate(attributes):
        if vr == "SQ":
            item = Dataset()
            item.PatientName = "Smith^John"
            ds.add_new(tag, vr, Sequence([item]))
        else:
            ds.add_new(tag, vr, sample(vr, n))


def write_instance(path: Path, ds: Dataset, syntax: str = "1.2.840.10008.1.2.1") -> Instance:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return instance_of(path)


def instance_of(path: Path, calling_ae: str | None = "MODALITY") -> Instance:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    meta = SpoolMeta(
        str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), None, None
    )
    return Instance(path, meta, Origin("dimse", calling_ae, "ADAPTER"))


def stage(**config: Any) -> DeidentifyStage:
    return DeidentifyStage("t", DeidentifyStageConfig(**config))


def check_action(
    action: str, vr: str, before: Any, ds: Dataset, tag: int, where: str, days: int
) -> None:
    if action == "X":
        assert tag not in ds, where
        return
    assert tag in ds, where
    value = ds[tag].value
    if vr == "SQ":
        if action == "Z":
            assert len(value) == 0, where
        else:  # the items were walked: the name inside is gone
            assert all(not item.get("PatientName") for item in value), where
        return
    if action == "Z":
        assert value in (None, "", b""), where
    elif action == "U" or (action == "D" and vr == "UI"):
        assert value == name_based_uid(str(before)), where
    elif action == "D":
        assert value not in (None, "", b"") and value != before, where
    elif action == "K":
        assert value == before, where
    elif action == "C":
        if vr in ("DA", "DT"):
            assert (value != before) if days else (value == before), where
        elif vr in ("LO", "LT", "SH", "ST", "UC", "UT", "PN"):
            assert "smith" not in str(value).lower(), where
        else:
            assert value == before, where


OPTION_SETS = [
    (),
    (
        "retain_uids",
        "retain_device_identity",
        "retain_institution_identity",
        "retain_patient_characteristics",
        "retain_longitudinal_modified_dates",
        "clean_descriptors",
        "clean_structured_content",
        "clean_graphics",
    ),
    ("retain_longitudinal_full_dates", "clean_descriptors"),
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=["basic", "retain-and-clean", "full-dates"])
def test_basic_profile_follows_table_e1_1_attribute_by_attribute(
    tmp_path: Path, options: tuple[str, ...]
) -> None:
    attributes = table_attributes()
    assert len(attributes) > 500
    ds = Dataset()
    fill(ds, attributes)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    nested = Dataset()
    fill(nested, attributes)
    ds.add_new(NESTING, "SQ", Sequence([nested]))
    ds.PatientName = "Smith^John"
    source = pydicom.dcmread(write_instance(tmp_path / "in.dcm", ds).path)
    deid = stage(options=options, date_offset_days=-10)
    out = deid.process(instance_of(tmp_path / "in.dcm"), tmp_path)
    got = pydicom.dcmread(out.path)
    days = -10 if "retain_longitudinal_modified_dates" in options else 0
    for level, (src, dst) in enumerate([(source, got), (source[NESTING][0], got[NESTING][0])]):
        for tag, vr, row in attributes:
            action = expected_action(row, options)
            where = f"{row['name']} (depth {level})"
            check_action(action, vr, src[tag].value, dst, tag, where, days)
    assert got.PatientIdentityRemoved == "YES"
    codes = {item.CodeValue for item in got.DeidentificationMethodCodeSequence}
    assert "113100" in codes and len(codes) == 1 + len(options)
    assert dcmtk.run_tool("dcmdump", [out.path]).ok


def test_modified_dates_shift_every_date_by_the_offset(tmp_path: Path) -> None:
    [path] = make_ct_series(tmp_path, 1, rows=8, cols=8)
    before = pydicom.dcmread(path)
    out = stage(options=["retain_longitudinal_modified_dates"], date_offset_days=-3).process(
        instance_of(path), tmp_path
    )
    got = pydicom.dcmread(out.path)
    import datetime as dt

    want = (dt.datetime.strptime(before.StudyDate, "%Y%m%d") - dt.timedelta(3)).strftime("%Y%m%d")
    assert got.StudyDate == want and got.StudyTime == before.StudyTime
    assert got.LongitudinalTemporalInformationModified == "MODIFIED"


def test_cleaning_options_on_an_ordinary_instance(tmp_path: Path) -> None:
    [path] = make_ct_series(tmp_path, 1, rows=8, cols=8)  # no Other Patient IDs, no Issuer
    ds = pydicom.dcmread(path)
    ds.StationName, ds.StudyDescription = "CT ROOM 2", "Head CT of Patient, test"
    ds.save_as(path)
    got = pydicom.dcmread(
        stage(options=["retain_device_identity"]).process(instance_of(path), tmp_path).path
    )
    assert got.PatientName == "" and got.StationName == "CT ROOM 2"  # K: retained
    assert "StudyDescription" not in got  # X without Clean Descriptors
    got = pydicom.dcmread(
        stage(options=["clean_descriptors"]).process(instance_of(path), tmp_path).path
    )
    assert got.StudyDescription == "Head CT of ,"  # TEST^PATIENT: both words go
    assert got.StationName == "ANONYMIZED"  # X/Z/D: a dummy


def test_private_attributes_go_unless_a_rule_keeps_them(tmp_path: Path) -> None:
    [path] = make_ct_series(tmp_path, 1, rows=8, cols=8)
    ds = pydicom.dcmread(path)
    for target in (ds, Dataset()):
        block = target.private_block(0x0029, "KEEP ME", create=True)
        block.add_new(0x10, "LO", "kept")
        block.add_new(0x11, "LO", "gone")
        target.private_block(0x0031, "DROP ME", create=True).add_new(0x10, "LO", "gone")
        if target is not ds:
            ds.add_new(NESTING, "SQ", Sequence([target]))
    ds.save_as(path)
    out = stage(keep_private=[{"creator": "KEEP ME", "group": "0029", "elements": ["10"]}])
    got = pydicom.dcmread(out.process(instance_of(path), tmp_path).path)
    for where in (got, got[NESTING][0]):
        assert where.private_block(0x0029, "KEEP ME")[0x10].value == "kept"
        assert 0x00291011 not in where
        assert not any(int(t) >> 16 == 0x0031 for t in list(where.keys()))
    plain = pydicom.dcmread(stage().process(instance_of(path), tmp_path).path)
    assert not any(int(t) >> 16 & 1 for t in list(plain.keys()))


def test_java_uid_rule_and_the_keyed_option(monkeypatch: pytest.MonkeyPatch) -> None:
    assert name_based_uid("111") == "2.25.140302709094137852884202099990798014056"
    monkeypatch.setenv("SITE_SECRET", SECRET)
    keyed = UidMapper(UidConfig(method="hmac", secret_env="SITE_SECRET"))
    again = UidMapper(UidConfig(method="hmac", secret_env="SITE_SECRET"))
    assert keyed("1.2.3") == again("1.2.3") != name_based_uid("1.2.3")
    assert keyed("1.2.3").startswith("2.25.") and len(keyed("1.2.3")) <= 64
    monkeypatch.setenv("SITE_SECRET", "another-secret-value")
    assert UidMapper(UidConfig(method="hmac", secret_env="SITE_SECRET"))("1.2.3") != keyed("1.2.3")
    monkeypatch.setenv("SITE_SECRET", "short")
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        UidMapper(UidConfig(method="hmac", secret_env="SITE_SECRET"))
    with pytest.raises(ValueError, match="secrets never live in the YAML"):
        UidConfig.model_validate({"method": "hmac", "secret": "x"})


def test_a_study_stays_a_study_and_references_follow(tmp_path: Path) -> None:
    files = make_ct_series(tmp_path, 2, rows=8, cols=8)
    first, second = pydicom.dcmread(files[0]), pydicom.dcmread(files[1])
    ref = Dataset()
    ref.ReferencedSOPClassUID = first.SOPClassUID
    ref.ReferencedSOPInstanceUID = first.SOPInstanceUID
    second.ReferencedImageSequence = Sequence([ref])
    second.save_as(files[1])
    outs = [stage().process(instance_of(f), tmp_path) for f in files]
    again = stage().process(instance_of(files[0]), tmp_path)  # a new stage: a restart
    a, b = (pydicom.dcmread(o.path) for o in outs)
    assert a.StudyInstanceUID == b.StudyInstanceUID == name_based_uid(first.StudyInstanceUID)
    assert a.FrameOfReferenceUID == b.FrameOfReferenceUID
    assert b.ReferencedImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID == outs[0].sop_instance_uid
    assert again.meta == outs[0].meta


def test_pixel_data_is_copied_byte_for_byte_in_every_syntax(tmp_path: Path) -> None:
    [ct] = make_ct_series(tmp_path / "src", 1, rows=64, cols=64)
    mr = make_mr_instance(tmp_path / "src")  # implicit VR
    jpeg = tmp_path / "jpeg.dcm"
    compress(ct, jpeg, "jpeg-lossless")
    deflated = tmp_path / "deflate.dcm"
    compress(mr, deflated, "deflate")
    for path in (ct, mr, jpeg, deflated):
        out = stage().process(instance_of(path), tmp_path)
        src, got = pydicom.dcmread(path), pydicom.dcmread(out.path)
        assert got.PixelData == src.PixelData, path.name
        assert got.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID
        assert out.meta.transfer_syntax_uid == src.file_meta.TransferSyntaxUID
        assert dcmtk.run_tool("dcmdump", [out.path]).ok, path.name


def test_what_follows_pixel_data_is_cleaned_too(tmp_path: Path) -> None:
    [path] = make_ct_series(tmp_path, 1, rows=8, cols=8)
    ds = pydicom.dcmread(path)
    ds.private_block(0x7FE1, "AFTER", create=True).add_new(0x10, "LO", "Smith")
    ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 16)  # Data Set Trailing Padding: X
    ds.save_as(path)
    got = pydicom.dcmread(stage().process(instance_of(path), tmp_path).path)
    assert got.PixelData == ds.PixelData
    assert not any(int(t) > 0x7FE00010 for t in list(got.keys()))
    redact = stage(profile="redact", remove_list=["PatientName"])
    kept = pydicom.dcmread(redact.process(instance_of(path), tmp_path).path)
    assert 0xFFFCFFFC in kept and 0x7FE11010 in kept


def test_burned_in_annotation_follows_the_policy(tmp_path: Path) -> None:
    [path] = make_ct_series(tmp_path, 1, rows=8, cols=8)
    ds = pydicom.dcmread(path)
    ds.BurnedInAnnotation = "YES"
    ds.save_as(path)
    with pytest.raises(PermanentError, match="Burned In Annotation is YES; quarantined"):
        stage().process(instance_of(path), tmp_path)
    assert stage(burned_in="pass").process(instance_of(path), tmp_path).path.exists()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"  # US
    del ds.BurnedInAnnotation
    ds.save_as(path)
    with pytest.raises(PermanentError, match="often burns text in"):
        stage().process(instance_of(path), tmp_path)
    ds.BurnedInAnnotation = "NO"
    ds.save_as(path)
    assert stage().process(instance_of(path), tmp_path).path.exists()
    assert len(list(tmp_path.glob("deid-*.dcm"))) == 2  # the quarantined left no file


def test_redact_remove_list_empties_top_level_attributes_as_the_java_redactor(
    tmp_path: Path,
) -> None:
    [path] = make_ct_series(tmp_path, 1, rows=8, cols=8)
    ds = pydicom.dcmread(path)
    item = Dataset()
    item.ContentDate = "20200101"
    ds.add_new(NESTING, "SQ", Sequence([item]))
    ds.save_as(path)
    out = stage(profile="redact", remove_list=["ContentTime", "ContentDate"])
    got = pydicom.dcmread(out.process(instance_of(path), tmp_path).path)
    assert "ContentDate" in got and got.ContentDate == "" and got.ContentTime == ""
    assert got[NESTING][0].ContentDate == "20200101"  # the Java redactor stays at the top
    assert got.PatientName == ds.PatientName and got.StudyDate == ds.StudyDate
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        assert got[keyword].value == name_based_uid(ds[keyword].value)
    assert got.FrameOfReferenceUID == ds.FrameOfReferenceUID
    assert got.file_meta.MediaStorageSOPInstanceUID == got.SOPInstanceUID
    assert "PatientIdentityRemoved" not in got


def test_redact_keep_list_empties_the_rest_and_chc_basic_loads(tmp_path: Path) -> None:
    [ct] = make_ct_series(tmp_path / "src", 1, rows=64, cols=64)
    jpeg = tmp_path / "jpeg.dcm"
    compress(ct, jpeg, "jpeg-lossless")
    got = pydicom.dcmread(
        stage(profile="redact", keep_list=["PatientID", "SOPClassUID"])
        .process(instance_of(jpeg), tmp_path)
        .path
    )
    assert got.PatientID == pydicom.dcmread(jpeg).PatientID and got.PatientName == ""
    assert got.PixelData in (None, b"")  # not kept: emptied, and the syntax is native then
    assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    chc_stage = stage(profile="redact", filter_profile="CHC_BASIC")
    chc = pydicom.dcmread(chc_stage.process(instance_of(ct), tmp_path).path)
    assert chc.PatientName == "" and chc.AccessionNumber == "" and chc.Modality == "CT"


def test_config_refuses_mixed_profiles_and_unknown_tags() -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        DeidentifyStageConfig(profile="redact", remove_list=["A"], keep_list=["B"])
    with pytest.raises(ValueError, match="belong to profile 'redact'"):
        DeidentifyStageConfig(remove_list=["PatientName"])
    with pytest.raises(ValueError, match="not a DICOM keyword"):
        DeidentifyStageConfig(profile="redact", remove_list=["NoSuchKeyword"])


def test_new_uids_are_recorded_for_the_echo_guard(tmp_path: Path) -> None:
    [path] = make_ct_series(tmp_path, 1, rows=8, cols=8)
    log = ProvenanceLog(tmp_path / "p.sqlite")
    deid = DeidentifyStage("t", DeidentifyStageConfig(), log)
    out = deid.process(instance_of(path, calling_ae="PACS"), tmp_path)
    assert log.sources(out.sop_instance_uid) == {"PACS"}


_RSS = """
import resource, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from tests.unit.test_deidentify import instance_of, stage
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
stage().process(instance_of(Path(sys.argv[1])), Path(sys.argv[2]))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_a_large_instance_is_streamed_not_loaded(tmp_path: Path) -> None:
    """400 MiB of Pixel Data (a sparse file): the stage's peak memory grows by < 64 MB."""
    [path] = make_ct_series(tmp_path, 1, rows=8, cols=8)
    ds = pydicom.dcmread(path)
    frames = 3200
    ds.NumberOfFrames, ds.Rows, ds.Columns = frames, 256, 256
    del ds.PixelData
    ds.save_as(path)
    size = frames * 256 * 256 * 2
    with open(path, "ab") as f:  # Pixel Data OW, explicit VR: tag, VR, reserved, length
        f.write(b"\xe0\x7f\x10\x00OW\x00\x00" + size.to_bytes(4, "little"))
        f.truncate(f.tell() + size)
    proc = subprocess.run(
        [sys.executable, "-c", _RSS, str(path), str(tmp_path), str(Path(__file__).parents[2])],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert int(proc.stdout.strip()) < 64, proc.stdout
    outs = list(tmp_path.glob("deid-*.dcm"))
    assert len(outs) == 1 and outs[0].stat().st_size > size


def _both_paths(deid: DeidentifyStage, path: Path, tmp_path: Path) -> tuple[Dataset, Dataset]:
    assert deid.fast
    fast = pydicom.dcmread(deid.process(instance_of(path), tmp_path).path)
    deid.fast = False
    try:
        slow = pydicom.dcmread(deid.process(instance_of(path), tmp_path).path)
    finally:
        deid.fast = True
    return fast, slow


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"options": ["retain_longitudinal_modified_dates", "retain_uids"]},
        {"profile": "redact", "remove_list": ["PatientName", "ContentDate"]},
        {"profile": "redact", "keep_list": ["PatientID"]},
        {"profile": "redact", "filter_profile": "CHC_BASIC"},
    ],
    ids=["basic", "dates-uids", "remove", "keep", "chc"],
)
def test_the_byte_level_path_writes_what_the_pydicom_path_writes(
    tmp_path: Path, config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path (deid_raw) against the pydicom one, on the table's every attribute (top
    level and nested), in explicit and implicit VR, native and encapsulated."""
    from adapter.stages import deidentify

    used: list[str] = []

    def spy(*args: Any) -> Any:
        written = real(*args)
        used.append(str(args[3]))
        return written

    real = deidentify.rewrite_file
    monkeypatch.setattr(deidentify, "rewrite_file", spy)
    ds = Dataset()
    attributes = table_attributes()
    fill(ds, attributes)
    nested = Dataset()
    fill(nested, attributes)
    ds.add_new(NESTING, "SQ", Sequence([nested]))
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.private_block(0x0029, "ANY", create=True).add_new(0x10, "LO", "private")
    table = write_instance(tmp_path / "table.dcm", ds).path
    implicit = write_instance(tmp_path / "table-implicit.dcm", ds, "1.2.840.10008.1.2").path
    [ct] = make_ct_series(tmp_path / "src", 1, rows=32, cols=32)
    mr = make_mr_instance(tmp_path / "src")
    jpeg = tmp_path / "jpeg.dcm"
    compress(ct, jpeg, "jpeg-lossless")
    deid = stage(date_offset_days=-20, **config)
    for path in (table, implicit, ct, mr, jpeg):
        fast, slow = _both_paths(deid, path, tmp_path)
        assert (
            fast.file_meta.MediaStorageSOPInstanceUID == slow.file_meta.MediaStorageSOPInstanceUID
        )
        assert fast.file_meta.TransferSyntaxUID == slow.file_meta.TransferSyntaxUID
        differ = [str(e.tag) for e in slow if e.tag not in fast or fast[e.tag] != e] + [
            str(e.tag) for e in fast if e.tag not in slow
        ]
        assert not differ, f"{path.name}: {differ[:10]}"
    assert len(used) == 5  # the fast path wrote every one (no fallback)
