"""The encoder comparison behind the transcoder's choice: pydicom's encoders (pylibjpeg-openjpeg,
pyjpegls, pylibjpeg-rle, and pydicom's own RLE) against python-gdcm, per frame: CPU ms to encode,
compression ratio, and whether the round trip is lossless.

    python benchmarks/codecs.py [--repeat 5]      # needs python-gdcm (benchmarks/requirements.txt)

gdcm works on whole images read by its own reader (gdcm.ImageReader loads every frame), so its
figure covers ImageChangeTransferSyntax on an image already read, written back to a file.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import UID, JPEG2000Lossless, JPEGLSLossless, RLELossless

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.peers.datasets import make_ct_series, make_secondary_capture

SYNTAXES = (JPEG2000Lossless, JPEGLSLossless, RLELossless)


def pydicom_row(ds: pydicom.Dataset, ts: str, plugin: str, repeat: int) -> str:
    arr = ds.pixel_array
    opts = dict(
        rows=ds.Rows,
        columns=ds.Columns,
        samples_per_pixel=ds.SamplesPerPixel,
        bits_allocated=ds.BitsAllocated,
        bits_stored=ds.BitsStored,
        pixel_representation=ds.PixelRepresentation,
        number_of_frames=1,
        photometric_interpretation=ds.PhotometricInterpretation,
        planar_configuration=0,
    )
    enc = get_encoder(ts)
    t = time.process_time()
    for _ in range(repeat):
        out = enc.encode(arr, encoding_plugin=plugin, **opts)
    ms = (time.process_time() - t) / repeat * 1000
    copy = ds.copy()
    copy.PixelData = encapsulate([out])
    copy.file_meta.TransferSyntaxUID = UID(ts)
    equal = np.array_equal(copy.pixel_array, arr)
    return f"{plugin:10s} {ms:8.1f} ms  ratio {arr.nbytes / len(out):5.2f}  lossless={equal}"


def gdcm_row(path: Path, ts: str, repeat: int, work: Path) -> str:
    import gdcm  # type: ignore[import-untyped]

    syntax = {
        JPEG2000Lossless: gdcm.TransferSyntax.JPEG2000Lossless,
        JPEGLSLossless: gdcm.TransferSyntax.JPEGLSLossless,
        RLELossless: gdcm.TransferSyntax.RLELossless,
    }[UID(ts)]
    total = 0.0
    out = work / "gdcm.dcm"
    for _ in range(repeat):
        reader = gdcm.ImageReader()
        reader.SetFileName(str(path))
        reader.Read()
        t = time.process_time()
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(syntax))
        change.SetInput(reader.GetImage())
        assert change.Change()
        writer = gdcm.ImageWriter()
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        writer.SetFileName(str(out))
        assert writer.Write()
        total += time.process_time() - t
    got, src = pydicom.dcmread(out), pydicom.dcmread(path)
    frame = next(generate_frames(got.PixelData, number_of_frames=1))
    equal = np.array_equal(got.pixel_array, src.pixel_array)
    ratio = src.pixel_array.nbytes / len(frame)
    return f"{'gdcm':10s} {total / repeat * 1000:8.1f} ms  ratio {ratio:5.2f}  lossless={equal}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images = {
            "CT 512x512 16-bit (12 stored)": make_ct_series(work / "ct", 1)[0],
            "RGB 640x480 8-bit": make_secondary_capture(work, rows=480, cols=640),
            "tiny 16x16 16-bit": make_ct_series(work / "tiny", 1, rows=16, cols=16)[0],
        }
        for name, path in images.items():
            ds = pydicom.dcmread(path)
            print(name)
            for ts in SYNTAXES:
                print(f"  {ts.name}")
                for plugin in [p for p in get_encoder(ts)._available if p != "gdcm"]:
                    try:
                        print("    " + pydicom_row(ds, ts, plugin, args.repeat))
                    except Exception as exc:
                        print(f"    {plugin:10s} FAILED: {str(exc)[:90]}")
                try:
                    print("    " + gdcm_row(path, ts, args.repeat, work))
                except ImportError:
                    print("    gdcm       (python-gdcm not installed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
