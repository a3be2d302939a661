"""DIMSE command sets (PS3.7 E.1, 9.3.1 C-STORE, 9.3.5 C-ECHO): group 0000 in Implicit VR
Little Endian, decoded and encoded by hand for the native storage acceptor (a command is a
handful of fixed elements; going through a generic data set costs more than the instance's
network time).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from adapter.status import Status

__all__ = [
    "C_ECHO_RQ",
    "C_STORE_RQ",
    "C_STORE_RSP",
    "NO_DATA_SET",
    "Command",
    "CommandError",
    "Response",
    "decode_command",
    "decode_elements",
    "decode_response",
    "encode_c_echo_rsp",
    "encode_c_store_rq",
    "encode_c_store_rsp",
]

C_STORE_RQ: Final = 0x0001
C_STORE_RSP: Final = 0x8001
C_ECHO_RQ: Final = 0x0030
C_ECHO_RSP: Final = 0x8030
NO_DATA_SET: Final = 0x0101  # CommandDataSetType "no data set" (PS3.7 E.1)

_MAX_ERROR_COMMENT = 64  # LO


class CommandError(ValueError):
    """The bytes are not a decodable command set."""


@dataclass(frozen=True)
class Command:
    """The command elements a Storage/Verification SCP reads (raw strings, untrusted)."""

    command_field: int
    message_id: int
    has_data_set: bool
    affected_sop_class_uid: str
    affected_sop_instance_uid: str


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\x00 ").decode("ascii", "replace")


def decode_elements(data: bytes) -> dict[int, bytes]:
    """Element number -> raw value of an Implicit VR LE group-0000 command set."""
    values: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if pos + 8 > end:
            raise CommandError("command element header cut off")
        group, element, length = struct.unpack_from("<HHL", data, pos)
        pos += 8
        if group != 0x0000:
            raise CommandError(f"command set holds a group 0x{group:04X} element")
        if pos + length > end:
            raise CommandError(f"command element (0000,{element:04X}) longer than the set")
        values[element] = data[pos : pos + length]
        pos += length
    return values


def _us(values: dict[int, bytes], element: int) -> int:
    raw = values.get(element)
    if raw is None or len(raw) != 2:
        raise CommandError(f"command element (0000,{element:04X}) missing or not US")
    return int(struct.unpack("<H", raw)[0])


def decode_command(data: bytes) -> Command:
    """Decode a request's command set; only the elements we use are kept."""
    values = decode_elements(data)

    def us(element: int) -> int:
        return _us(values, element)

    return Command(
        command_field=us(0x0100),
        message_id=us(0x0110),
        has_data_set=us(0x0800) != NO_DATA_SET,
        affected_sop_class_uid=_text(values.get(0x0002, b"")),
        affected_sop_instance_uid=_text(values.get(0x1000, b"")),
    )


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0x0000, element, len(value)) + value


def _ui(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _group(elements: list[bytes]) -> bytes:
    body = b"".join(elements)
    return _element(0x0000, struct.pack("<L", len(body))) + body


def encode_c_store_rsp(
    request: Command, status: int, error_comment: str | None = None, *, echo_uids: bool = True
) -> bytes:
    """C-STORE-RSP (PS3.7 9.3.1.2); ``echo_uids`` False leaves out Affected SOP Class/Instance
    UID (both optional) when the request's were not UIDs."""
    elements: list[bytes] = []
    if echo_uids:
        elements.append(_element(0x0002, _ui(request.affected_sop_class_uid)))
    elements += [
        _element(0x0100, struct.pack("<H", C_STORE_RSP)),
        _element(0x0120, struct.pack("<H", request.message_id)),
        _element(0x0800, struct.pack("<H", NO_DATA_SET)),
        _element(0x0900, struct.pack("<H", status & 0xFFFF)),
    ]
    if error_comment:
        text = error_comment.replace("\\", "/").encode("ascii", "replace")[:_MAX_ERROR_COMMENT]
        elements.append(_element(0x0902, text + b" " if len(text) % 2 else text))
    if echo_uids:
        elements.append(_element(0x1000, _ui(request.affected_sop_instance_uid)))
    return _group(elements)


def encode_c_echo_rsp(request: Command, status: int = Status.SUCCESS) -> bytes:
    """C-ECHO-RSP (PS3.7 9.3.5.2)."""
    return _group(
        [
            _element(0x0002, _ui(request.affected_sop_class_uid)),
            _element(0x0100, struct.pack("<H", C_ECHO_RSP)),
            _element(0x0120, struct.pack("<H", request.message_id)),
            _element(0x0800, struct.pack("<H", NO_DATA_SET)),
            _element(0x0900, struct.pack("<H", status & 0xFFFF)),
        ]
    )


@dataclass(frozen=True)
class Response:
    """The elements of a C-STORE-RSP a requestor reads (PS3.7 9.3.1.2)."""

    command_field: int
    message_id_being_responded_to: int
    status: int
    error_comment: str | None


def decode_response(data: bytes) -> Response:
    """Decode a response's command set."""
    values = decode_elements(data)
    comment = values.get(0x0902)
    return Response(
        command_field=_us(values, 0x0100),
        message_id_being_responded_to=_us(values, 0x0120),
        status=_us(values, 0x0900),
        error_comment=_text(comment) if comment is not None else None,
    )


def encode_c_store_rq(
    message_id: int, sop_class_uid: str, sop_instance_uid: str, priority: int = 0
) -> bytes:
    """C-STORE-RQ (PS3.7 9.3.1.1) announcing a data set."""
    return _group(
        [
            _element(0x0002, _ui(sop_class_uid)),
            _element(0x0100, struct.pack("<H", C_STORE_RQ)),
            _element(0x0110, struct.pack("<H", message_id)),
            _element(0x0700, struct.pack("<H", priority)),
            _element(0x0800, struct.pack("<H", 0x0001)),
            _element(0x1000, _ui(sop_instance_uid)),
        ]
    )
