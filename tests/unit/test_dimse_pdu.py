"""DICOM Upper Layer PDUs of the native storage acceptor (PS3.8 9.3), checked against
pynetdicom's own encoder/decoder; plus negotiate() and peek_pdu() (adapter/dimse/acse.py)."""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator, Sequence

import pytest
from pynetdicom import build_context
from pynetdicom import pdu as npdu
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
    UserIdentityNegotiation,
)

from adapter.dimse import pdu
from adapter.dimse.acse import negotiate, peek_pdu
from adapter.dimse.pdu import (
    ABSTRACT_SYNTAX_NOT_SUPPORTED,
    ACCEPTANCE,
    PLAIN_USER_ITEMS,
    TRANSFER_SYNTAXES_NOT_SUPPORTED,
    AssociateRequest,
    PduError,
    ProposedContext,
    encode_abort,
    encode_associate_ac,
    encode_associate_rj,
    encode_p_data,
    encode_release_rp,
    parse_associate_rq,
)

APP_CONTEXT = "1.2.840.10008.3.1.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
VERIFICATION = "1.2.840.10008.1.1"
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
RLE = "1.2.840.10008.1.2.5"
OUR_IMPL_UID = "1.2.826.0.1.3680043.8.498.1"

Proposal = tuple[str, Sequence[str]]


# --------------------------------------------------------------------------------- builders
def _max_length(value: int) -> MaximumLengthNotification:
    item = MaximumLengthNotification()
    item.maximum_length_received = value
    return item


def _impl_uid(uid: str = "1.2.3.4.5") -> ImplementationClassUIDNotification:
    item = ImplementationClassUIDNotification()
    item.implementation_class_uid = uid
    return item


def _impl_version(name: str = "PEER_1") -> ImplementationVersionNameNotification:
    item = ImplementationVersionNameNotification()
    item.implementation_version_name = name
    return item


def _role(sop_class: str = CT) -> SCP_SCU_RoleSelectionNegotiation:
    item = SCP_SCU_RoleSelectionNegotiation()
    item.sop_class_uid = sop_class
    item.scu_role = True
    item.scp_role = True
    return item


def _identity() -> UserIdentityNegotiation:
    item = UserIdentityNegotiation()
    item.user_identity_type = 1
    item.primary_field = b"someone"
    return item


