"""The fast Part-10 header scan (adapter/part10_scan.py) agrees with pydicom, refuses with
ScanError what it does not read, and check_part10 keeps its answers with it in front."""

from __future__ import annotations

import contextlib
import copy
import io
import random
import struct
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from adapter.part10_scan import HeaderFacts, ScanError, scan_part10_header
from adapter.status import Status
from importer import part10
from importer.part10 import DatasetFacts, InvalidDatasetError, check_part10
from tests.peers.datasets import (
    make_ct_series,
    make_mr_instance,
    make_multiframe,
    make_secondary_capture,
)

MR = "1.2.840.10008.5.1.4.1.1.4"
PIXEL_TAG = b"\xe0\x7f\x10\x00"
PRIVATE_CREATOR = "DICOM ADAPTER TEST"


# --------------------------------------------------------------------------------- builders
def _with(path: Path, name: str, change: Callable[[Dataset], None]) -> Path:
    """A copy of ``path`` changed by ``change``, saved as ``name`` (same transfer syntax)."""
    ds = pydicom.dcmread(path)
    change(ds)
    out = path.parent / name
    ds.save_as(out, enforce_file_format=True)
    return out


def _undefined_lengths(ds: Dataset) -> None:
    """Every sequence and item in ``ds`` written with undefined length, recursively."""
    for elem in ds:
        if elem.VR == "SQ":
            elem.is_undefined_length = True
            for item in elem.value:
                item.is_undefined_length_sequence_item = True
                _undefined_lengths(item)


def _add_nested(undefined: bool) -> Callable[[Dataset], None]:
    """Sequences nested three deep holding decoy UIDs (and decoy Pixel Data) that a scanner
    which descended into sequences would pick instead of the top-level ones; private tags."""

    def change(ds: Dataset) -> None:
        deepest = Dataset()
        deepest.SOPInstanceUID = generate_uid()
        deepest.StudyInstanceUID = generate_uid()
        deepest.CodeValue = "DEEP"
        middle = Dataset()
        middle.SOPClassUID = MR
        middle.SOPInstanceUID = generate_uid()
        middle.ReferencedSOPSequence = Sequence([deepest, Dataset()])
        ds.ReferencedImageSequence = Sequence([middle])  # (0008,1140), after (0008,0018)
        request = Dataset()
        request.StudyInstanceUID = generate_uid()
        request.RequestedProcedureID = "RP1"
        request.ScheduledProcedureStepSequence = Sequence([Dataset()])  # empty item
        ds.RequestAttributesSequence = Sequence([request, copy.deepcopy(request)])  # (0040,0275)
        icon = Dataset()
        icon.SamplesPerPixel = 1
        icon.PhotometricInterpretation = "MONOCHROME2"
        icon.Rows = 4
        icon.Columns = 4
        icon.BitsAllocated = 8
        icon.BitsStored = 8
        icon.HighBit = 7
        icon.PixelRepresentation = 0
        icon.add_new(0x7FE00010, "OB", bytes(range(16)))
        ds.IconImageSequence = Sequence([icon])  # (0088,0200): nested Pixel Data
        block = ds.private_block(0x0009, PRIVATE_CREATOR, create=True)
        block.add_new(0x10, "LO", "private text")
        block.add_new(0x11, "OB", b"\x01\x02\x03\x04")
        private_item = Dataset()
        private_item.SeriesInstanceUID = generate_uid()
        private_item.add_new(0x7FE00010, "OB", bytes(8))  # nested Pixel Data before the UIDs
        block.add_new(0x12, "SQ", Sequence([private_item]))
        block.add_new(0x13, "SQ", Sequence())  # empty sequence
        late = ds.private_block(0x0041, PRIVATE_CREATOR, create=True)
        late.add_new(0x01, "UT", "x" * 70_001)  # a long value with a 4-byte length
        if undefined:
            _undefined_lengths(ds)

    return change


