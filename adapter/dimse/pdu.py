"""DICOM Upper Layer PDUs (PS3.8 9.3) for the native storage acceptor: parse an
A-ASSOCIATE-RQ, encode the few PDUs an acceptor sends, read PDU and PDV headers.

Only what an association acceptor for C-STORE/C-ECHO needs; everything else (role selection,
user identity, query/retrieve) stays with pynetdicom. Parsing never trusts a length: a PDU that
does not add up raises :class:`PduError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "APPLICATION_CONTEXT_NAME",
    "A_ABORT",
    "A_ASSOCIATE_AC",
    "A_ASSOCIATE_RJ",
    "A_ASSOCIATE_RQ",
    "A_RELEASE_RP",
    "A_RELEASE_RQ",
    "P_DATA_TF",
    "AssociateAccept",
    "AssociateRequest",
    "PduError",
    "ProposedContext",
    "encode_abort",
    "encode_associate_ac",
    "encode_associate_rj",
    "encode_associate_rq",
    "encode_p_data",
    "encode_release_rp",
    "encode_release_rq",
    "parse_associate_ac",
    "parse_associate_rq",
]

# PDU types (PS3.8 9.3.1)
A_ASSOCIATE_RQ: Final = 0x01
A_ASSOCIATE_AC: Final = 0x02
A_ASSOCIATE_RJ: Final = 0x03
P_DATA_TF: Final = 0x04
A_RELEASE_RQ: Final = 0x05
A_RELEASE_RP: Final = 0x06
A_ABORT: Final = 0x07

APPLICATION_CONTEXT_NAME: Final = "1.2.840.10008.3.1.1.1"  # PS3.7 A.2.1

# Presentation context results (PS3.8 9.3.3.2)
ACCEPTANCE: Final = 0
ABSTRACT_SYNTAX_NOT_SUPPORTED: Final = 3
TRANSFER_SYNTAXES_NOT_SUPPORTED: Final = 4

#: User Information sub-items (PS3.7 D.3.3) an acceptor may leave unanswered: maximum length,
#: implementation class UID and version, asynchronous operations window (1/1 by default),
#: SOP class (common) extended negotiation. Any other (role selection, user identity) means the
#: requestor wants something only the full stack answers.
PLAIN_USER_ITEMS: Final = frozenset({0x51, 0x52, 0x53, 0x55, 0x56, 0x57})

_HEADER = struct.Struct(">BBL")


class PduError(ValueError):
    """The bytes are not a well-formed PDU of the expected kind."""


@dataclass(frozen=True)
class ProposedContext:
    """One Presentation Context Item of an A-ASSOCIATE-RQ (PS3.8 9.3.2.2)."""

    id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True)
class AssociateRequest:
    """The parts of an A-ASSOCIATE-RQ an acceptor answers (PS3.8 9.3.2)."""

    called_ae: str
    calling_ae: str
    raw_called_ae: bytes
    raw_calling_ae: bytes
    application_context: str
    contexts: tuple[ProposedContext, ...]
    max_pdu_length: int  # 0 = unlimited (PS3.8 D.1)
    user_item_types: frozenset[int] = field(default_factory=frozenset)
    protocol_version: int = 1  # a bit field: bit 0 is version 1 (PS3.8 9.3.2)
    has_user_information: bool = True  # the User Information Item is mandatory (PS3.8 9.3.2)


def _uid(raw: bytes) -> str:
    return raw.rstrip(b"\x00 ").decode("ascii", "replace")


def _items(data: bytes, start: int, end: int) -> list[tuple[int, bytes]]:
    """Split ``data[start:end]`` into (item type, value) with 2-byte lengths (PS3.8 9.3.2)."""
    items: list[tuple[int, bytes]] = []
    pos = start
    while pos < end:
        if pos + 4 > end:
            raise PduError("item header cut off")
        kind, _, length = struct.unpack_from(">BBH", data, pos)
        if pos + 4 + length > end:
            raise PduError(f"item 0x{kind:02X} longer than its PDU")
        items.append((kind, data[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return items


def parse_associate_rq(pdu: bytes) -> AssociateRequest:
    """Parse a whole A-ASSOCIATE-RQ PDU (header included)."""
    if len(pdu) < 74:
        raise PduError("A-ASSOCIATE-RQ shorter than its fixed part")
    kind, _, length = _HEADER.unpack_from(pdu, 0)
    if kind != A_ASSOCIATE_RQ or length != len(pdu) - 6:
        raise PduError("not an A-ASSOCIATE-RQ of the announced length")
    raw_called, raw_calling = pdu[10:26], pdu[26:42]
    app_context = ""
    contexts: list[ProposedContext] = []
    max_pdu = 0
    user_types: set[int] = set()
    has_user = False
    for kind, value in _items(pdu, 74, len(pdu)):
        if kind == 0x10:
            app_context = _uid(value)
        elif kind == 0x20:
            if len(value) < 4:
                raise PduError("presentation context item cut off")
            abstract = ""
            syntaxes: list[str] = []
            for sub, sub_value in _items(value, 4, len(value)):
                if sub == 0x30:
                    abstract = _uid(sub_value)
                elif sub == 0x40:
                    syntaxes.append(_uid(sub_value))
            if not abstract:  # PS3.8 9.3.2.2 (pynetdicom's acceptor dies on one)
                raise PduError(f"presentation context {value[0]} without an abstract syntax")
            contexts.append(ProposedContext(value[0], abstract, tuple(syntaxes)))
        elif kind == 0x50:
            has_user = True
            for sub, sub_value in _items(value, 0, len(value)):
                user_types.add(sub)
                if sub == 0x51:
                    if len(sub_value) != 4:
                        raise PduError("maximum length sub-item is not 4 bytes")
                    (max_pdu,) = struct.unpack(">L", sub_value)
    return AssociateRequest(
        called_ae=raw_called.decode("ascii", "replace").strip(),
        calling_ae=raw_calling.decode("ascii", "replace").strip(),
        raw_called_ae=bytes(raw_called),
        raw_calling_ae=bytes(raw_calling),
        application_context=app_context,
        contexts=tuple(contexts),
        max_pdu_length=max_pdu,
        user_item_types=frozenset(user_types),
        protocol_version=struct.unpack_from(">H", pdu, 6)[0],
        has_user_information=has_user,
    )


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def _pdu(kind: int, body: bytes) -> bytes:
    return _HEADER.pack(kind, 0, len(body)) + body


def encode_associate_ac(
    request: AssociateRequest,
    results: dict[int, tuple[int, str]],
    *,
    max_pdu_length: int,
    implementation_class_uid: str,
    implementation_version_name: str,
) -> bytes:
    """A-ASSOCIATE-AC (PS3.8 9.3.3): per proposed context id, (result, transfer syntax)."""
    items = [_item(0x10, APPLICATION_CONTEXT_NAME.encode("ascii"))]
    for cx in request.contexts:
        result, syntax = results[cx.id]
        # a refused context's syntax is not significant (PS3.8 9.3.3.2): the peer's, made ASCII
        sub = _item(0x40, syntax.encode("ascii", "replace"))
        items.append(_item(0x21, bytes([cx.id, 0, result, 0]) + sub))
    user = _item(0x51, struct.pack(">L", max_pdu_length))
    user += _item(0x52, implementation_class_uid.encode("ascii"))
    if implementation_version_name:
        user += _item(0x55, implementation_version_name.encode("ascii")[:16])
    items.append(_item(0x50, user))
    fixed = struct.pack(">HH", 1, 0) + request.raw_called_ae + request.raw_calling_ae + bytes(32)
    return _pdu(A_ASSOCIATE_AC, fixed + b"".join(items))


def encode_associate_rj(result: int, source: int, reason: int) -> bytes:
    """A-ASSOCIATE-RJ (PS3.8 9.3.4): result 1 permanent / 2 transient, source, reason."""
    return _pdu(A_ASSOCIATE_RJ, bytes([0, result, source, reason]))


def encode_release_rp() -> bytes:
    """A-RELEASE-RP (PS3.8 9.3.7)."""
    return _pdu(A_RELEASE_RP, bytes(4))


def encode_abort(source: int = 2, reason: int = 0) -> bytes:
    """A-ABORT (PS3.8 9.3.8): source 2 = service provider, reason 0 = not specified,
    2 = unexpected PDU."""
    return _pdu(A_ABORT, bytes([0, 0, source, reason]))


def encode_p_data(context_id: int, command: bytes, max_pdu_length: int) -> bytes:
    """A command set as P-DATA-TF PDU(s) (PS3.8 9.3.5), fragmented to the peer's maximum
    length; the last fragment carries the 'last' bit (PS3.8 E.2)."""
    room = len(command) if max_pdu_length <= 0 else max(1, max_pdu_length - 6)
    out = bytearray()
    pos = 0
    while True:
        chunk = command[pos : pos + room]
        pos += len(chunk)
        header = 0x01 | (0x02 if pos >= len(command) else 0)
        pdv = struct.pack(">LBB", len(chunk) + 2, context_id, header) + chunk
        out += _pdu(P_DATA_TF, pdv)
        if pos >= len(command):
            return bytes(out)


# ---------------------------------------------------------------------- requestor side


@dataclass(frozen=True)
class AssociateAccept:
    """An A-ASSOCIATE-AC (PS3.8 9.3.3): per context id (result, transfer syntax)."""

    results: dict[int, tuple[int, str]]
    max_pdu_length: int  # 0 = unlimited


def encode_associate_rq(
    called_ae: str,
    calling_ae: str,
    contexts: list[tuple[int, str, tuple[str, ...]]],
    *,
    max_pdu_length: int,
    implementation_class_uid: str,
    implementation_version_name: str,
) -> bytes:
    """A-ASSOCIATE-RQ (PS3.8 9.3.2); ``contexts``: (odd id, abstract syntax, syntaxes)."""
    items = [_item(0x10, APPLICATION_CONTEXT_NAME.encode("ascii"))]
    for cx_id, abstract, syntaxes in contexts:
        sub = _item(0x30, abstract.encode("ascii"))
        sub += b"".join(_item(0x40, ts.encode("ascii")) for ts in syntaxes)
        items.append(_item(0x20, bytes([cx_id, 0, 0, 0]) + sub))
    user = _item(0x51, struct.pack(">L", max_pdu_length))
    user += _item(0x52, implementation_class_uid.encode("ascii"))
    if implementation_version_name:
        user += _item(0x55, implementation_version_name.encode("ascii")[:16])
    items.append(_item(0x50, user))
    fixed = struct.pack(">HH", 1, 0) + _ae(called_ae) + _ae(calling_ae) + bytes(32)
    return _pdu(A_ASSOCIATE_RQ, fixed + b"".join(items))


def _ae(title: str) -> bytes:
    return title.encode("ascii")[:16].ljust(16, b" ")


def parse_associate_ac(pdu: bytes) -> AssociateAccept:
    """Parse a whole A-ASSOCIATE-AC PDU (header included)."""
    if len(pdu) < 74:
        raise PduError("A-ASSOCIATE-AC shorter than its fixed part")
    kind, _, length = _HEADER.unpack_from(pdu, 0)
    if kind != A_ASSOCIATE_AC or length != len(pdu) - 6:
        raise PduError("not an A-ASSOCIATE-AC of the announced length")
    results: dict[int, tuple[int, str]] = {}
    max_pdu = 0
    for kind, value in _items(pdu, 74, len(pdu)):
        if kind == 0x21:
            if len(value) < 4:
                raise PduError("presentation context item cut off")
            syntax = ""
            for sub, sub_value in _items(value, 4, len(value)):
                if sub == 0x40:
                    syntax = _uid(sub_value)
            results[value[0]] = (value[2], syntax)
        elif kind == 0x50:
            for sub, sub_value in _items(value, 0, len(value)):
                if sub == 0x51 and len(sub_value) == 4:
                    (max_pdu,) = struct.unpack(">L", sub_value)
    return AssociateAccept(results, max_pdu)


def encode_release_rq() -> bytes:
    """A-RELEASE-RQ (PS3.8 9.3.6)."""
    return _pdu(A_RELEASE_RQ, bytes(4))
