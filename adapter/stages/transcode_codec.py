"""What one frame becomes: the pixel-module plan of a transcoding (PS3.5 8.2, PS3.3 C.7.6.3) and
the job a worker process runs on each frame (decode with pydicom's decoders, encode with
pylibjpeg-openjpeg / pyjpegls / pylibjpeg-rle, or lay out native little-endian bytes).

The plan is made in the parent from the header alone; :func:`transcode_frame` runs in a worker
and touches one frame only, so memory stays bounded by the frames in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import ENCODING_PROFILES, get_encoder
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

__all__ = [
    "ENCODING_PLUGINS",
    "NATIVE_TARGETS",
    "FramePlan",
    "UnsupportedError",
    "make_plan",
    "transcode_frame",
]

#: Targets whose Pixel Data is native (PS3.5 A.1, A.2, A.5): frames are laid out, not encoded.
NATIVE_TARGETS = frozenset(
    {ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian}
)
#: The encoder of each compressed target (see README "Transcoding" for why these).
ENCODING_PLUGINS = {
    JPEG2000Lossless: "pylibjpeg",  # pylibjpeg-openjpeg
    JPEG2000: "pylibjpeg",
    JPEGLSLossless: "pyjpegls",  # CharLS
    JPEGLSNearLossless: "pyjpegls",
    RLELossless: "pylibjpeg",  # pylibjpeg-rle
}
#: JPEG (ISO 10918) syntaxes: their YCbCr is decoded to RGB, as pydicom's pixel_array does.
_JPEG_10918 = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70",
    }
)
_J2K_MIN_SIZE = 32  # 5 decompositions of the 6 resolution levels openjpeg is given
_LOSSY_METHOD = {JPEG2000: "ISO_15444_1", JPEGLSNearLossless: "ISO_14495_1"}


class UnsupportedError(ValueError):
    """The target cannot hold this instance's pixels (or no decoder reads the source)."""


