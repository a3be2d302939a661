"""DIMSE command sets of the native storage acceptor (PS3.7 E.1), checked against the
command sets pynetdicom encodes and decodes."""

from __future__ import annotations

import contextlib
import random
import struct
from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dimse_messages import C_ECHO_RQ, C_ECHO_RSP, C_FIND_RQ, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_STORE
from pynetdicom.dsutils import decode, encode

from adapter.dimse import command_set
from adapter.dimse.command_set import (
    NO_DATA_SET,
    Command,
    CommandError,
    decode_command,
    encode_c_echo_rsp,
    encode_c_store_rsp,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"
INSTANCE = "1.2.826.0.1.3680043.8.498.12345"  # odd length: padded with a NUL


# --------------------------------------------------------------------------------- helpers
def store_rq(message_id: int = 7, sop_class: str = CT, sop_instance: str = INSTANCE) -> bytes:
    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = sop_instance
    primitive.Priority = 0
    primitive.DataSet = BytesIO(b"\x08\x00\x18\x00")
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    return bytes(encode(message.command_set, True, True))


def echo_rq(message_id: int = 3) -> bytes:
    primitive = C_ECHO()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = VERIFICATION
    message = C_ECHO_RQ()
    message.primitive_to_message(primitive)
    return bytes(encode(message.command_set, True, True))


def command_bytes(**elements: object) -> bytes:
    """A command set from keyword -> value, group length first, via pydicom."""
    ds = Dataset()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    body = bytes(encode(ds, True, True))
    ds.CommandGroupLength = len(body)
    return bytes(encode(ds, True, True))


def decoded(data: bytes) -> Dataset:
    ds = decode(BytesIO(data), True, True)
    assert isinstance(ds, Dataset)
    return ds


def element(tag_element: int, value: bytes, group: int = 0x0000) -> bytes:
    return struct.pack("<HHL", group, tag_element, len(value)) + value


def store_request(
    message_id: int = 7, sop_class: str = CT, sop_instance: str = INSTANCE
) -> Command:
    return Command(command_set.C_STORE_RQ, message_id, True, sop_class, sop_instance)


# --------------------------------------------------------------------------------- decode
def test_decode_reads_a_pynetdicom_c_store_rq() -> None:
    command = decode_command(store_rq(message_id=4242))
    assert command == Command(
        command_field=0x0001,
        message_id=4242,
        has_data_set=True,
        affected_sop_class_uid=CT,
        affected_sop_instance_uid=INSTANCE,
    )


def test_decode_reads_a_pynetdicom_c_echo_rq_without_data_set() -> None:
    command = decode_command(echo_rq(message_id=65535))
    assert command.command_field == command_set.C_ECHO_RQ == 0x0030
    assert command.message_id == 65535
    assert command.has_data_set is False
    assert command.affected_sop_class_uid == VERIFICATION
    assert command.affected_sop_instance_uid == ""


def test_decode_reads_commands_it_does_not_serve() -> None:
    primitive = C_FIND()
    primitive.MessageID = 9
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    primitive.Priority = 2
    primitive.Identifier = BytesIO(b"\x08\x00\x52\x00")
    message = C_FIND_RQ()
    message.primitive_to_message(primitive)
    command = decode_command(bytes(encode(message.command_set, True, True)))
    assert (command.command_field, command.message_id, command.has_data_set) == (0x0020, 9, True)


@pytest.mark.parametrize("data_set_type", [0x0000, 0x0001, 0x0102, 0xFEFE])
def test_decode_treats_any_type_but_0101_as_a_data_set(data_set_type: int) -> None:
    data = command_bytes(CommandField=1, MessageID=1, CommandDataSetType=data_set_type)
    assert decode_command(data).has_data_set is True


def test_decode_does_not_need_the_group_length_or_uids() -> None:
    data = (
        element(0x0100, struct.pack("<H", 0x0030))
        + element(0x0110, struct.pack("<H", 12))
        + element(0x0800, struct.pack("<H", NO_DATA_SET))
    )
    assert decode_command(data) == Command(0x0030, 12, False, "", "")


def test_decode_strips_uid_padding_spaces_and_nuls() -> None:
    data = command_bytes(
        AffectedSOPClassUID=CT,
        CommandField=1,
        MessageID=1,
        CommandDataSetType=1,
        AffectedSOPInstanceUID="1.2.3",
    )
    assert data.endswith(b"1.2.3\x00")
    command = decode_command(data)
    assert (command.affected_sop_class_uid, command.affected_sop_instance_uid) == (CT, "1.2.3")
    raw = data[:-1] + b" "
    assert decode_command(raw).affected_sop_instance_uid == "1.2.3"


def test_decode_keeps_non_uid_text_untrusted_but_decoded() -> None:
    data = (
        element(0x0002, b"not a uid\xff\x00")
        + element(0x0100, b"\x01\x00")
        + element(0x0110, b"\x01\x00")
        + element(0x0800, b"\x00\x00")
    )
    assert decode_command(data).affected_sop_class_uid == "not a uid\ufffd"


# --------------------------------------------------------------------------------- decode: hostile
def test_decode_rejects_every_truncation_inside_an_element() -> None:
    data = store_rq()
    boundaries = set()
    pos = 0
    while pos < len(data):
        boundaries.add(pos)
        (length,) = struct.unpack_from("<L", data, pos + 4)
        pos += 8 + length
    for cut in range(len(data)):
        if cut in boundaries:
            continue
        with pytest.raises(CommandError):
            decode_command(data[:cut])


def test_decode_rejects_an_element_header_cut_off() -> None:
    with pytest.raises(CommandError, match="cut off"):
        decode_command(echo_rq() + b"\x00\x00\x00\x09")


def test_decode_rejects_an_element_length_past_the_end() -> None:
    data = echo_rq() + struct.pack("<HHL", 0x0000, 0x0902, 100) + b"short"
    with pytest.raises(CommandError, match="longer"):
        decode_command(data)


def test_decode_rejects_a_huge_element_length_quickly() -> None:
    data = struct.pack("<HHL", 0x0000, 0x0000, 0xFFFFFFFF) + bytes(4)
    with pytest.raises(CommandError):
        decode_command(data)


@pytest.mark.parametrize("group", [0x0002, 0x0008, 0xFFFE])
def test_decode_rejects_an_element_outside_group_0000(group: int) -> None:
    data = echo_rq() + element(0x0018, b"1.2.3\x00", group=group)
    with pytest.raises(CommandError, match="group"):
        decode_command(data)


@pytest.mark.parametrize(
    "missing", ["CommandField", "MessageID", "CommandDataSetType"], ids=str.lower
)
def test_decode_rejects_a_missing_us_element(missing: str) -> None:
    values: dict[str, object] = {
        "AffectedSOPClassUID": CT,
        "CommandField": 1,
        "MessageID": 1,
        "CommandDataSetType": 1,
    }
    del values[missing]
    with pytest.raises(CommandError, match="missing"):
        decode_command(command_bytes(**values))


def test_decode_rejects_a_command_field_of_the_wrong_size() -> None:
    data = (
        element(0x0100, b"\x01\x00\x00\x00")
        + element(0x0110, b"\x01\x00")
        + element(0x0800, b"\x01\x01")
    )
    with pytest.raises(CommandError):
        decode_command(data)


def test_decode_of_an_empty_command_is_an_error() -> None:
    with pytest.raises(CommandError):
        decode_command(b"")


def test_decode_of_mutated_commands_raises_only_command_error() -> None:
    rng = random.Random(7)
    original = store_rq()
    for _ in range(2000):
        data = bytearray(original)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        with contextlib.suppress(CommandError):
            decode_command(bytes(data[: rng.randint(0, len(data))]))


# --------------------------------------------------------------------------------- C-STORE-RSP
def test_store_rsp_decodes_with_pynetdicom() -> None:
    data = encode_c_store_rsp(store_request(message_id=321), 0x0000)
    ds = decoded(data)
    assert ds.CommandGroupLength == len(data) - 12
    assert ds.AffectedSOPClassUID == CT
    assert ds.CommandField == 0x8001
    assert ds.MessageIDBeingRespondedTo == 321
    assert ds.CommandDataSetType == 0x0101
    assert ds.Status == 0x0000
    assert ds.AffectedSOPInstanceUID == INSTANCE
    assert "ErrorComment" not in ds
    assert "MessageID" not in ds
    assert [elem.tag.element for elem in ds] == sorted(elem.tag.element for elem in ds)


def test_store_rsp_becomes_a_pynetdicom_primitive() -> None:
    message = C_STORE_RSP()
    message.command_set = decoded(encode_c_store_rsp(store_request(9), 0xB007, "coerced"))
    primitive = message.message_to_primitive()
    assert primitive.Status == 0xB007
    assert primitive.MessageIDBeingRespondedTo == 9
    assert primitive.AffectedSOPClassUID == CT
    assert primitive.AffectedSOPInstanceUID == INSTANCE
    assert primitive.ErrorComment == "coerced"


def test_store_rsp_pads_odd_uids_with_a_nul() -> None:
    data = encode_c_store_rsp(store_request(sop_instance="1.2.3"), 0)
    assert data.endswith(element(0x1000, b"1.2.3\x00"))
    assert len(data) % 2 == 0


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xA900, 0xC001, 0xB000, 0x0122, 0xFFFF])
def test_store_rsp_carries_the_status(status: int) -> None:
    assert decoded(encode_c_store_rsp(store_request(), status)).Status == status


