"""Presentation contexts for the Storage Service Class (PS3.4 Annex B, PS3.8 7.1.1.13).

What the importer's SCP accepts and what the exporter's C-STORE SCU proposes: every storage SOP
class pynetdicom knows, with the transfer syntaxes (PS3.5 10, A.4) that a store can take as they
are -- instances are forwarded byte for byte, never transcoded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AllStoragePresentationContexts, build_context
from pynetdicom.presentation import PresentationContext

__all__ = [
    "COMPRESSED_TRANSFER_SYNTAXES",
    "QUERY_RETRIEVE_SOP_CLASSES",
    "STORAGE_COMMITMENT_PUSH_MODEL",
    "STORAGE_SOP_CLASSES",
    "STORAGE_TRANSFER_SYNTAXES",
    "TIE_ORDER",
    "UNCOMPRESSED_TRANSFER_SYNTAXES",
    "VERIFICATION_SOP_CLASS",
    "contexts_for_instance",
    "query_retrieve_contexts",
    "storage_commitment_context",
    "storage_contexts",
    "verification_context",
]

#: Native (uncompressed) encodings, PS3.5 A.1-A.3 and A.5; every SCP must take Implicit VR LE.
UNCOMPRESSED_TRANSFER_SYNTAXES: Final[tuple[str, ...]] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)

#: Encapsulated pixel data (PS3.5 A.4): JPEG, JPEG-LS, JPEG 2000, RLE; lossless first.
COMPRESSED_TRANSFER_SYNTAXES: Final[tuple[str, ...]] = (
    JPEGLosslessSV1,  # JPEG Lossless, Process 14, Selection Value 1
    JPEGLossless,  # JPEG Lossless, Process 14
    JPEGLSLossless,
    JPEG2000Lossless,
    RLELossless,
    JPEGLSNearLossless,
    JPEGBaseline8Bit,  # Process 1
    JPEGExtended12Bit,  # Process 2 & 4
    JPEG2000,
)

#: Everything the importer accepts for a storage SOP class, in our order of preference.
STORAGE_TRANSFER_SYNTAXES: Final[tuple[str, ...]] = (
    UNCOMPRESSED_TRANSFER_SYNTAXES + COMPRESSED_TRANSFER_SYNTAXES
)

#: Every storage SOP class pynetdicom 3 knows (170; more than one association's 128 contexts).
STORAGE_SOP_CLASSES: Final[tuple[str, ...]] = tuple(
    str(cx.abstract_syntax) for cx in AllStoragePresentationContexts
)

#: Among syntaxes a requestor ranks equally: keep compressed data compressed, then the richest
#: uncompressed encoding (Deflated, Explicit VR LE, Implicit VR LE, Explicit VR BE).
TIE_ORDER: Final[dict[str, int]] = {
    ts: i
    for i, ts in enumerate(
        [
            *COMPRESSED_TRANSFER_SYNTAXES,
            DeflatedExplicitVRLittleEndian,
            ExplicitVRLittleEndian,
            ImplicitVRLittleEndian,
            ExplicitVRBigEndian,
        ]
    )
}

VERIFICATION_SOP_CLASS: Final[str] = "1.2.840.10008.1.1"  # PS3.4 A.4

#: Patient Root and Study Root Query/Retrieve (PS3.4 C.6.1, C.6.2): FIND, MOVE, GET.
QUERY_RETRIEVE_SOP_CLASSES: Final[tuple[str, ...]] = (
    "1.2.840.10008.5.1.4.1.2.1.1",
    "1.2.840.10008.5.1.4.1.2.1.2",
    "1.2.840.10008.5.1.4.1.2.1.3",
    "1.2.840.10008.5.1.4.1.2.2.1",
    "1.2.840.10008.5.1.4.1.2.2.2",
    "1.2.840.10008.5.1.4.1.2.2.3",
)

STORAGE_COMMITMENT_PUSH_MODEL: Final[str] = "1.2.840.10008.1.20.1"  # PS3.4 J.3


def storage_contexts(
    sop_classes: Iterable[str] | None = None,
    transfer_syntaxes: Sequence[str] = STORAGE_TRANSFER_SYNTAXES,
    *,
    both_roles: bool = False,
) -> list[PresentationContext]:
    """One context per storage SOP class (default: all), each with ``transfer_syntaxes``.

    ``both_roles`` lets a requestor that asks for SCP/SCU role selection (PS3.7 D.3.3.4) make
    us the Storage SCU: needed to answer C-GET with C-STOREs on the same association.
    """
    classes = STORAGE_SOP_CLASSES if sop_classes is None else tuple(sop_classes)
    contexts = [build_context(uid, list(transfer_syntaxes)) for uid in dict.fromkeys(classes)]
    if both_roles:
        for cx in contexts:
            cx.scu_role, cx.scp_role = True, True
    return contexts


def query_retrieve_contexts() -> list[PresentationContext]:
    """Patient Root and Study Root FIND/MOVE/GET in Implicit and Explicit VR LE."""
    syntaxes: list[str | UID] = [ImplicitVRLittleEndian, ExplicitVRLittleEndian]
    return [build_context(uid, syntaxes) for uid in QUERY_RETRIEVE_SOP_CLASSES]


def storage_commitment_context() -> PresentationContext:
    """Storage Commitment Push Model (N-ACTION from the requester, PS3.4 J.3)."""
    return build_context(
        STORAGE_COMMITMENT_PUSH_MODEL, [ImplicitVRLittleEndian, ExplicitVRLittleEndian]
    )


def verification_context() -> PresentationContext:
    """The Verification SOP Class (C-ECHO, PS3.4 Annex A) in Implicit and Explicit VR LE."""
    return build_context(VERIFICATION_SOP_CLASS, [ImplicitVRLittleEndian, ExplicitVRLittleEndian])


def contexts_for_instance(
    sop_class_uid: str, transfer_syntax_uid: str
) -> list[PresentationContext]:
    """What a C-STORE SCU proposes to send one file as it is: its own syntax in one context
    and, for a compressed file, a second context with the uncompressed syntaxes, so the caller
    can tell "needs transcoding" from "SOP class refused" (PS3.8 Annex B.2)."""
    contexts = [build_context(sop_class_uid, [transfer_syntax_uid])]
    if transfer_syntax_uid not in UNCOMPRESSED_TRANSFER_SYNTAXES:
        contexts.append(
            build_context(sop_class_uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        )
    return contexts
