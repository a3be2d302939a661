"""Hostile PDUs for the PDU fuzz suite: a valid conversation (A-ASSOCIATE-RQ, a C-STORE-RQ
command and its data set in fragments, a C-ECHO-RQ, an A-RELEASE-RQ) built with the adapter's
own encoders (adapter/dimse/pdu.py), then one PDU of it mutated by a seeded RNG: bit flips,
truncations, a PDU length of 0 / huge / off by one, the wrong PDU type, another fragmentation
(PDVs of one byte, several PDVs a PDU, the TCP stream in pieces), a wrong presentation context
ID, a PDV item length or header that lies, a garbled command set.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from adapter.dimse.command_set import encode_c_store_rq
from adapter.dimse.pdu import encode_associate_rq, encode_release_rq
from tests.fuzz.mutations import CT, make_case

__all__ = ["MUTATIONS", "Conversation", "Step", "make_conversation"]

VERIFICATION = "1.2.840.10008.1.1"
STORE_CX, ECHO_CX = 1, 3


@dataclass
class Step:
    """One PDU to send; ``reply`` True if the adapter answers it (RQ, last data fragment,
    C-ECHO-RQ, A-RELEASE-RQ); ``chunks`` > 1 sends it in that many TCP writes."""

    kind: str
    pdu: bytes
    reply: bool
    chunks: int = 1


@dataclass
class Conversation:
    mutation: str
    sop_instance_uid: str
    steps: list[Step]
    mutated: int = -1  # the index of the mutated step (-1: none)
    detail: str = field(default="")


def _pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBL", kind, 0, len(body)) + body


def _pdv(context_id: int, value: bytes, *, command: bool, last: bool) -> bytes:
    header = (0x01 if command else 0x00) | (0x02 if last else 0x00)
    return struct.pack(">LBB", len(value) + 2, context_id, header) + value


def _fragments(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def _p_data(
    context_id: int, value: bytes, *, command: bool, size: int, per_pdu: int
) -> list[bytes]:
    """``value`` as PDVs of ``size`` bytes, ``per_pdu`` PDVs in each P-DATA-TF."""
    parts = _fragments(value, size)
    pdvs = [
        _pdv(context_id, part, command=command, last=i == len(parts) - 1)
        for i, part in enumerate(parts)
    ]
    return [_pdu(0x04, b"".join(pdvs[i : i + per_pdu])) for i in range(0, len(pdvs), per_pdu)]


def _echo_rq(message_id: int) -> bytes:
    def el(element: int, value: bytes) -> bytes:
        return struct.pack("<HHL", 0x0000, element, len(value)) + value

    body = b"".join(
        [
            el(0x0002, VERIFICATION.encode() + b"\x00"),
            el(0x0100, struct.pack("<H", 0x0030)),
            el(0x0110, struct.pack("<H", message_id)),
            el(0x0800, struct.pack("<H", 0x0101)),
        ]
    )
    return el(0x0000, struct.pack("<L", len(body))) + body


def _conversation(rng: random.Random, *, size: int = 0, per_pdu: int = 1) -> tuple[str, list[Step]]:
    case = make_case(rng, "none")
    rq = encode_associate_rq(
        "IMPORTADAPTER",
        "PDUFUZZ",
        [
            (STORE_CX, CT, (case.transfer_syntax,)),
            (ECHO_CX, VERIFICATION, (ImplicitVRLittleEndian, ExplicitVRLittleEndian)),
        ],
        max_pdu_length=16384,
        implementation_class_uid="1.2.3.4",
        implementation_version_name="PDUFUZZ",
    )
    command = encode_c_store_rq(1, CT, case.sop_instance_uid)
    size = size or rng.choice((512, 4096, 16000))
    data = _p_data(STORE_CX, case.data, command=False, size=size, per_pdu=per_pdu)
    steps = [Step("associate-rq", rq, True)]
    steps += [
        Step("store-command", p, False)
        for p in _p_data(STORE_CX, command, command=True, size=1 << 20, per_pdu=1)
    ]
    steps += [Step("data", p, i == len(data) - 1) for i, p in enumerate(data)]
    steps.append(
        Step("echo", _p_data(ECHO_CX, _echo_rq(2), command=True, size=1 << 20, per_pdu=1)[0], True)
    )
    steps.append(Step("release-rq", encode_release_rq(), True))
    return case.sop_instance_uid, steps


# ------------------------------------------------------------------ mutations of one PDU
Mutation = Callable[[bytes, random.Random], tuple[bytes, str]]


def _flip(pdu: bytes, rng: random.Random) -> tuple[bytes, str]:
    out = bytearray(pdu)
    bits = rng.randint(1, 8)
    for _ in range(bits):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out), f"{bits} bits"


def _truncate(pdu: bytes, rng: random.Random) -> tuple[bytes, str]:
    cut = rng.randrange(1, len(pdu))
    return pdu[:cut], f"at {cut}/{len(pdu)}"


def _with_length(pdu: bytes, length: int) -> bytes:
    return pdu[:2] + struct.pack(">L", length & 0xFFFFFFFF) + pdu[6:]


def _length_zero(pdu: bytes, rng: random.Random) -> tuple[bytes, str]:
    return _with_length(pdu, 0), "0"


def _length_huge(pdu: bytes, rng: random.Random) -> tuple[bytes, str]:
    length = rng.choice((0xFFFFFFFF, 0x7FFFFFF0, 0x01000000, len(pdu) + 65536))
    return _with_length(pdu, length), f"{length}"


def _length_off_by_one(pdu: bytes, rng: random.Random) -> tuple[bytes, str]:
    delta = rng.choice((-1, 1))
    return _with_length(pdu, len(pdu) - 6 + delta), f"{delta:+d}"


def _pdu_type(pdu: bytes, rng: random.Random) -> tuple[bytes, str]:
    kind = rng.choice(
        [k for k in (0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0xFF) if k != pdu[0]]
    )
    return bytes([kind]) + pdu[1:], f"0x{kind:02x}"


def _pdv_offsets(pdu: bytes) -> list[int]:
    """Offsets of the PDV items of a P-DATA-TF (empty for other PDUs)."""
    if pdu[0] != 0x04:
        return []
    out, pos = [], 6
    while pos + 6 <= len(pdu):
        out.append(pos)
        pos += 4 + struct.unpack_from(">L", pdu, pos)[0]
    return out


def _context_id(pdu: bytes, rng: random.Random) -> tuple[bytes, str]:
    offsets = _pdv_offsets(pdu)
    if not offsets:
        return _pdu_type(pdu, rng)
    at = rng.choice(offsets) + 4
    cx = rng.choice([c for c in (0, 2, 5, 127, 128, 255) if c != pdu[at]])
    return pdu[:at] + bytes([cx]) + pdu[at + 1 :], f"context {cx}"


def _pdv_length(pdu: bytes, rng: random.Random) -> tuple[bytes, str]:
    offsets = _pdv_offsets(pdu)
    if not offsets:
        return _length_off_by_one(pdu, rng)
    at = rng.choice(offsets)
    (length,) = struct.unpack_from(">L", pdu, at)
    new = rng.choice((0, 1, 2, length - 1, length + 1, 0xFFFFFFFF))
    return pdu[:at] + struct.pack(">L", new & 0xFFFFFFFF) + pdu[at + 4 :], f"{length}->{new}"


def _pdv_header(pdu: bytes, rng: random.Random) -> tuple[bytes, str]:
    offsets = _pdv_offsets(pdu)
    if not offsets:
        return _flip(pdu, rng)
    at = rng.choice(offsets) + 5
    header = rng.choice([h for h in (0x00, 0x01, 0x02, 0x03, 0xFC, 0xFF) if h != pdu[at]])
    return pdu[:at] + bytes([header]) + pdu[at + 1 :], f"header 0x{header:02x}"


def _garble_command(pdu: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Rewrite the command set of a command PDV (one whose header has bit 0)."""
    offsets = [o for o in _pdv_offsets(pdu) if pdu[o + 5] & 0x01]
    if not offsets:
        return _flip(pdu, rng)
    at = offsets[0]
    (length,) = struct.unpack_from(">L", pdu, at)
    command = bytearray(pdu[at + 6 : at + 4 + length])
    how = rng.choice(("group-length", "command-field", "data-set-type", "drop", "bytes", "uid"))
    if how == "group-length":
        command[8:12] = struct.pack("<L", rng.choice((0, 1, len(command) + 100, 0xFFFFFFFF)))
    elif how == "command-field":
        pos = command.find(b"\x00\x00\x00\x01\x02\x00\x00\x00")
        if pos >= 0:
            command[pos + 8 : pos + 10] = struct.pack(
                "<H", rng.choice((0x0000, 0x0020, 0x8001, 0xFFFF, 0x0FFF))
            )
    elif how == "data-set-type":
        pos = command.find(b"\x00\x00\x00\x08\x02\x00\x00\x00")
        if pos >= 0:
            command[pos + 8 : pos + 10] = struct.pack("<H", rng.choice((0x0101, 0x0000, 0x1234)))
    elif how == "drop":
        start = rng.randrange(12, len(command))
        del command[start : start + rng.randint(1, 40)]
    elif how == "bytes":
        for _ in range(rng.randint(1, 16)):
            command[rng.randrange(len(command))] = rng.randrange(256)
    else:  # a hostile Affected SOP Instance UID, same length
        pos = command.find(b"\x00\x00\x00\x10")
        if pos >= 0:
            (uid_length,) = struct.unpack_from("<L", command, pos + 4)
            command[pos + 8 : pos + 8 + uid_length] = bytes(
                rng.choice(b"\x00\\/.\xff\n9a") for _ in range(uid_length)
            )
    pdv = struct.pack(">L", len(command) + 2) + pdu[at + 4 : at + 6] + bytes(command)
    body = pdu[6:at] + pdv + pdu[at + 4 + length :]
    return _pdu(pdu[0], body), how