@pytest.mark.parametrize(
    ("comment", "expected_raw"),
    [
        ("odd", b"odd "),
        ("even", b"even"),
        ("a\\b", b"a/b "),
        ("non-ascii: \u00e9\u4e2d", b"non-ascii: ?? "),
        ("x" * 100, b"x" * 64),
        ("y" * 65, b"y" * 64),
        ("z" * 63, b"z" * 63 + b" "),
    ],
)
def test_store_rsp_error_comment_is_a_short_even_lo(comment: str, expected_raw: bytes) -> None:
    data = encode_c_store_rsp(store_request(), 0xC001, comment)
    ds = decoded(data)
    assert struct.pack("<HHL", 0, 0x0902, len(expected_raw)) + expected_raw in data
    assert ds.ErrorComment == expected_raw.decode().rstrip(" ")
    assert ds.CommandGroupLength == len(data) - 12


@pytest.mark.parametrize("comment", [None, ""])
def test_store_rsp_leaves_out_an_empty_error_comment(comment: str | None) -> None:
    assert "ErrorComment" not in decoded(encode_c_store_rsp(store_request(), 0xC001, comment))


def test_store_rsp_without_echoed_uids_leaves_both_out() -> None:
    request = store_request(sop_class="not a uid", sop_instance="1.2.\x01")
    data = encode_c_store_rsp(request, 0xA900, "invalid UID", echo_uids=False)
    ds = decoded(data)
    assert "AffectedSOPClassUID" not in ds
    assert "AffectedSOPInstanceUID" not in ds
    assert [ds.CommandField, ds.MessageIDBeingRespondedTo, ds.Status] == [0x8001, 7, 0xA900]
    assert ds.CommandDataSetType == 0x0101
    assert ds.ErrorComment == "invalid UID"
    assert ds.CommandGroupLength == len(data) - 12


# --------------------------------------------------------------------------------- C-ECHO-RSP
def test_echo_rsp_decodes_with_pynetdicom() -> None:
    request = decode_command(echo_rq(message_id=55))
    data = encode_c_echo_rsp(request)
    ds = decoded(data)
    assert ds.CommandGroupLength == len(data) - 12
    assert ds.AffectedSOPClassUID == VERIFICATION
    assert ds.CommandField == 0x8030
    assert ds.MessageIDBeingRespondedTo == 55
    assert ds.CommandDataSetType == 0x0101
    assert ds.Status == 0x0000
    assert "AffectedSOPInstanceUID" not in ds
    message = C_ECHO_RSP()
    message.command_set = ds
    primitive = message.message_to_primitive()
    assert (primitive.MessageIDBeingRespondedTo, primitive.Status) == (55, 0)


def test_echo_rsp_carries_a_given_status() -> None:
    request = decode_command(echo_rq())
    assert decoded(encode_c_echo_rsp(request, 0x0211)).Status == 0x0211
