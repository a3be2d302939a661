"""The de-identification stage: PS3.15 Annex E (the Basic Application Level Confidentiality
Profile and its options) or the Java adapter's redactor, on a Part-10 file, without ever
holding Pixel Data in memory.

The header (everything before Pixel Data) is read with pydicom, cleaned and written anew; the
Pixel Data element is copied byte for byte from the source file (``sendfile``); what follows
it (rarely anything: padding, signatures, private groups) is parsed and cleaned like the
header. Deflated and Big Endian files, which that scan does not read, are rewritten whole.

Burned-in annotation: pixel data is never redacted. An instance whose pixels may show text
(Burned In Annotation YES, Recognizable Visual Features YES, or no Burned In Annotation at
all in a SOP class that often burns text in: ultrasound, secondary capture, visible light) is
passed or quarantined (a PermanentError: the pipeline dead-letters it with the reason).
"""

from __future__ import annotations

import logging
import struct
import uuid
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset, FileDataset
from pydicom.filebase import DicomFileLike
from pydicom.filereader import read_dataset
from pydicom.filewriter import dcmwrite, write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from adapter.errors import ConfigError, PermanentError
from adapter.part10_scan import ScanError, element_end, scan_part10_header
from adapter.pipeline.instance import Instance
from adapter.provenance import ProvenanceLog
from adapter.stages import StageContext
from adapter.stages.deid_actions import BasicProfile, InstanceFacts, RedactProfile, shift_date
from adapter.stages.deid_fast import FastJob, Written, rewrite_file, send_bytes
from adapter.stages.deid_raw import UnsupportedError, element
from adapter.stages.deid_table import ActionTable, chc_basic_tags
from adapter.stages.deid_uids import UidMapper
from adapter.stages.deidentify_config import DeidentifyStageConfig, parse_tag

__all__ = ["DeidentifyStage", "burned_in_reason"]

log = logging.getLogger(__name__)

_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_PIXEL_DATA = 0x7FE00010
_MAX_TAIL = 16 << 20  # after Pixel Data: padding, signatures; more is not an image we know
#: SOP classes whose pixels often carry burned-in text (UIDs of PS3.4 Annex B, by prefix).
_OFTEN_BURNED_IN = (
    "1.2.840.10008.5.1.4.1.1.6.",  # ultrasound (and enhanced/volume)
    "1.2.840.10008.5.1.4.1.1.3.1",  # ultrasound multi-frame
    "1.2.840.10008.5.1.4.1.1.7",  # secondary capture (all kinds)
    "1.2.840.10008.5.1.4.1.1.77.1.",  # visible light (endoscopy, photographs, video)
)
_TEXT_CLEANING = frozenset(
    {
        "clean_descriptors",
        "clean_structured_content",
        "retain_patient_characteristics",
        "retain_device_identity",
    }
)
#: PS3.16 CID 7050 codes of the profile and of each option (DCM coding scheme).
_METHOD_CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "clean_graphics": ("113103", "Clean Graphics Option"),
    "clean_structured_content": ("113104", "Clean Structured Content Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "retain_longitudinal_full_dates": (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    "retain_longitudinal_modified_dates": (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_uids": ("113110", "Retain UIDs Option"),
    "retain_institution_identity": ("113112", "Retain Institution Identity Option"),
}


def burned_in_reason(
    burned: str, features: str, sop_class_uid: str, has_pixels: bool
) -> str | None:
    """Why the pixels may identify the patient (None: the header vouches they do not), from
    Burned In Annotation and Recognizable Visual Features."""
    burned = burned.strip().upper()
    if burned == "YES":
        return "Burned In Annotation is YES"
    if features.strip().upper() == "YES":
        return "Recognizable Visual Features is YES"
    if has_pixels and burned != "NO" and sop_class_uid.startswith(_OFTEN_BURNED_IN):
        return "no Burned In Annotation NO, in a SOP class that often burns text in"
    return None


