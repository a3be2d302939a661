"""What the header scan refuses before a C-STORE is acknowledged (issue #14): repeated
attributes, UIDs that are not UIDs, lengths outside their parents, missing or misplaced
delimiters, nesting too deep, bytes after the Pixel Data, Pixel Data framing that contradicts
the transfer syntax -- each with a precise reason, at a bounded cost."""

from __future__ import annotations

import io
import struct
import time
from pathlib import Path

import pytest

from adapter.dicomweb.json_model import is_strict_uid
from adapter.dimse.storage_acceptor import StoreRequest, file_meta
from adapter.part10_scan import MAX_DEPTH, InvalidError, scan_part10_header
from adapter.status import Status
from importer.part10 import InvalidDatasetError, check_part10

CT = "1.2.840.10008.5.1.4.1.1.2"
SOP = "1.2.826.0.1.3680043.8.498.1"
EXPLICIT, IMPLICIT, JPEG = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50"
LONG = {b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC", b"UR", b"OF", b"OD", b"OL", b"OV", b"SV"}
ITEM, ITEM_END, SEQ_END = b"\xfe\xff\x00\xe0", b"\xfe\xff\x0d\xe0", b"\xfe\xff\xdd\xe0"
UNDEF = 0xFFFFFFFF


def el(tag: int, vr: str, value: bytes, length: int | None = None) -> bytes:
    """One Explicit VR LE element; ``length`` overrides the value's own length."""
    n = len(value) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
    if vr.encode() in LONG:
        return head + b"\0\0" + struct.pack("<L", n) + value
    return head + struct.pack("<H", n) + value


def uid(value: str) -> bytes:
    raw = value.encode()
    return raw + b"\0" * (len(raw) % 2)


def item(body: bytes, undefined: bool = False) -> bytes:
    if undefined:
        return ITEM + struct.pack("<L", UNDEF) + body + ITEM_END + b"\0\0\0\0"
    return ITEM + struct.pack("<L", len(body)) + body


def head(sop: bytes | None = None) -> bytes:
    return (
        el(0x00080016, "UI", uid(CT))
        + (el(0x00080018, "UI", uid(SOP)) if sop is None else sop)
        + el(0x00100010, "PN", b"LEAK^NAME ")
        + el(0x00100020, "LO", b"LEAKID")
        + el(0x0020000D, "UI", uid(SOP + ".1"))
        + el(0x0020000E, "UI", uid(SOP + ".2"))
    )


def part10(body: bytes, syntax: str = EXPLICIT) -> bytes:
    request = StoreRequest(CT, SOP, syntax, "SCU", "127.0.0.1:1")
    return file_meta(request, "1.2.3.4", "TEST") + body


def pixels(n: int = 16) -> bytes:
    return el(0x00280010, "US", b"\4\0") + el(0x7FE00010, "OW", bytes(n))


def refused(tmp_path: Path, body: bytes, syntax: str = EXPLICIT) -> str:
    path = tmp_path / "x.dcm"
    path.write_bytes(part10(body, syntax))
    with pytest.raises(InvalidDatasetError) as caught:
        check_part10(path, CT, SOP)
    assert caught.value.status == Status.CANNOT_UNDERSTAND
    assert "LEAK" not in caught.value.comment
    return caught.value.comment


def accepted(tmp_path: Path, body: bytes, syntax: str = EXPLICIT) -> None:
    path = tmp_path / "ok.dcm"
    path.write_bytes(part10(body, syntax))
    check_part10(path, CT, SOP)


def test_a_well_formed_hand_made_data_set_is_accepted(tmp_path: Path) -> None:
    accepted(tmp_path, head() + pixels())
    nested = el(0x00081140, "SQ", item(el(0x00081155, "UI", uid(SOP + ".9"))))
    accepted(tmp_path, head() + nested + pixels())


def test_a_repeated_sop_instance_uid_is_refused(tmp_path: Path) -> None:
    cs_first = el(0x00080018, "CS", b"ORIGINAL\\PRIMARY\\AXIAL") + el(0x00080018, "UI", uid(SOP))
    assert "(0008,0018)" in refused(tmp_path, head(cs_first) + pixels())
    twice = el(0x00080018, "UI", uid("1.2.3.4")) + el(0x00080018, "UI", uid(SOP))
    assert refused(tmp_path, head(twice) + pixels()) == "malformed: repeated attribute (0008,0018)"


def test_a_repeated_attribute_inside_an_item_is_refused(tmp_path: Path) -> None:
    body = el(0x00080100, "SH", b"A ") + el(0x00080100, "SH", b"B ")
    comment = refused(tmp_path, head() + el(0x00081140, "SQ", item(body)) + pixels())
    assert comment == "malformed: repeated attribute (0008,0100)"


@pytest.mark.parametrize("length", [432, 744])
def test_a_sop_instance_uid_running_into_the_next_elements_is_refused(
    tmp_path: Path, length: int
) -> None:
    rest = head()[len(el(0x00080016, "UI", uid(CT))) + len(el(0x00080018, "UI", uid(SOP))) :]
    rest += pixels(800)
    sop = el(0x00080018, "UI", uid(SOP), length=length)
    assert "SOP Instance UID too long" in refused(
        tmp_path, el(0x00080016, "UI", uid(CT)) + sop + rest
    )


@pytest.mark.parametrize("bad", ["1.02.3", " 1.2.3", "1.2.3.", "1..2", "1.2.LEAKID"])
def test_uids_that_are_not_uids_are_refused(tmp_path: Path, bad: str) -> None:
    assert not is_strict_uid(bad)
    study = el(0x0020000D, "UI", uid(bad))
    body = head().replace(el(0x0020000D, "UI", uid(SOP + ".1")), study)
    assert "Study Instance UID" in refused(tmp_path, body + pixels())
    nested = el(0x00081140, "SQ", item(el(0x00081155, "UI", uid(bad))))
    if bad not in ("1.02.3", " 1.2.3"):  # inside sequences: digits and dots (legacy UIDs)
        assert refused(tmp_path, head() + nested + pixels()) == (
            "malformed: (0008,1155) is not a valid UID"
        )


def test_is_strict_uid_accepts_zero_components() -> None:
    assert is_strict_uid("1.2.0.3") and is_strict_uid("0") and not is_strict_uid("1." * 40)


def test_an_element_longer_than_the_file_is_refused(tmp_path: Path) -> None:
    body = head() + el(0x00081030, "LO", b"STUDY ", length=60000) + b"x" * 20
    assert refused(tmp_path, body).startswith("truncated data set: (0008,1030) needs 60000")
    # a 4-byte length, the classic "length field corrupt"
    assert refused(tmp_path, head() + el(0x00091010, "OB", b"ab", length=0x7FFFFFF0))


def test_bytes_after_the_pixel_data_are_refused(tmp_path: Path) -> None:
    for tail in (bytes(64), b"\xab" * 64, b"\x08\x00\x20\x00DA\x08\x0020240101"):
        assert refused(tmp_path, head() + pixels() + tail)
    accepted(tmp_path, head() + pixels() + el(0xFFFCFFFC, "OB", bytes(64)))  # trailing padding


def test_lengths_outside_their_parents_are_refused(tmp_path: Path) -> None:
    inner = el(0x00080100, "SH", b"CODE", length=40)  # runs past its item
    assert "past" in refused(tmp_path, head() + el(0x00081140, "SQ", item(inner)) + pixels())
    big_item = ITEM + struct.pack("<L", 400) + el(0x00080100, "SH", b"CODE")
    seq = el(0x00081140, "SQ", big_item)  # item longer than its sequence
    assert "item longer than its sequence" in refused(tmp_path, head() + seq + pixels())


def test_missing_and_misplaced_delimiters_are_refused(tmp_path: Path) -> None:
    open_seq = el(0x00081140, "SQ", b"", length=UNDEF) + item(el(0x00080100, "SH", b"AB"))
    assert refused(tmp_path, head() + open_seq + pixels())  # no Sequence Delimitation Item
    assert "where a data element belongs" in refused(
        tmp_path, head() + ITEM_END + b"\0\0\0\0" + pixels()
    )
    unclosed = el(0x00081140, "SQ", b"", length=UNDEF) + ITEM + struct.pack("<L", UNDEF)
    assert refused(tmp_path, head() + unclosed + el(0x00080100, "SH", b"AB"))


def test_undefined_length_on_a_value_is_refused(tmp_path: Path) -> None:
    body = head() + el(0x00091010, "UT", b"", length=UNDEF) + b"text" + SEQ_END + b"\0\0\0\0"
    assert refused(tmp_path, body) == "malformed: (0009,1010) UT of undefined length"


@pytest.mark.parametrize("undefined", [False, True])
def test_sequences_nested_too_deep_are_refused_not_left_to_pydicom(
    tmp_path: Path, undefined: bool
) -> None:
    inner = el(0x00080100, "SH", b"AB")
    for _ in range(MAX_DEPTH + 1):
        body = item(inner, undefined)
        inner = (
            el(0x00081140, "SQ", b"", length=UNDEF) + body + SEQ_END + b"\0\0\0\0"
            if undefined
            else el(0x00081140, "SQ", body)
        )
    assert refused(tmp_path, head() + inner + pixels()) == (
        f"malformed: sequences nested deeper than {MAX_DEPTH}"
    )


def test_fixed_size_values_of_a_wrong_length_are_refused(tmp_path: Path) -> None:
    body = head().replace(el(0x00100020, "LO", b"LEAKID"), b"") + el(0x00280010, "US", b"\4\0\0")
    assert refused(tmp_path, body + el(0x7FE00010, "OW", bytes(4))) == (
        "malformed: (0028,0010) US of length 3"
    )


def test_an_unknown_vr_is_refused(tmp_path: Path) -> None:
    assert refused(tmp_path, head() + el(0x00081030, "ZZ", b"AB")) == (
        "malformed: (0008,1030) has no valid VR"
    )


def test_native_pixel_data_on_an_encapsulated_context_is_refused(tmp_path: Path) -> None:
    assert refused(tmp_path, head() + pixels(), JPEG) == (
        "malformed: native Pixel Data in an encapsulated transfer syntax"
    )
    frags = item(b"") + item(b"\xff\xd8\xff\xd9") + SEQ_END + b"\0\0\0\0"
    encapsulated = el(0x00280010, "US", b"\4\0") + el(0x7FE00010, "OB", b"", UNDEF) + frags
    accepted(tmp_path, head() + encapsulated, JPEG)
    assert refused(tmp_path, head() + encapsulated) == (
        "malformed: encapsulated Pixel Data in a native transfer syntax"
    )
    assert refused(tmp_path, head() + encapsulated + b"\0" * 64, JPEG)  # after the last fragment


def test_implicit_vr_data_sets_are_walked_too(tmp_path: Path) -> None:
    def iel(tag: int, value: bytes, length: int | None = None) -> bytes:
        n = len(value) if length is None else length
        return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, n) + value

    ids = iel(0x0020000D, uid(SOP + ".1")) + iel(0x0020000E, uid(SOP + ".2"))
    good = iel(0x00080016, uid(CT)) + iel(0x00080018, uid(SOP)) + ids + iel(0x7FE00010, bytes(8))
    accepted(tmp_path, good, IMPLICIT)
    twice = iel(0x00080016, uid(CT)) + iel(0x00080018, uid(SOP)) + iel(0x00080018, uid(SOP))
    assert "repeated attribute" in refused(tmp_path, twice, IMPLICIT)
    odd = good.replace(iel(0x7FE00010, bytes(8)), iel(0x00280010, b"\4\0\0"))
    assert refused(tmp_path, odd, IMPLICIT) == "malformed: (0028,0010) US of length 3"


