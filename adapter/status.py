"""Named DIMSE statuses (PS3.4 Annex B/C, PS3.7 Annex C) and the one error -> status map."""

from __future__ import annotations

from enum import IntEnum

from adapter.errors import PermanentError, TransientError

__all__ = ["Status", "status_for_error"]


class Status(IntEnum):
    """DIMSE status codes the adapter answers with; never a blanket 0x0110."""

    SUCCESS = 0x0000
    # Warnings (PS3.4 B.2.3)
    COERCION_OF_DATA_ELEMENTS = 0xB000
    ELEMENTS_DISCARDED = 0xB006
    DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007
    # Failures
    REFUSED_OUT_OF_RESOURCES = 0xA700
    REFUSED_OUT_OF_RESOURCES_MATCHES = 0xA701  # C-MOVE: unable to calculate number of matches
    REFUSED_OUT_OF_RESOURCES_SUBOPS = 0xA702  # C-MOVE/C-GET: unable to perform sub-operations
    REFUSED_MOVE_DESTINATION_UNKNOWN = 0xA801
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    UNABLE_TO_PROCESS = 0xC001
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    PROCESSING_FAILURE = 0x0110
    CANCEL = 0xFE00
    PENDING = 0xFF00
    PENDING_WARNING = 0xFF01
    SUB_OPERATIONS_COMPLETE_WITH_FAILURES = 0xB000


def status_for_error(error: BaseException) -> Status:
    """Map an upload failure to the C-STORE status a PACS should see.

    Store unreachable or overloaded -> 0xA700 (the PACS will retry later); dataset rejected ->
    0xC000 (the PACS should not resend the same bytes).
    """
    if isinstance(error, TransientError):
        return Status.REFUSED_OUT_OF_RESOURCES
    if isinstance(error, PermanentError):
        return Status.CANNOT_UNDERSTAND
    return Status.UNABLE_TO_PROCESS