class DeidentifyStage:
    """One configured ``kind: deidentify`` stage (thread-safe: no per-instance state)."""

    def __init__(
        self, name: str, config: DeidentifyStageConfig, provenance: ProvenanceLog | None = None
    ) -> None:
        self.name = name
        self.config = config
        self.provenance = provenance
        self.uids = UidMapper(config.uids)
        self.profile: BasicProfile | RedactProfile
        options = set(config.options)
        self.modified_dates = "retain_longitudinal_modified_dates" in options
        #: the options whose C actions clean text (the patient's words are looked up then)
        self.cleans_text = bool(options & _TEXT_CLEANING)
        if config.profile == "basic":
            table = ActionTable.for_options(config.options, [parse_tag(t) for t in config.keep])
            self.profile = BasicProfile(table, config.keep_private, self.modified_dates)
            self._maps_media_storage_uid = table.action(0x00020003) in ("U", "D")
        else:
            keep = config.keep_list is not None
            names = config.keep_list or config.remove_list or ()
            if config.filter_profile == "CHC_BASIC":
                names = chc_basic_tags()
            self.profile = RedactProfile([parse_tag(n) for n in names], keep_list=keep)
            self._maps_media_storage_uid = True
        #: the byte-level path (deid_raw) does all but text cleaning and private keep rules
        self.fast = not self.cleans_text and not config.keep_private

    @classmethod
    def from_config(cls, name: str, config: object, context: StageContext) -> DeidentifyStage:
        if not isinstance(config, DeidentifyStageConfig):
            raise ConfigError(f"stages.{name}: not a deidentify stage")
        return cls(name, config, context.provenance)

    # ----------------------------------------------------------------------- the stage
    def process(self, instance: Instance, work_dir: Path) -> Instance:
        out = Path(work_dir) / f"deid-{uuid.uuid4().hex}.dcm"
        try:
            written = self._rewrite(instance, out)
        except PermanentError:
            out.unlink(missing_ok=True)
            raise
        except Exception as exc:  # a value pydicom cannot read or write: never its text (PHI)
            out.unlink(missing_ok=True)
            raise PermanentError(f"de-identification failed: {type(exc).__name__}") from exc
        meta = replace(
            instance.meta,
            sop_instance_uid=written.sop or instance.sop_instance_uid,
            study_instance_uid=written.study,
            series_instance_uid=written.series,
            transfer_syntax_uid=written.transfer_syntax or None,
        )
        calling = instance.origin.calling_ae
        if (
            self.provenance is not None
            and calling
            and meta.sop_instance_uid != instance.meta.sop_instance_uid
        ):
            self.provenance.record(meta.sop_instance_uid, calling)  # the echo guard knows it
        return instance.rewritten(out, meta)

    def _facts(self, header: Dataset) -> InstanceFacts:
        offset = None
        if self.modified_dates:
            fixed = self.config.date_offset_days
            offset = (lambda _: fixed) if fixed is not None else self.uids.day_offset
        return InstanceFacts.of(header, self.uids, offset, self.cleans_text, self.uids.pseudonym)

    def _check_burned_in(self, header: Dataset, instance: Instance, has_pixels: bool) -> None:
        burned = str(header.get("BurnedInAnnotation", "") or "")
        features = str(header.get("RecognizableVisualFeatures", "") or "")
        self._burned_in(instance, burned, features, has_pixels)

    def _burned_in(self, instance: Instance, burned: str, features: str, pixels: bool) -> None:
        if self.config.burned_in == "pass":
            return
        reason = burned_in_reason(burned, features, instance.sop_class_uid, pixels)
        if reason is not None:
            raise PermanentError(
                f"de-identification ({self.name}): {reason}; quarantined by the burned_in "
                "policy (pixel data is not redacted)"
            )

    def _rewrite(self, instance: Instance, out: Path) -> Written:
        size = instance.path.stat().st_size
        with open(instance.path, "rb") as src:
            try:
                scan = scan_part10_header(src, size)
            except ScanError:
                return _written(self._rewrite_whole(instance, src, out))
            if self.fast:
                try:
                    return rewrite_file(src, size, scan, out, self._job(instance))
                except UnsupportedError as exc:
                    out.unlink(missing_ok=True)  # the pydicom path below, which names problems
                    log.debug(
                        "de-identification: the byte-level path passes (%s)",
                        exc,
                        extra={"sop_instance_uid": instance.sop_instance_uid},
                    )
            src.seek(0)
            header = dcmread(src, stop_before_pixels=True, force=True)
            implicit = scan.transfer_syntax_uid == _IMPLICIT_LE
            start = scan.pixel_pos
            end = element_end(src, size, start, implicit) if start < size else size
            tail: Dataset | None = None
            if end < size:
                if size - end > _MAX_TAIL:
                    raise PermanentError("more data after Pixel Data than padding or signatures")
                src.seek(end)
                tail = read_dataset(src, implicit, True, bytelength=size - end)
            self._check_burned_in(header, instance, start < size)
            facts = self._facts(header)
            self._clean(header, facts)
            if tail is not None:
                self.profile.apply(tail, facts, 0)
            if (
                start < size
                and isinstance(self.profile, RedactProfile)
                and self.profile.nulls(_PIXEL_DATA)
            ):
                # the Java redactor emptied Pixel Data, and then wrote Explicit VR Little Endian
                encapsulated = scan.transfer_syntax_uid not in (_IMPLICIT_LE, _EXPLICIT_LE)
                header.add_new(_PIXEL_DATA, "OB" if encapsulated else "OW", None)
                if encapsulated and not implicit:
                    header.file_meta.TransferSyntaxUID = UID(_EXPLICIT_LE)
                start = end
            with open(out, "wb") as dst:
                dcmwrite(dst, header, enforce_file_format=True)
                send_bytes(src, dst, start, end)
                if tail is not None and len(tail):
                    writer = DicomFileLike(dst)
                    writer.is_implicit_VR, writer.is_little_endian = implicit, True
                    write_dataset(writer, tail)
        return _written(header)

    def _job(self, instance: Instance) -> FastJob:
        offset = None
        if self.modified_dates:
            fixed = self.config.date_offset_days
            offset = (lambda _: fixed) if fixed is not None else self.uids.day_offset
        nulls = isinstance(self.profile, RedactProfile) and self.profile.nulls(_PIXEL_DATA)
        return FastJob(
            decide=self.profile.raw_action,
            map_uid=self.uids,
            pseudonym=self.uids.pseudonym,
            day_offset=offset,
            shift=shift_date,
            inserts=self._inserts,
            maps_media_storage_uid=self._maps_media_storage_uid,
            nulls_pixel_data=nulls,
            check_burned_in=lambda b, f, p: self._burned_in(instance, b, f, p),
            max_tail=_MAX_TAIL,
        )

    def _inserts(self, implicit: bool) -> list[tuple[int, bytes]]:
        """The elements _mark adds, encoded (the fast path)."""
        if not isinstance(self.profile, BasicProfile):
            return []
        items = b""
        for value, meaning in self._codes():
            item = element(0x00080100, "SH", value.encode(), implicit)
            item += element(0x00080102, "SH", b"DCM", implicit)
            item += element(0x00080104, "LO", meaning.encode(), implicit)
            items += struct.pack("<HHL", 0xFFFE, 0xE000, len(item)) + item
        return [
            (0x00120062, element(0x00120062, "CS", b"YES", implicit)),
            (0x00120063, element(0x00120063, "LO", self._method().encode(), implicit)),
            (0x00120064, element(0x00120064, "SQ", items, implicit)),
            (0x00280303, element(0x00280303, "CS", self._longitudinal().encode(), implicit)),
        ]

    def _rewrite_whole(self, instance: Instance, src: BinaryIO, out: Path) -> FileDataset:
        """Deflated or Big Endian: the scan does not read it, pydicom rewrites it whole."""
        src.seek(0)
        ds = dcmread(src, force=True)
        self._check_burned_in(ds, instance, "PixelData" in ds)
        self._clean(ds, self._facts(ds))
        with open(out, "wb") as dst:
            dcmwrite(dst, ds, enforce_file_format=True)
        return ds

    def _clean(self, header: FileDataset, facts: InstanceFacts) -> None:
        self.profile.apply(header, facts, 0)
        meta = header.file_meta
        if "MediaStorageSOPInstanceUID" in meta and self._maps_media_storage_uid:
            old = str(meta.MediaStorageSOPInstanceUID)
            meta.MediaStorageSOPInstanceUID = UID(facts.map_uid(old))
        if isinstance(self.profile, BasicProfile):
            self._mark(header)

    def _method(self) -> str:
        return "PS3.15 E.1 Basic Profile" + (" with options" if self.config.options else "")

    def _codes(self) -> list[tuple[str, str]]:
        return [_METHOD_CODES[k] for k in ("basic", *self.config.options) if k in _METHOD_CODES]

    def _longitudinal(self) -> str:
        if self.modified_dates:
            return "MODIFIED"
        if "retain_longitudinal_full_dates" in self.config.options:
            return "UNMODIFIED"
        return "REMOVED"

    def _mark(self, ds: Dataset) -> None:
        """PS3.15 E.1.1: say that (and how) the instance was de-identified."""
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = self._method()
        codes = Sequence()
        for value, meaning in self._codes():
            item = Dataset()
            item.CodeValue, item.CodeMeaning = value, meaning
            item.CodingSchemeDesignator = "DCM"
            codes.append(item)
        ds.DeidentificationMethodCodeSequence = codes
        ds.LongitudinalTemporalInformationModified = self._longitudinal()


def _written(ds: FileDataset) -> Written:
    def text(value: object) -> str | None:
        return str(value) if value not in (None, "") else None

    return Written(
        text(ds.get("SOPInstanceUID")),
        text(ds.get("StudyInstanceUID")),
        text(ds.get("SeriesInstanceUID")),
        str(ds.file_meta.get("TransferSyntaxUID", "") or ""),
    )