def _raw_before_pixels(path: Path, name: str, raw: bytes) -> Path:
    """``raw`` element bytes spliced in just before the Pixel Data element."""
    data = path.read_bytes()
    pos = data.rindex(PIXEL_TAG)
    out = path.parent / name
    out.write_bytes(data[:pos] + raw + data[pos:])
    return out


def _un_undefined_length() -> bytes:
    """(0099,0010) LO creator + (0099,1010) UN of undefined length holding an Implicit VR
    sequence (PS3.5 6.2.2 note), as dcmtk and others write unknown private sequences."""
    creator = b"\x99\x00\x10\x00LO" + struct.pack("<H", 4) + b"TEST"
    item = b"\x08\x00\x00\x01" + struct.pack("<L", 4) + b"CODE"  # (0008,0100) SH, implicit
    value = (
        b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
        + item
        + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
        + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    )
    return creator + b"\x99\x00\x10\x10UN\x00\x00\xff\xff\xff\xff" + value


def _encapsulated(syntax: str) -> Callable[[Dataset], None]:
    def change(ds: Dataset) -> None:
        frames = [b"\xff\xd8" + bytes([i]) * 101 + b"\xff\xd9" for i in range(3)]
        ds.file_meta.TransferSyntaxUID = syntax
        ds.NumberOfFrames = len(frames)
        ds.PixelData = encapsulate(frames, has_bot=True)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True

    return change


def _without_pixels(ds: Dataset) -> None:
    del ds.PixelData


def _trailing_padding(ds: Dataset) -> None:
    ds.add_new(0xFFFCFFFC, "OB", bytes(64))  # Data Set Trailing Padding, after Pixel Data


def _float_pixels(ds: Dataset) -> None:
    del ds.PixelData
    ds.BitsAllocated = 32
    ds.add_new(0x7FE00008, "OF", bytes(4 * ds.Rows * ds.Columns))


def _build_files(directory: Path) -> dict[str, Path]:
    ct = make_ct_series(directory, 1, 16, 16)[0]
    ct_implicit = make_ct_series(directory, 1, 16, 16, transfer_syntax=ImplicitVRLittleEndian)[0]
    files = {
        "ct-explicit": ct,
        "ct-implicit": ct_implicit,
        "mr-implicit": make_mr_instance(directory, 16, 16),
        "sc-explicit": make_secondary_capture(directory, 8, 8),
        "multiframe": make_multiframe(directory, 3 * 32 * 32 * 2, 32, 32),
    }

    def rle(ds: Dataset) -> None:
        ds.compress(RLELossless)

    files["rle"] = _with(ct, "rle.dcm", rle)
    files["jpeg-encapsulated"] = _with(ct, "jpeg.dcm", _encapsulated(JPEGBaseline8Bit))
    files["jpeg-ls-encapsulated"] = _with(ct, "jpeg-ls.dcm", _encapsulated(JPEGLSLossless))
    for name, source in (("explicit", ct), ("implicit", ct_implicit)):
        files[f"nested-defined-{name}"] = _with(source, f"nd-{name}.dcm", _add_nested(False))
        files[f"nested-undefined-{name}"] = _with(source, f"nu-{name}.dcm", _add_nested(True))
        files[f"no-pixels-{name}"] = _with(source, f"np-{name}.dcm", _without_pixels)
        files[f"trailing-padding-{name}"] = _with(source, f"tp-{name}.dcm", _trailing_padding)
        files[f"float-pixels-{name}"] = _with(source, f"fp-{name}.dcm", _float_pixels)
    files["rle-nested-undefined"] = _with(files["rle"], "rle-nu.dcm", _add_nested(True))
    files["no-pixels-nested"] = _with(
        files["nested-undefined-explicit"], "np-nu.dcm", _without_pixels
    )
    return files


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _build_files(tmp_path_factory.mktemp("part10-scan"))


KINDS = [
    "ct-explicit",
    "ct-implicit",
    "mr-implicit",
    "sc-explicit",
    "multiframe",
    "rle",
    "jpeg-encapsulated",
    "jpeg-ls-encapsulated",
    "nested-defined-explicit",
    "nested-undefined-explicit",
    "nested-defined-implicit",
    "nested-undefined-implicit",
    "no-pixels-explicit",
    "no-pixels-implicit",
    "trailing-padding-explicit",
    "trailing-padding-implicit",
    "float-pixels-explicit",
    "float-pixels-implicit",
    "rle-nested-undefined",
    "no-pixels-nested",
]