def test_a_gigabyte_instance_is_checked_in_a_few_reads(tmp_path: Path) -> None:
    size = 1 << 30
    path = tmp_path / "big.dcm"
    with open(path, "wb") as fp:
        fp.write(part10(head() + el(0x00280010, "US", b"\4\0")))
        fp.write(el(0x7FE00010, "OW", b"", length=size))
        fp.truncate(fp.tell() + size)  # sparse
    reads = 0

    class Counting(io.FileIO):
        def read(self, n: int = -1) -> bytes:
            nonlocal reads
            reads += 1
            return super().read(n)

    started = time.perf_counter()
    with Counting(path) as fp:
        facts = scan_part10_header(fp, path.stat().st_size)  # type: ignore[arg-type]
    assert facts.sop_instance_uid == SOP
    assert reads < 30 and time.perf_counter() - started < 0.5
    with pytest.raises(InvalidError):
        with open(path, "r+b") as fp:
            fp.seek(0, 2)
            fp.write(b"\0" * 8)
        with open(path, "rb") as raw:
            scan_part10_header(raw, path.stat().st_size)


@pytest.mark.parametrize("bad", ["1.02.3", " 1.2.3", "1.2.3 x"])
def test_an_affected_sop_instance_uid_that_is_not_a_uid_is_refused_before_the_data(
    bad: str,
) -> None:
    from importer.store_scp import StoreScp

    scp = StoreScp(spool=None, provenance=None)  # type: ignore[arg-type]
    result = scp.precheck(StoreRequest(CT, bad, EXPLICIT, "SCU", "127.0.0.1:1"))
    assert result is not None
    assert (result.status, result.comment) == (0xC000, "invalid AffectedSOPInstanceUID (PS3.5 9.1)")
    assert scp.precheck(StoreRequest(CT, "1.2.0.3", EXPLICIT, "SCU", "127.0.0.1:1")) is None


def test_a_data_set_without_its_sop_class_uid_is_refused_before_the_ack(tmp_path: Path) -> None:
    """Found by the 1,000-data-set fuzz run: a bit flip turned (0008,0016) into (0008,FF16);
    acknowledged, the store then refused it (Type 1, PS3.3 C.12.1)."""
    body = head().replace(struct.pack("<HH", 0x0008, 0x0016), struct.pack("<HH", 0x0008, 0xFF16))
    path = tmp_path / "x.dcm"
    path.write_bytes(part10(body + pixels()))
    with pytest.raises(InvalidDatasetError) as caught:
        check_part10(path, CT, SOP)
    assert caught.value.status == Status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert caught.value.comment == "data set has no SOP Class UID"
