"""Named DIMSE statuses (PS3.4 Annex B/C, PS3.7 Annex C): never a blanket 0x0110, and one name
per value (an IntEnum would silently make a second name an alias)."""

from __future__ import annotations

from enum import IntEnum, unique

__all__ = ["Status"]


@unique
class Status(IntEnum):
    """DIMSE status codes the adapter answers with; never a blanket 0x0110."""

    SUCCESS = 0x0000
    # Warnings (PS3.4 B.2.3, C.4.2.1.5)
    #: C-MOVE/C-GET; the same value is "Coercion of Data Elements" of a C-STORE (PS3.4 B.2.3),
    #: which the adapter never answers (it stores instances as received).
    SUB_OPERATIONS_COMPLETE_WITH_FAILURES = 0xB000
    ELEMENTS_DISCARDED = 0xB006
    DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007
    # Failures
    REFUSED_OUT_OF_RESOURCES = 0xA700
    REFUSED_OUT_OF_RESOURCES_MATCHES = 0xA701  # C-MOVE: unable to calculate number of matches
    REFUSED_OUT_OF_RESOURCES_SUBOPS = 0xA702  # C-MOVE/C-GET: unable to perform sub-operations
    REFUSED_MOVE_DESTINATION_UNKNOWN = 0xA801
    #: C-STORE's Data Set, C-FIND/C-MOVE/C-GET's Identifier (a data set too): PS3.4 B.2.3, C.4
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    UNABLE_TO_PROCESS = 0xC001
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    PROCESSING_FAILURE = 0x0110
    RESOURCE_LIMITATION = 0x0213  # PS3.7 C.5.13
    CANCEL = 0xFE00
    PENDING = 0xFF00
    PENDING_WARNING = 0xFF01