def scan(path: Path) -> HeaderFacts:
    with open(path, "rb") as fp:
        return scan_part10_header(fp, path.stat().st_size)


def scan_bytes(data: bytes) -> HeaderFacts:
    return scan_part10_header(io.BytesIO(data), len(data))


def pydicom_facts(path: Path) -> HeaderFacts:
    """What pydicom reads, in the scan's terms; pixel_pos = where stop_before_pixels stops."""
    with open(path, "rb") as fp:
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
        pixel_pos = fp.tell()

    def uid(keyword: str) -> str | None:
        value = ds.get(keyword)
        return None if value is None else str(value)

    return HeaderFacts(
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        sop_class_uid=uid("SOPClassUID"),
        sop_instance_uid=uid("SOPInstanceUID"),
        study_instance_uid=uid("StudyInstanceUID"),
        series_instance_uid=uid("SeriesInstanceUID"),
        pixel_pos=pixel_pos,
    )


# --------------------------------------------------------------------------------- agreement
def test_the_generated_files_cover_what_they_claim(files: dict[str, Path]) -> None:
    syntaxes = {kind: pydicom_facts(files[kind]).transfer_syntax_uid for kind in KINDS}
    assert (
        syntaxes["ct-implicit"] == syntaxes["nested-undefined-implicit"] == ImplicitVRLittleEndian
    )
    assert (
        syntaxes["ct-explicit"] == syntaxes["nested-undefined-explicit"] == ExplicitVRLittleEndian
    )
    assert syntaxes["rle"] == syntaxes["rle-nested-undefined"] == RLELossless
    assert syntaxes["jpeg-encapsulated"] == JPEGBaseline8Bit
    for kind in ("nested-undefined-explicit", "nested-undefined-implicit"):
        raw = files[kind].read_bytes()
        assert raw.count(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00") >= 6  # undefined-length sequences
        assert raw.count(b"\xfe\xff\x0d\xe0\x00\x00\x00\x00") >= 6  # undefined-length items
    for kind in ("nested-defined-explicit", "nested-defined-implicit"):
        assert b"\xfe\xff\xdd\xe0" not in files[kind].read_bytes()
    for kind in ("nested-undefined-implicit", "nested-defined-explicit"):
        ds = pydicom.dcmread(files[kind], stop_before_pixels=True)
        assert ds.private_block(0x0009, PRIVATE_CREATOR)[0x10].value in (
            "private text",
            b"private text",  # Implicit VR: pydicom does not know the private VR
        )
    assert PIXEL_TAG not in files["no-pixels-explicit"].read_bytes()


@pytest.mark.parametrize("kind", KINDS)
def test_scan_agrees_with_pydicom(files: dict[str, Path], kind: str) -> None:
    assert scan(files[kind]) == pydicom_facts(files[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_scan_pixel_pos_is_the_top_level_pixel_data_tag(files: dict[str, Path], kind: str) -> None:
    data = files[kind].read_bytes()
    facts = scan(files[kind])
    if kind.startswith("no-pixels"):
        assert facts.pixel_pos == len(data)
    elif kind.startswith("float-pixels"):
        assert data[facts.pixel_pos : facts.pixel_pos + 4] == b"\xe0\x7f\x08\x00"
    else:
        assert data[facts.pixel_pos : facts.pixel_pos + 4] == PIXEL_TAG
        assert facts.pixel_pos == data.rindex(PIXEL_TAG)  # not a nested (icon) Pixel Data


@pytest.mark.parametrize("kind", ["nested-undefined-explicit", "nested-defined-implicit"])
def test_scan_reports_top_level_uids_not_those_in_sequences(
    files: dict[str, Path], kind: str
) -> None:
    ds = pydicom.dcmread(files[kind], stop_before_pixels=True)
    facts = scan(files[kind])
    assert facts.sop_instance_uid == ds.SOPInstanceUID
    assert facts.sop_instance_uid != ds.ReferencedImageSequence[0].SOPInstanceUID
    assert facts.study_instance_uid == ds.StudyInstanceUID
    assert facts.study_instance_uid != ds.RequestAttributesSequence[0].StudyInstanceUID


def test_scan_leaves_out_a_uid_found_only_in_a_sequence(tmp_path: Path) -> None:
    source = make_ct_series(tmp_path, 1, 8, 8)[0]

    def series_only_nested(ds: Dataset) -> None:
        nested = Dataset()
        nested.SeriesInstanceUID = ds.SeriesInstanceUID
        del ds.SeriesInstanceUID
        ds.RequestAttributesSequence = Sequence([nested])
        _undefined_lengths(ds)

    path = _with(source, "nested-series.dcm", series_only_nested)
    assert scan(path).series_instance_uid is None
    assert scan(path) == pydicom_facts(path)


def test_scan_reads_padded_uid_values(tmp_path: Path) -> None:
    source = make_ct_series(tmp_path, 1, 8, 8)[0]
    path = _with(source, "odd.dcm", lambda ds: setattr(ds, "StudyInstanceUID", "1.2.345"))
    assert b"1.2.345\x00" in path.read_bytes()
    assert scan(path).study_instance_uid == "1.2.345"


def test_scan_of_a_file_that_ends_at_an_element_boundary_agrees_with_pydicom(
    files: dict[str, Path], tmp_path: Path
) -> None:
    data = files["nested-undefined-explicit"].read_bytes()
    (group_length,) = struct.unpack_from("<L", data, 140)
    start = 144 + group_length
    pixel_pos = scan_bytes(data).pixel_pos
    boundaries = []
    for cut in [*range(start, start + 3000), pixel_pos]:
        try:
            facts = scan_bytes(data[:cut])
        except ScanError:
            continue
        assert facts.pixel_pos == cut  # an element boundary: no Pixel Data in this file
        boundaries.append(cut)
    assert len(boundaries) >= 10
    for cut in [*boundaries[:: max(1, len(boundaries) // 8)], pixel_pos]:
        path = tmp_path / f"cut-{cut}.dcm"
        path.write_bytes(data[:cut])
        assert scan(path) == pydicom_facts(path)


# --------------------------------------------------------------------------------- ScanError
def test_deflated_explicit_vr_little_endian_is_not_scanned(files: dict[str, Path]) -> None:
    def deflate(ds: Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian

    path = _with(files["ct-explicit"], "deflated.dcm", deflate)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    with pytest.raises(ScanError):
        scan(path)


def _big_endian(source: Path, out: Path) -> Path:
    original = pydicom.dcmread(source)
    ds = Dataset()
    for elem in original:
        ds.add(elem)
    ds.file_meta = copy.deepcopy(original.file_meta)
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds.PixelData = original.pixel_array.byteswap().tobytes()
    ds.save_as(out, enforce_file_format=True)
    return out


def test_explicit_vr_big_endian_is_not_scanned(files: dict[str, Path], tmp_path: Path) -> None:
    path = _big_endian(files["ct-explicit"], tmp_path / "big.dcm")
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    with pytest.raises(ScanError):
        scan(path)


def test_a_file_without_dicm_is_not_scanned(files: dict[str, Path]) -> None:
    data = files["ct-explicit"].read_bytes()
    with pytest.raises(ScanError):
        scan_bytes(data[:128] + b"DICN" + data[132:])
    with pytest.raises(ScanError):
        scan_bytes(data[132:])  # no preamble either


@pytest.mark.parametrize("kind", ["ct-explicit", "ct-implicit", "rle", "nested-undefined-explicit"])
def test_a_file_cut_inside_the_meta_group_is_not_scanned(files: dict[str, Path], kind: str) -> None:
    data = files[kind].read_bytes()
    (group_length,) = struct.unpack_from("<L", data, 140)
    for cut in range(144 + group_length):
        with pytest.raises(ScanError):
            scan_bytes(data[:cut])


@pytest.mark.parametrize("kind", ["ct-explicit", "ct-implicit", "nested-undefined-implicit"])
def test_a_file_cut_inside_a_data_set_element_is_not_scanned(
    files: dict[str, Path], kind: str
) -> None:
    data = files[kind].read_bytes()
    facts = scan_bytes(data)
    sop_at = data.index(facts.sop_instance_uid.encode()) if facts.sop_instance_uid else 0
    for cut in (sop_at + 1, sop_at + 10, facts.pixel_pos - 1, facts.pixel_pos - 3):
        with pytest.raises(ScanError):
            scan_bytes(data[:cut])


def test_an_un_element_of_undefined_length_is_not_scanned(files: dict[str, Path]) -> None:
    path = _raw_before_pixels(files["ct-explicit"], "un.dcm", _un_undefined_length())
    pydicom.dcmread(path, stop_before_pixels=True)  # pydicom reads it
    with pytest.raises(ScanError, match="UN"):
        scan(path)


def test_an_un_element_of_undefined_length_inside_a_sequence_is_not_scanned(
    files: dict[str, Path],
) -> None:
    un = _un_undefined_length()[12:]  # the UN element alone, tag (0099,1010)
    item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + un + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
    sequence = (
        b"\x99\x00\x10\x00LO\x04\x00TEST"
        + b"\x99\x00\x11\x10SQ\x00\x00\xff\xff\xff\xff"
        + item
        + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    )
    path = _raw_before_pixels(files["ct-explicit"], "un-nested.dcm", sequence)
    with pytest.raises(ScanError, match="UN"):
        scan(path)


def test_an_unknown_transfer_syntax_is_not_scanned(files: dict[str, Path]) -> None:
    def other(ds: Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.98"  # encapsulated uncompressed

    def private(ds: Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6"

    for name, change in (("euc.dcm", other), ("private-ts.dcm", private)):
        with pytest.raises(ScanError, match="transfer syntax"):
            scan(_with(files["no-pixels-explicit"], name, change))


def test_garbage_after_a_valid_meta_group_is_not_scanned(files: dict[str, Path]) -> None:
    data = files["ct-explicit"].read_bytes()
    (group_length,) = struct.unpack_from("<L", data, 140)
    meta = data[: 144 + group_length]
    rng = random.Random(5)
    for _ in range(300):
        with pytest.raises(ScanError):
            scan_bytes(meta + rng.randbytes(rng.randint(1, 2000)))


def test_garbage_instead_of_a_part10_file_is_not_scanned() -> None:
    rng = random.Random(6)
    for _ in range(300):
        with pytest.raises(ScanError):
            scan_bytes(rng.randbytes(rng.randint(0, 2000)))


def test_an_overlong_uid_is_not_scanned(files: dict[str, Path]) -> None:
    data = files["ct-explicit"].read_bytes()
    raw = b"1.2.3." + b"4" * 70
    (ds_start,) = struct.unpack_from("<L", data, 140)
    ds_start += 144
    sop = data.index(b"\x08\x00\x18\x00UI", ds_start)
    (length,) = struct.unpack_from("<H", data, sop + 6)
    patched = data[:sop] + b"\x08\x00\x18\x00UI" + struct.pack("<H", len(raw)) + raw
    patched += data[sop + 8 + length :]
    with pytest.raises(ScanError, match="too long"):
        scan_bytes(patched)


def test_sequences_nested_too_deep_are_not_scanned(files: dict[str, Path]) -> None:
    inner = b""
    for _ in range(40):
        inner = (
            b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff"  # (0008,1115) SQ, undefined length
            + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
            + inner
            + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
            + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
        )
    path = _raw_before_pixels(files["ct-explicit"], "deep.dcm", inner)
    with pytest.raises(ScanError, match="deep"):
        scan(path)


def test_a_sequence_without_its_delimiter_is_not_scanned(files: dict[str, Path]) -> None:
    seq = b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\x00\x00\x00\x00"
    data = files["no-pixels-explicit"].read_bytes() + seq
    with pytest.raises(ScanError):
        scan_bytes(data)


def test_mutated_files_raise_only_scan_error_or_scan(files: dict[str, Path]) -> None:
    """Hostile bytes in the data set (not the meta group): a ScanError or a result, never
    another exception, never a hang."""
    data = files["nested-undefined-explicit"].read_bytes()
    (group_length,) = struct.unpack_from("<L", data, 140)
    start = 144 + group_length
    rng = random.Random(8)
    for _ in range(1000):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(start, len(mutated))
            mutated[at] = rng.choice((0x00, 0xFF, 0xFE, 0xE0, 0x10, rng.randrange(0x20, 0x7F)))
        with contextlib.suppress(ScanError):
            scan_bytes(bytes(mutated))


def test_a_non_ascii_uid_is_a_scan_error(files: dict[str, Path]) -> None:
    data = files["ct-explicit"].read_bytes()
    uid = scan_bytes(data).sop_instance_uid
    assert uid
    at = data.rindex(uid.encode()) + 2  # in the data set, not the meta group
    with pytest.raises(ScanError):
        scan_bytes(data[:at] + b"\xff" + data[at + 1 :])


def test_a_meta_group_cutting_an_element_header_is_a_scan_error() -> None:
    meta = b"\x02\x00\x01\x00OB\x00\x00"  # (0002,0001) OB whose 4-byte length is cut off
    data = b"\x00" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00" + struct.pack("<L", 8) + meta
    with pytest.raises(ScanError):
        scan_bytes(data)


# --------------------------------------------------------------------------------- check_part10
def _announced(path: Path) -> tuple[str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.SOPClassUID), str(ds.SOPInstanceUID)


@pytest.mark.parametrize("kind", KINDS)
def test_check_part10_gives_the_same_facts_as_pydicom_alone(
    files: dict[str, Path], kind: str
) -> None:
    path = files[kind]
    sop_class, sop_instance = _announced(path)
    facts = check_part10(path, sop_class, sop_instance)
    assert facts == part10._check_with_pydicom(path, sop_class, sop_instance)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert facts == DatasetFacts(
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
    )


def test_check_part10_reads_files_the_scan_refuses(files: dict[str, Path], tmp_path: Path) -> None:
    un = _raw_before_pixels(files["ct-explicit"], "un-check.dcm", _un_undefined_length())
    big = _big_endian(files["ct-explicit"], tmp_path / "big-check.dcm")

    def deflate(ds: Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian

    deflated = _with(files["ct-explicit"], "deflated-check.dcm", deflate)
    for path in (un, big, deflated):
        sop_class, sop_instance = _announced(path)
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert check_part10(path, sop_class, sop_instance) == DatasetFacts(
            str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.file_meta.TransferSyntaxUID)
        )


@pytest.mark.parametrize("kind", ["ct-explicit", "ct-implicit", "multiframe", "sc-explicit"])
def test_check_part10_refuses_truncated_native_pixel_data(
    files: dict[str, Path], kind: str, tmp_path: Path
) -> None:
    sop_class, sop_instance = _announced(files[kind])
    path = tmp_path / "truncated.dcm"
    path.write_bytes(files[kind].read_bytes()[:-10])
    with pytest.raises(InvalidDatasetError, match="truncated") as caught:
        check_part10(path, sop_class, sop_instance)
    assert caught.value.status == Status.CANNOT_UNDERSTAND


@pytest.mark.parametrize("cut", [10, 8, 4])
@pytest.mark.parametrize("kind", ["rle", "jpeg-encapsulated"])
def test_check_part10_refuses_truncated_encapsulated_pixel_data(
    files: dict[str, Path], kind: str, cut: int, tmp_path: Path
) -> None:
    sop_class, sop_instance = _announced(files[kind])
    path = tmp_path / "truncated.dcm"
    path.write_bytes(files[kind].read_bytes()[:-cut])  # the delimiter (8 bytes) and more
    with pytest.raises(InvalidDatasetError) as caught:
        check_part10(path, sop_class, sop_instance)
    assert caught.value.status == Status.CANNOT_UNDERSTAND


def test_check_part10_refuses_a_pixel_data_header_cut_off(
    files: dict[str, Path], tmp_path: Path
) -> None:
    data = files["ct-explicit"].read_bytes()
    sop_class, sop_instance = _announced(files["ct-explicit"])
    path = tmp_path / "cut-header.dcm"
    for cut in (8, 10, 12, 13):
        path.write_bytes(data[: scan_bytes(data).pixel_pos + cut])
        with pytest.raises(InvalidDatasetError) as caught:
            check_part10(path, sop_class, sop_instance)
        assert caught.value.status == Status.CANNOT_UNDERSTAND


def test_check_part10_refuses_a_file_ending_inside_the_pixel_data_tag(
    files: dict[str, Path], tmp_path: Path
) -> None:
    data = files["ct-explicit"].read_bytes()
    sop_class, sop_instance = _announced(files["ct-explicit"])
    path = tmp_path / "cut-tag.dcm"
    path.write_bytes(data[: scan_bytes(data).pixel_pos + 4])
    with pytest.raises(InvalidDatasetError):
        check_part10(path, sop_class, sop_instance)


def test_a_meta_group_without_its_group_length_is_left_to_pydicom(
    files: dict[str, Path], tmp_path: Path
) -> None:
    source = files["ct-explicit"]
    data = source.read_bytes()
    path = tmp_path / "no-group-length.dcm"
    path.write_bytes(data[:132] + data[144:])
    with pytest.raises(ScanError):
        scan(path)
    sop_class, sop_instance = _announced(source)
    assert check_part10(path, sop_class, sop_instance) == check_part10(
        source, sop_class, sop_instance
    )


@pytest.mark.parametrize("kind", ["ct-explicit", "ct-implicit", "rle", "nested-undefined-explicit"])
def test_check_part10_refuses_another_sop_instance_uid(files: dict[str, Path], kind: str) -> None:
    sop_class, _ = _announced(files[kind])
    with pytest.raises(InvalidDatasetError, match="SOP Instance UID differs") as caught:
        check_part10(files[kind], sop_class, generate_uid())
    assert caught.value.status == Status.CANNOT_UNDERSTAND


def test_check_part10_refuses_another_sop_class_uid(files: dict[str, Path]) -> None:
    _, sop_instance = _announced(files["ct-implicit"])
    with pytest.raises(InvalidDatasetError) as caught:
        check_part10(files["ct-implicit"], MR, sop_instance)
    assert caught.value.status == Status.DATASET_DOES_NOT_MATCH_SOP_CLASS


def test_check_part10_refuses_a_data_set_without_sop_instance_uid(tmp_path: Path) -> None:
    source = make_ct_series(tmp_path, 1, 8, 8)[0]
    sop_class, sop_instance = _announced(source)
    path = _with(source, "no-sop.dcm", lambda ds: delattr(ds, "SOPInstanceUID"))
    with pytest.raises(InvalidDatasetError, match="no SOP Instance UID"):
        check_part10(path, sop_class, sop_instance)


def test_check_part10_refuses_an_invalid_study_uid(tmp_path: Path) -> None:
    source = make_ct_series(tmp_path, 1, 8, 8)[0]
    sop_class, sop_instance = _announced(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid UI value
        path = _with(source, "bad-study.dcm", lambda ds: setattr(ds, "StudyInstanceUID", "1.2.x"))
    assert scan(path).study_instance_uid == "1.2.x"
    with pytest.raises(InvalidDatasetError, match="invalid Study"):
        check_part10(path, sop_class, sop_instance)


def test_check_part10_refuses_garbage(tmp_path: Path) -> None:
    path = tmp_path / "garbage.dcm"
    path.write_bytes(random.Random(3).randbytes(3000))
    with pytest.raises(InvalidDatasetError) as caught:
        check_part10(path, "1.2.3", "1.2.3.4")
    assert caught.value.status == Status.CANNOT_UNDERSTAND
