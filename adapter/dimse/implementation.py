"""The adapter's own DICOM implementation identity (PS3.7 D.3.3.2, D.3.3.3; PS3.10 7.1).

Announced in every A-ASSOCIATE-RQ/AC the adapter sends -- the native acceptor and requestor and
the pynetdicom paths alike -- and written into the File Meta Information of every file it
receives, so a PACS log or a stored file names dicom-adapter, not the toolkit underneath.
"""

from __future__ import annotations

from typing import Final

__all__ = ["IMPLEMENTATION_CLASS_UID", "IMPLEMENTATION_VERSION_NAME"]

#: A UUID-derived UID (PS3.5 B.2, root 2.25), chosen once and never changed.
IMPLEMENTATION_CLASS_UID: Final = "2.25.70996986412795658175058173043772019407"

#: 1-16 characters of the SH repertoire (PS3.7 D.3.3.3): the release's major and minor version.
IMPLEMENTATION_VERSION_NAME: Final = "DICOMADAPTER_0_1"