@dataclass(frozen=True)
class FramePlan:
    """Everything a worker needs for any frame of one instance (small, picklable)."""

    source_ts: str
    target_ts: str
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    source_photometric: str
    planar_configuration: int
    #: True: keep the decoded colour space; False: YCbCr -> RGB (JPEG 10918 sources).
    raw: bool
    #: Photometric Interpretation of the decoded frame (and of a native output).
    decoded_photometric: str
    #: Photometric Interpretation of the output (YBR_RCT/YBR_ICT: the encoder's colour transform).
    photometric: str
    encode_options: tuple[tuple[str, Any], ...] = field(default=())

    @property
    def native_out(self) -> bool:
        return UID(self.target_ts) in NATIVE_TARGETS

    @property
    def frame_length(self) -> int:
        """Bytes of one native output frame (interleaved, Planar Configuration 0)."""
        return self.rows * self.columns * self.samples_per_pixel * (self.bits_allocated // 8)

    @property
    def lossy(self) -> bool:
        return UID(self.target_ts) in _LOSSY_METHOD

    def header_updates(self, ds: Dataset, ratio: float | None = None) -> None:
        """Set the pixel-module attributes PS3.5 requires for the output (PS3.3 C.7.6.3)."""
        ds.PhotometricInterpretation = self.photometric
        if self.samples_per_pixel > 1:
            ds.PlanarConfiguration = 0
        elif "PlanarConfiguration" in ds:
            del ds.PlanarConfiguration
        for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
            if keyword in ds:
                delattr(ds, keyword)
        if self.lossy:  # PS3.3 C.7.6.1.1.5: lossy history is kept and extended
            ds.LossyImageCompression = "01"
            methods = list(_as_list(ds.get("LossyImageCompressionMethod")))
            ratios = list(_as_list(ds.get("LossyImageCompressionRatio")))
            ds.LossyImageCompressionMethod = [*methods, _LOSSY_METHOD[UID(self.target_ts)]]
            if ratio:  # Type 3: unknown (PSNR, near-lossless) until encoded, so left out
                ds.LossyImageCompressionRatio = [*ratios, f"{ratio:.4g}"[:16]]


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    return [value] if isinstance(value, str | bytes | int | float) else list(value)


def _decoded_photometric(source_ts: str, photometric: str) -> tuple[bool, str]:
    """(raw, Photometric Interpretation) of what pydicom's decoder gives for a frame."""
    if photometric in ("YBR_RCT", "YBR_ICT"):
        return True, "RGB"  # openjpeg undoes the colour transform
    if source_ts in _JPEG_10918 and photometric.startswith("YBR"):
        return False, "RGB"
    if photometric == "YBR_FULL_422":
        return True, "YBR_FULL"  # native 4:2:2 is expanded by the decoder
    return True, photometric


def make_plan(
    header: Dataset,
    source_ts: str,
    target_ts: str,
    *,
    colour_transform: bool = True,
    lossy: dict[str, Any] | None = None,
) -> FramePlan:
    """The plan for ``header`` (a data set up to Pixel Data); raises :class:`UnsupportedError`."""
    source, target = UID(source_ts), UID(target_ts)
    try:
        rows, columns = int(header.Rows), int(header.Columns)
        spp = int(header.get("SamplesPerPixel", 1))
        bits_allocated, bits_stored = int(header.BitsAllocated), int(header.BitsStored)
        pr = int(header.get("PixelRepresentation", 0))
        photometric = str(header.PhotometricInterpretation).strip()
    except (AttributeError, TypeError, ValueError) as exc:
        raise UnsupportedError(f"incomplete Image Pixel module: {str(exc)[:100]}") from None
    if bits_allocated not in (8, 16, 32) or bits_stored > bits_allocated:
        raise UnsupportedError(f"Bits Allocated {bits_allocated} / Bits Stored {bits_stored}")
    decoder = get_decoder(source) if source.is_compressed or source.is_little_endian else None
    if decoder is not None and not decoder.is_available:
        missing = ", ".join(decoder.missing_dependencies) or "a decoder"
        raise UnsupportedError(f"cannot decompress {source.name}: needs {missing}")
    raw, decoded = _decoded_photometric(str(source), photometric)
    out = decoded
    options: dict[str, Any] = {}
    if target in (JPEG2000Lossless, JPEG2000) and decoded == "RGB" and colour_transform:
        out = "YBR_RCT" if target == JPEG2000Lossless else "YBR_ICT"
    elif target in (JPEG2000Lossless, JPEG2000):
        options["use_mct"] = False  # PS3.5 8.2.4: a colour transform only with YBR_RCT/ICT
    if lossy:
        if lossy.get("compression_ratio"):
            options["j2k_cr"] = [float(lossy["compression_ratio"])]
        if lossy.get("psnr"):
            options["j2k_psnr"] = [float(lossy["psnr"])]
        if lossy.get("near_lossless_error"):
            options["jls_error"] = int(lossy["near_lossless_error"])
    if target in (JPEG2000Lossless, JPEG2000) and min(rows, columns) < _J2K_MIN_SIZE:
        raise UnsupportedError(
            f"{target.name}: a {columns}x{rows} frame is under {_J2K_MIN_SIZE} pixels wide or "
            "high (pylibjpeg-openjpeg always uses 6 resolution levels)"
        )
    if target not in NATIVE_TARGETS:
        encoder = get_encoder(target)
        plugin = ENCODING_PLUGINS[target]
        if plugin not in encoder._available:
            raise UnsupportedError(f"no {plugin} encoder for {target.name} installed")
        profiles = ENCODING_PROFILES.get(target, [])
        if not any(
            p[0] == out
            and p[1] == spp
            and pr in p[2]
            and bits_allocated in p[3]
            and bits_stored in p[4]
            for p in profiles
        ):
            raise UnsupportedError(
                f"{target.name} cannot hold {out}, {spp} sample(s), {bits_allocated} bits "
                f"allocated, {bits_stored} stored, pixel representation {pr}"
            )
    return FramePlan(
        str(source),
        str(target),
        rows,
        columns,
        spp,
        bits_allocated,
        bits_stored,
        pr,
        photometric,
        int(header.get("PlanarConfiguration", 0) or 0),
        raw,
        decoded,
        out,
        tuple(sorted(options.items())),
    )


def _pixel_options(plan: FramePlan, photometric: str, ts: str) -> dict[str, Any]:
    return {
        "rows": plan.rows,
        "columns": plan.columns,
        "samples_per_pixel": plan.samples_per_pixel,
        "bits_allocated": plan.bits_allocated,
        "bits_stored": plan.bits_stored,
        "pixel_representation": plan.pixel_representation,
        "photometric_interpretation": photometric,
        "planar_configuration": 0,
        "number_of_frames": 1,
        "transfer_syntax_uid": UID(ts),
        "pixel_keyword": "PixelData",
    }


def transcode_frame(plan: FramePlan, src: bytes) -> bytes:
    """One frame of the source (a compressed frame's bytes, or a native frame) in the target:
    a codestream, or native little-endian bytes. Runs in a worker process."""
    source = UID(plan.source_ts)
    options = _pixel_options(plan, plan.source_photometric, plan.source_ts)
    options["planar_configuration"] = plan.planar_configuration
    buffer = encapsulate([src]) if source.is_compressed else src
    try:
        arr, meta = get_decoder(source).as_array(buffer, raw=plan.raw, **options)
    except Exception as exc:  # pydicom and the codecs raise ValueError, RuntimeError...
        raise ValueError(f"cannot decompress {source.name}: {str(exc)[:200]}") from None
    got = str(meta.get("photometric_interpretation", plan.decoded_photometric))
    if got != plan.decoded_photometric and not (
        got == "YBR_FULL_422" and plan.decoded_photometric == "YBR_FULL"
    ):
        raise ValueError(f"decoded as {got}, expected {plan.decoded_photometric}")
    if plan.native_out:
        return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    target = UID(plan.target_ts)
    opts = _pixel_options(plan, plan.photometric, plan.target_ts)
    opts.update(dict(plan.encode_options))
    del opts["transfer_syntax_uid"], opts["pixel_keyword"]
    return bytes(get_encoder(target).encode(arr, encoding_plugin=ENCODING_PLUGINS[target], **opts))