def associate_rq(
    proposals: Sequence[Proposal],
    *,
    max_length: int = 16384,
    extra_user: Sequence[object] = (),
    called: str = "ADAPTER",
    calling: str = "PACS",
    first_id: int = 1,
) -> bytes:
    """An A-ASSOCIATE-RQ encoded by pynetdicom; context ids first_id, first_id + 2, ..."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APP_CONTEXT
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    contexts = []
    for i, (abstract, syntaxes) in enumerate(proposals):
        cx = build_context(abstract, list(syntaxes))
        cx.context_id = first_id + 2 * i
        contexts.append(cx)
    primitive.presentation_context_definition_list = contexts
    primitive.user_information = [_max_length(max_length), _impl_uid(), *extra_user]
    rq = npdu.A_ASSOCIATE_RQ()
    rq.from_primitive(primitive)
    return bytes(rq.encode())


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def raw_rq(items: bytes, *, kind: int = 0x01, length: int | None = None) -> bytes:
    """An A-ASSOCIATE-RQ built by hand around ``items`` (for malformed variants)."""
    body = struct.pack(">HH", 1, 0) + b"ADAPTER".ljust(16) + b"PACS".ljust(16) + bytes(32) + items
    return struct.pack(">BBL", kind, 0, len(body) if length is None else length) + body


def raw_context(cx_id: int, abstract: str, *syntaxes: str) -> bytes:
    sub = _item(0x30, abstract.encode()) + b"".join(_item(0x40, ts.encode()) for ts in syntaxes)
    return _item(0x20, bytes([cx_id, 0, 0, 0]) + sub)


def raw_user(*sub_items: bytes) -> bytes:
    return _item(0x50, b"".join(sub_items))


APP_ITEM = _item(0x10, APP_CONTEXT.encode())
CT_ITEM = raw_context(1, CT, EXPLICIT, IMPLICIT)
MAX_ITEM = _item(0x51, struct.pack(">L", 32768))


def split_pdus(stream: bytes) -> list[bytes]:
    out = []
    pos = 0
    while pos < len(stream):
        (length,) = struct.unpack_from(">L", stream, pos + 2)
        out.append(stream[pos : pos + 6 + length])
        pos += 6 + length
    assert pos == len(stream)
    return out


def request(*contexts: tuple[int, str, tuple[str, ...]]) -> AssociateRequest:
    return AssociateRequest(
        called_ae="ADAPTER",
        calling_ae="PACS",
        raw_called_ae=b"ADAPTER".ljust(16),
        raw_calling_ae=b"PACS".ljust(16),
        application_context=APP_CONTEXT,
        contexts=tuple(ProposedContext(i, a, ts) for i, a, ts in contexts),
        max_pdu_length=16384,
    )


# --------------------------------------------------------------------------------- parse
def test_parse_reads_ae_titles_and_application_context() -> None:
    rq = parse_associate_rq(associate_rq([(CT, [EXPLICIT])], called="STORE_SCP", calling="MOD 1"))
    assert (rq.called_ae, rq.calling_ae) == ("STORE_SCP", "MOD 1")
    assert rq.raw_called_ae == b"STORE_SCP       "
    assert rq.raw_calling_ae == b"MOD 1           "
    assert rq.application_context == APP_CONTEXT


def test_parse_reads_every_presentation_context_with_syntaxes_in_order() -> None:
    proposals: list[Proposal] = [
        (CT, [JPEG_LOSSLESS, EXPLICIT, IMPLICIT]),
        (CT, [IMPLICIT]),
        (MR, [EXPLICIT, RLE]),
        (VERIFICATION, [IMPLICIT]),
    ]
    rq = parse_associate_rq(associate_rq(proposals, first_id=5))
    assert rq.contexts == (
        ProposedContext(5, CT, (JPEG_LOSSLESS, EXPLICIT, IMPLICIT)),
        ProposedContext(7, CT, (IMPLICIT,)),
        ProposedContext(9, MR, (EXPLICIT, RLE)),
        ProposedContext(11, VERIFICATION, (IMPLICIT,)),
    )


def test_parse_reads_many_contexts_up_to_the_highest_id() -> None:
    proposals: list[Proposal] = [(f"1.2.3.{i}", [EXPLICIT, IMPLICIT]) for i in range(128)]
    rq = parse_associate_rq(associate_rq(proposals))
    assert [cx.id for cx in rq.contexts] == list(range(1, 256, 2))
    assert [cx.abstract_syntax for cx in rq.contexts] == [a for a, _ in proposals]


@pytest.mark.parametrize("max_length", [0, 4096, 16384, 1 << 20, 0xFFFFFFFF])
def test_parse_reads_the_maximum_pdu_length(max_length: int) -> None:
    rq = parse_associate_rq(associate_rq([(CT, [EXPLICIT])], max_length=max_length))
    assert rq.max_pdu_length == max_length


def test_parse_without_a_maximum_length_sub_item_means_unlimited() -> None:
    rq = parse_associate_rq(raw_rq(APP_ITEM + CT_ITEM + raw_user(_item(0x52, b"1.2.3"))))
    assert rq.max_pdu_length == 0
    assert rq.user_item_types == frozenset({0x52})


def test_parse_without_user_information_has_no_user_items() -> None:
    rq = parse_associate_rq(raw_rq(APP_ITEM + CT_ITEM))
    assert rq.user_item_types == frozenset()
    assert rq.contexts == (ProposedContext(1, CT, (EXPLICIT, IMPLICIT)),)


def test_parse_collects_plain_user_information_sub_item_types() -> None:
    rq = parse_associate_rq(associate_rq([(CT, [EXPLICIT])], extra_user=[_impl_version()]))
    assert rq.user_item_types == frozenset({0x51, 0x52, 0x55})
    assert rq.user_item_types <= PLAIN_USER_ITEMS


def test_parse_reports_role_selection_and_user_identity_sub_items() -> None:
    data = associate_rq([(CT, [EXPLICIT])], extra_user=[_role(), _identity()])
    rq = parse_associate_rq(data)
    assert rq.user_item_types == frozenset({0x51, 0x52, 0x54, 0x58})
    assert not rq.user_item_types <= PLAIN_USER_ITEMS


def test_parse_ignores_unknown_items_and_sub_items() -> None:
    odd_context = _item(0x20, bytes([3, 0, 0, 0]) + _item(0x77, b"xx") + _item(0x30, CT.encode()))
    data = raw_rq(APP_ITEM + _item(0x66, b"????") + odd_context + raw_user(MAX_ITEM))
    rq = parse_associate_rq(data)
    assert rq.contexts == (ProposedContext(3, CT, ()),)
    assert rq.max_pdu_length == 32768


def test_parse_strips_uid_padding() -> None:
    data = raw_rq(
        _item(0x10, APP_CONTEXT.encode() + b"\x00")
        + _item(0x20, bytes([1, 0, 0, 0]) + _item(0x30, b"1.2.3\x00") + _item(0x40, b"1.2 "))
    )
    rq = parse_associate_rq(data)
    assert rq.application_context == APP_CONTEXT
    assert rq.contexts == (ProposedContext(1, "1.2.3", ("1.2",)),)


# --------------------------------------------------------------------------------- parse: hostile
@pytest.fixture(scope="module")
def valid_rq() -> bytes:
    return associate_rq(
        [(CT, [EXPLICIT, IMPLICIT]), (VERIFICATION, [IMPLICIT])], extra_user=[_impl_version()]
    )


def test_parse_rejects_every_truncation(valid_rq: bytes) -> None:
    for cut in range(len(valid_rq)):
        with pytest.raises(PduError):
            parse_associate_rq(valid_rq[:cut])


def test_parse_of_a_truncation_with_a_matching_header_never_raises_anything_else(
    valid_rq: bytes,
) -> None:
    parsed = 0
    for cut in range(len(valid_rq)):
        data = valid_rq[:2] + struct.pack(">L", max(cut - 6, 0)) + valid_rq[6:cut]
        try:
            parse_associate_rq(data)
            parsed += 1
        except PduError:
            pass
    assert parsed >= 3  # the cuts at item boundaries past the fixed part


def test_parse_rejects_trailing_bytes_past_the_announced_length(valid_rq: bytes) -> None:
    with pytest.raises(PduError):
        parse_associate_rq(valid_rq + b"\x00\x00")


def test_parse_rejects_a_header_length_longer_than_the_data(valid_rq: bytes) -> None:
    data = valid_rq[:2] + struct.pack(">L", len(valid_rq)) + valid_rq[6:]
    with pytest.raises(PduError):
        parse_associate_rq(data)


@pytest.mark.parametrize(
    "kind", [pdu.A_ASSOCIATE_AC, pdu.A_ASSOCIATE_RJ, pdu.P_DATA_TF, pdu.A_RELEASE_RQ, 0x00, 0xFF]
)
def test_parse_rejects_another_pdu_type(valid_rq: bytes, kind: int) -> None:
    with pytest.raises(PduError):
        parse_associate_rq(bytes([kind]) + valid_rq[1:])


def test_parse_rejects_an_a_associate_ac(valid_rq: bytes) -> None:
    ac = encode_associate_ac(
        parse_associate_rq(valid_rq),
        {1: (ACCEPTANCE, EXPLICIT), 3: (ACCEPTANCE, IMPLICIT)},
        max_pdu_length=16384,
        implementation_class_uid=OUR_IMPL_UID,
        implementation_version_name="X",
    )
    with pytest.raises(PduError):
        parse_associate_rq(ac)


def test_parse_rejects_a_top_level_item_longer_than_the_pdu() -> None:
    data = raw_rq(APP_ITEM + CT_ITEM + struct.pack(">BBH", 0x50, 0, 200) + MAX_ITEM)
    with pytest.raises(PduError, match="longer"):
        parse_associate_rq(data)


def test_parse_rejects_a_sub_item_longer_than_its_presentation_context() -> None:
    value = bytes([1, 0, 0, 0]) + _item(0x30, CT.encode()) + struct.pack(">BBH", 0x40, 0, 40)
    data = raw_rq(APP_ITEM + _item(0x20, value + b"1.2.840"))
    with pytest.raises(PduError):
        parse_associate_rq(data)


def test_parse_rejects_a_user_sub_item_longer_than_the_user_item() -> None:
    data = raw_rq(APP_ITEM + CT_ITEM + _item(0x50, struct.pack(">BBH", 0x52, 0, 99) + b"1.2"))
    with pytest.raises(PduError):
        parse_associate_rq(data)


def test_parse_rejects_an_item_header_cut_off_at_the_end() -> None:
    with pytest.raises(PduError, match="cut off"):
        parse_associate_rq(raw_rq(APP_ITEM + CT_ITEM + b"\x50\x00"))


def test_parse_rejects_a_presentation_context_item_shorter_than_its_fixed_part() -> None:
    with pytest.raises(PduError):
        parse_associate_rq(raw_rq(APP_ITEM + _item(0x20, b"\x01\x00")))


@pytest.mark.parametrize("size", [0, 2, 3, 5, 8])
def test_parse_rejects_a_maximum_length_sub_item_of_the_wrong_size(size: int) -> None:
    data = raw_rq(APP_ITEM + CT_ITEM + raw_user(_item(0x51, bytes(size))))
    with pytest.raises(PduError, match="maximum length"):
        parse_associate_rq(data)


def test_parse_rejects_a_pdu_shorter_than_the_fixed_part() -> None:
    with pytest.raises(PduError):
        parse_associate_rq(raw_rq(b"")[:73])
    assert parse_associate_rq(raw_rq(b"")).contexts == ()  # exactly the fixed part


def test_parse_of_mutated_pdus_raises_only_pdu_error(valid_rq: bytes) -> None:
    rng = random.Random(1234)
    for _ in range(2000):
        data = bytearray(valid_rq)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(6, len(data))] = rng.randrange(256)
        with contextlib.suppress(PduError):
            parse_associate_rq(bytes(data))


def test_parse_of_random_garbage_raises_pdu_error() -> None:
    rng = random.Random(99)
    for _ in range(500):
        body = rng.randbytes(rng.randint(0, 300))
        with pytest.raises(PduError):
            parse_associate_rq(bytes([0x02]) + body)
        data = struct.pack(">BBL", 1, 0, len(body)) + body
        with contextlib.suppress(PduError):
            parse_associate_rq(data)


# --------------------------------------------------------------------------------- A-ASSOCIATE-AC
def decode_ac(data: bytes) -> npdu.A_ASSOCIATE_AC:
    ac = npdu.A_ASSOCIATE_AC()
    ac.decode(data)
    return ac


def test_associate_ac_decodes_with_pynetdicom_to_the_given_results() -> None:
    rq = parse_associate_rq(
        associate_rq([(CT, [EXPLICIT, IMPLICIT]), (VERIFICATION, [IMPLICIT]), (FIND, [IMPLICIT])])
    )
    results = {
        1: (ACCEPTANCE, IMPLICIT),
        3: (ACCEPTANCE, IMPLICIT),
        5: (ABSTRACT_SYNTAX_NOT_SUPPORTED, IMPLICIT),
    }
    data = encode_associate_ac(
        rq,
        results,
        max_pdu_length=65536,
        implementation_class_uid=OUR_IMPL_UID,
        implementation_version_name="ADAPTER_01",
    )
    assert data[0] == pdu.A_ASSOCIATE_AC
    assert struct.unpack(">L", data[2:6])[0] == len(data) - 6
    ac = decode_ac(data)
    assert ac.application_context_name == APP_CONTEXT
    assert (ac.called_ae_title, ac.calling_ae_title) == ("ADAPTER", "PACS")
    got = {cx.context_id: (cx.result_reason, cx.transfer_syntax) for cx in ac.presentation_context}
    assert got == results
    user = ac.user_information
    assert user.maximum_length == 65536
    assert user.implementation_class_uid == OUR_IMPL_UID
    assert user.implementation_version_name == "ADAPTER_01"


def test_associate_ac_answers_every_context_in_the_requested_order() -> None:
    rq = parse_associate_rq(associate_rq([(CT, [EXPLICIT])] * 5, first_id=21))
    results = {cx.id: (TRANSFER_SYNTAXES_NOT_SUPPORTED, EXPLICIT) for cx in rq.contexts}
    results[25] = (ACCEPTANCE, EXPLICIT)
    ac = decode_ac(
        encode_associate_ac(
            rq,
            results,
            max_pdu_length=0,
            implementation_class_uid=OUR_IMPL_UID,
            implementation_version_name="",
        )
    )
    assert [cx.context_id for cx in ac.presentation_context] == [21, 23, 25, 27, 29]
    assert [cx.result_reason for cx in ac.presentation_context] == [4, 4, 0, 4, 4]
    assert ac.user_information.maximum_length == 0  # unlimited
    assert ac.user_information.implementation_version_name is None


def test_associate_ac_echoes_the_raw_ae_title_fields() -> None:
    rq = parse_associate_rq(associate_rq([(CT, [EXPLICIT])], called="A", calling="B C"))
    data = encode_associate_ac(
        rq,
        {1: (ACCEPTANCE, EXPLICIT)},
        max_pdu_length=16384,
        implementation_class_uid=OUR_IMPL_UID,
        implementation_version_name="V",
    )
    assert data[6:10] == b"\x00\x01\x00\x00"  # protocol version 1, reserved
    assert data[10:26] == b"A".ljust(16)
    assert data[26:42] == b"B C".ljust(16)
    assert data[42:74] == bytes(32)


def test_associate_ac_cuts_the_version_name_to_16_characters() -> None:
    rq = parse_associate_rq(associate_rq([(CT, [EXPLICIT])]))
    data = encode_associate_ac(
        rq,
        {1: (ACCEPTANCE, EXPLICIT)},
        max_pdu_length=16384,
        implementation_class_uid=OUR_IMPL_UID,
        implementation_version_name="A_VERY_LONG_VERSION_NAME",
    )
    assert decode_ac(data).user_information.implementation_version_name == "A_VERY_LONG_VERS"


def test_associate_ac_round_trips_through_pynetdicom_primitive() -> None:
    rq = parse_associate_rq(associate_rq([(CT, [JPEG_LOSSLESS, EXPLICIT])]))
    data = encode_associate_ac(
        rq,
        {1: (ACCEPTANCE, JPEG_LOSSLESS)},
        max_pdu_length=32768,
        implementation_class_uid=OUR_IMPL_UID,
        implementation_version_name="ADAPTER",
    )
    primitive = decode_ac(data).to_primitive()
    assert primitive.maximum_length_received == 32768
    assert primitive.implementation_class_uid == OUR_IMPL_UID
    (cx,) = primitive.presentation_context_definition_results_list
    assert (cx.context_id, cx.result, cx.transfer_syntax) == (1, 0, [JPEG_LOSSLESS])


# --------------------------------------------------------------------------------- RJ / RP / ABORT
@pytest.mark.parametrize(
    ("result", "source", "reason"), [(1, 1, 1), (1, 1, 7), (2, 3, 2), (1, 2, 2)]
)
def test_associate_rj_is_exactly_per_ps3_8(result: int, source: int, reason: int) -> None:
    data = encode_associate_rj(result, source, reason)
    assert data == bytes([0x03, 0, 0, 0, 0, 4, 0, result, source, reason])
    rj = npdu.A_ASSOCIATE_RJ()
    rj.decode(data)
    assert (rj.result, rj.source, rj.reason_diagnostic) == (result, source, reason)


def test_release_rp_is_exactly_per_ps3_8() -> None:
    assert encode_release_rp() == b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00"
    npdu.A_RELEASE_RP().decode(encode_release_rp())


def test_abort_defaults_to_service_provider_reason_not_specified() -> None:
    assert encode_abort() == b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x00"


@pytest.mark.parametrize(("source", "reason"), [(0, 0), (2, 0), (2, 2), (2, 6)])
def test_abort_carries_source_and_reason(source: int, reason: int) -> None:
    data = encode_abort(source=source, reason=reason)
    assert data == bytes([0x07, 0, 0, 0, 0, 4, 0, 0, source, reason])
    abort = npdu.A_ABORT_RQ()
    abort.decode(data)
    assert (abort.source, abort.reason_diagnostic) == (source, reason)


# --------------------------------------------------------------------------------- P-DATA-TF
def decode_p_data(stream: bytes) -> list[tuple[int, int, bytes, int]]:
    """(context id, control header, fragment, PDU variable-field length) per PDU."""
    out = []
    for one in split_pdus(stream):
        p_data = npdu.P_DATA_TF()
        p_data.decode(one)
        (pdv,) = p_data.presentation_data_value_items
        value = pdv.presentation_data_value
        out.append((pdv.presentation_context_id, value[0], value[1:], len(one) - 6))
    return out


@pytest.mark.parametrize(
    ("size", "max_length", "expected_fragments"),
    [
        (200, 64, [58, 58, 58, 26]),
        (116, 64, [58, 58]),
        (117, 64, [58, 58, 1]),
        (100, 106, [100]),
        (100, 105, [99, 1]),
        (100, 0, [100]),
        (5000, 16384, [5000]),
        (40000, 16384, [16378, 16378, 7244]),
    ],
)
def test_p_data_fragments_a_command_to_the_peer_maximum(
    size: int, max_length: int, expected_fragments: list[int]
) -> None:
    command = bytes(i % 251 for i in range(size))
    pdvs = decode_p_data(encode_p_data(7, command, max_length))
    assert [len(fragment) for _, _, fragment, _ in pdvs] == expected_fragments
    assert b"".join(fragment for _, _, fragment, _ in pdvs) == command
    assert {cx for cx, _, _, _ in pdvs} == {7}
    if max_length:
        assert all(length <= max_length for _, _, _, length in pdvs)
    headers = [header for _, header, _, _ in pdvs]
    assert headers == [0x01] * (len(pdvs) - 1) + [0x03]  # command; 'last' only at the end


def test_p_data_of_an_empty_command_is_one_last_fragment() -> None:
    assert decode_p_data(encode_p_data(1, b"", 16384)) == [(1, 0x03, b"", 6)]


def test_p_data_pdv_framing_is_exactly_per_ps3_8() -> None:
    data = encode_p_data(5, b"ABCD", 0)
    assert data == b"\x04\x00\x00\x00\x00\x0a" + b"\x00\x00\x00\x06\x05\x03" + b"ABCD"


# --------------------------------------------------------------------------------- negotiate
SUPPORTED = {
    CT: (JPEG_LOSSLESS, RLE, EXPLICIT, IMPLICIT),
    MR: (EXPLICIT, IMPLICIT),
    VERIFICATION: (IMPLICIT, EXPLICIT),
}
TIE_ORDER = {JPEG_LOSSLESS: 0, RLE: 1, EXPLICIT: 2, IMPLICIT: 3}


def test_negotiate_takes_the_requestors_first_supported_syntax() -> None:
    rq = request((1, CT, (IMPLICIT, EXPLICIT, JPEG_LOSSLESS)), (3, MR, ("1.2.9", EXPLICIT)))
    assert negotiate(rq, SUPPORTED, TIE_ORDER) == {1: (0, IMPLICIT), 3: (0, EXPLICIT)}


def test_negotiate_breaks_ties_across_contexts_by_tie_order() -> None:
    rq = request((1, CT, (EXPLICIT, JPEG_LOSSLESS)), (3, CT, (JPEG_LOSSLESS, EXPLICIT)))
    # Both are first somewhere: JPEG wins the tie, in both contexts.
    assert negotiate(rq, SUPPORTED, TIE_ORDER) == {1: (0, JPEG_LOSSLESS), 3: (0, JPEG_LOSSLESS)}
    reversed_ties = {EXPLICIT: 0, JPEG_LOSSLESS: 1}
    assert negotiate(rq, SUPPORTED, reversed_ties) == {1: (0, EXPLICIT), 3: (0, EXPLICIT)}


def test_negotiate_gives_each_context_a_syntax_it_proposed() -> None:
    rq = request((1, CT, (JPEG_LOSSLESS,)), (3, CT, (EXPLICIT,)), (5, CT, (IMPLICIT,)))
    assert negotiate(rq, SUPPORTED, TIE_ORDER) == {
        1: (0, JPEG_LOSSLESS),
        3: (0, EXPLICIT),
        5: (0, IMPLICIT),
    }


def test_negotiate_ranks_by_the_best_position_over_all_contexts_of_an_abstract_syntax() -> None:
    rq = request((1, CT, (EXPLICIT, RLE, IMPLICIT)), (3, CT, (IMPLICIT, RLE)))
    # IMPLICIT is first in context 3 (rank 0, like EXPLICIT); RLE is second everywhere.
    assert negotiate(rq, SUPPORTED, TIE_ORDER) == {1: (0, EXPLICIT), 3: (0, IMPLICIT)}


def test_negotiate_does_not_mix_rankings_of_different_abstract_syntaxes() -> None:
    rq = request((1, MR, (IMPLICIT, EXPLICIT)), (3, CT, (EXPLICIT, IMPLICIT)))
    assert negotiate(rq, SUPPORTED, TIE_ORDER) == {1: (0, IMPLICIT), 3: (0, EXPLICIT)}


def test_negotiate_refuses_an_unsupported_abstract_syntax_with_result_3() -> None:
    rq = request((1, FIND, (EXPLICIT, IMPLICIT)), (3, CT, (EXPLICIT,)))
    assert negotiate(rq, SUPPORTED, TIE_ORDER) == {
        1: (ABSTRACT_SYNTAX_NOT_SUPPORTED, EXPLICIT),
        3: (ACCEPTANCE, EXPLICIT),
    }


def test_negotiate_refuses_no_common_transfer_syntax_with_result_4() -> None:
    rq = request((1, CT, ("1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.2")), (3, VERIFICATION, ()))
    assert negotiate(rq, SUPPORTED, TIE_ORDER) == {
        1: (TRANSFER_SYNTAXES_NOT_SUPPORTED, "1.2.840.10008.1.2.4.91"),
        3: (TRANSFER_SYNTAXES_NOT_SUPPORTED, ""),
    }


def test_negotiate_of_a_parsed_request_feeds_encode_associate_ac() -> None:
    rq = parse_associate_rq(
        associate_rq([(CT, [EXPLICIT, JPEG_LOSSLESS]), (FIND, [IMPLICIT]), (VERIFICATION, [RLE])])
    )
    results = negotiate(rq, SUPPORTED, TIE_ORDER)
    ac = decode_ac(
        encode_associate_ac(
            rq,
            results,
            max_pdu_length=16384,
            implementation_class_uid=OUR_IMPL_UID,
            implementation_version_name="V1",
        )
    )
    got = {cx.context_id: (cx.result_reason, cx.transfer_syntax) for cx in ac.presentation_context}
    assert got == {1: (0, EXPLICIT), 3: (3, IMPLICIT), 5: (4, RLE)}


# --------------------------------------------------------------------------------- peek_pdu
@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, peer = socket.socketpair()
    yield ours, peer
    ours.close()
    peer.close()


def _still_there(sock: socket.socket, data: bytes) -> bool:
    sock.settimeout(1.0)
    return sock.recv(len(data) + 100, socket.MSG_PEEK) == data


def test_peek_returns_a_whole_associate_rq_without_consuming_it(
    pair: tuple[socket.socket, socket.socket], valid_rq: bytes
) -> None:
    ours, peer = pair
    peer.sendall(valid_rq)
    assert peek_pdu(ours, 0.3, 1 << 20) == valid_rq
    ours.settimeout(1.0)
    assert ours.recv(len(valid_rq), socket.MSG_WAITALL) == valid_rq


def test_peek_returns_only_the_first_pdu(
    pair: tuple[socket.socket, socket.socket], valid_rq: bytes
) -> None:
    ours, peer = pair
    peer.sendall(valid_rq + encode_release_rp())
    assert peek_pdu(ours, 0.3, 1 << 20) == valid_rq


def test_peek_waits_for_a_pdu_sent_in_pieces(
    pair: tuple[socket.socket, socket.socket], valid_rq: bytes
) -> None:
    ours, peer = pair

    def send_slowly() -> None:
        for piece in (valid_rq[:3], valid_rq[3:40], valid_rq[40:]):
            peer.sendall(piece)
            time.sleep(0.03)

    sender = threading.Thread(target=send_slowly)
    sender.start()
    try:
        assert peek_pdu(ours, 2.0, 1 << 20) == valid_rq
    finally:
        sender.join()


@pytest.mark.parametrize(
    "first",
    [encode_release_rp(), encode_abort(), encode_p_data(1, b"x" * 10, 0), b"\x02" + bytes(79)],
)
def test_peek_returns_none_at_once_for_another_pdu_type(
    pair: tuple[socket.socket, socket.socket], first: bytes
) -> None:
    ours, peer = pair
    peer.sendall(first)
    started = time.monotonic()
    assert peek_pdu(ours, 0.3, 1 << 20) is None
    assert time.monotonic() - started < 0.2
    assert _still_there(ours, first)


def test_peek_returns_none_for_a_pdu_bigger_than_the_limit(
    pair: tuple[socket.socket, socket.socket], valid_rq: bytes
) -> None:
    ours, peer = pair
    peer.sendall(valid_rq)
    started = time.monotonic()
    assert peek_pdu(ours, 0.3, len(valid_rq) - 1) is None
    assert time.monotonic() - started < 0.2
    assert peek_pdu(ours, 0.3, len(valid_rq)) == valid_rq  # the limit counts the header
    assert _still_there(ours, valid_rq)


def test_peek_does_not_wait_for_a_huge_announced_length(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    peer.sendall(b"\x01\x00\xff\xff\xff\xff")
    started = time.monotonic()
    assert peek_pdu(ours, 0.3, 1 << 20) is None
    assert time.monotonic() - started < 0.2


@pytest.mark.parametrize("sent", [0, 3, 6, 50])
def test_peek_gives_up_after_the_timeout_on_a_partial_pdu(
    pair: tuple[socket.socket, socket.socket], valid_rq: bytes, sent: int
) -> None:
    ours, peer = pair
    if sent:
        peer.sendall(valid_rq[:sent])
    started = time.monotonic()
    assert peek_pdu(ours, 0.3, 1 << 20) is None
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 1.0
    if sent:
        assert _still_there(ours, valid_rq[:sent])


def test_peek_returns_none_when_the_peer_closes_without_sending(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    peer.close()
    started = time.monotonic()
    assert peek_pdu(ours, 0.3, 1 << 20) is None
    assert time.monotonic() - started < 0.2


def test_peek_returns_an_empty_associate_rq_without_waiting_for_the_timeout(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    peer.sendall(b"\x01\x00\x00\x00\x00\x00")
    started = time.monotonic()
    result = peek_pdu(ours, 0.3, 1 << 20)
    assert time.monotonic() - started < 0.2
    assert result == b"\x01\x00\x00\x00\x00\x00"


@pytest.mark.parametrize("abstract_item", [b"", _item(0x30, b"")], ids=["missing", "empty"])
def test_a_presentation_context_without_an_abstract_syntax_is_a_pdu_error(
    abstract_item: bytes,
) -> None:
    """PS3.8 9.3.2.2: a presentation context has one Abstract Syntax sub-item. Without one,
    pynetdicom's acceptor died on the association the listener handed it (an uncaught thread
    exception in the PDU fuzz run); now the listener answers with an A-ABORT."""
    storage = _item(0x20, bytes([1, 0, 0, 0]) + _item(0x30, CT.encode()) + _item(0x40, b"1.2"))
    bad = _item(0x20, bytes([3, 0, 0, 0]) + abstract_item + _item(0x40, EXPLICIT.encode()))
    data = raw_rq(APP_ITEM + storage + bad + raw_user(MAX_ITEM))
    with pytest.raises(PduError, match="presentation context 3 without an abstract syntax"):
        parse_associate_rq(data)