MUTATIONS: dict[str, Mutation] = {
    "bit-flip": _flip,
    "truncate": _truncate,
    "length-0": _length_zero,
    "length-huge": _length_huge,
    "length-off-by-one": _length_off_by_one,
    "pdu-type": _pdu_type,
    "context-id": _context_id,
    "pdv-length": _pdv_length,
    "pdv-header": _pdv_header,
    "command-set": _garble_command,
}
KINDS = (*MUTATIONS, "fragmentation", "none")


def make_conversation(rng: random.Random, mutation: str | None = None) -> Conversation:
    """One case: ``mutation`` None = drawn from KINDS; "fragmentation" is a valid conversation
    cut differently (PDVs of 1..64 bytes, up to 8 PDVs a PDU, PDUs in several TCP writes)."""
    name = mutation or rng.choice(KINDS)
    if name == "fragmentation":
        size, per_pdu = rng.choice((1, 2, 7, 64, 1000)), rng.choice((1, 2, 8))
        uid, steps = _conversation(rng, size=size, per_pdu=per_pdu)
        for step in steps:
            step.chunks = rng.choice((1, 1, 2, 3, 17))
        return Conversation(name, uid, steps, detail=f"PDVs of {size}, {per_pdu} a PDU")
    uid, steps = _conversation(rng)
    if name == "none":
        return Conversation(name, uid, steps)
    if name in ("context-id", "pdv-length", "pdv-header"):
        candidates = [i for i, s in enumerate(steps) if s.pdu[0] == 0x04]
    elif name == "command-set":
        candidates = [i for i, s in enumerate(steps) if s.kind in ("store-command", "echo")]
    else:
        candidates = list(range(len(steps)))
    index = rng.choice(candidates)
    pdu, detail = MUTATIONS[name](steps[index].pdu, rng)
    steps[index] = Step(steps[index].kind, pdu, steps[index].reply)
    return Conversation(name, uid, steps, index, f"{steps[index].kind}: {detail}")
