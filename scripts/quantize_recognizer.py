"""Int8 recognizers: builds a quantised ONNX file from a full-precision one and a committed table of activation ranges.

Two steps, kept apart so that the set-up never needs photos and every machine builds the same bytes:

    quantize_recognizer.py ranges --recognizer dlib-resnet-v1 --out models/dlib-resnet-v1-int8.ranges.json
        measures the activation ranges (min-max over every tensor the quantiser needs) on aligned crops of 300
        seeded photos of the first half, alphabetically, of ../shared/faces/lfw-dev's identities, with the Python
        reference pipeline. Run by a developer when the recipe changes; the table is committed beside the manifest.

    quantize_recognizer.py build --source models/dlib-resnet-v1.onnx --ranges models/dlib-resnet-v1-int8.ranges.json
                                 --out models/dlib-resnet-v1-int8.onnx
        what scripts/setup.sh runs: static QDQ quantisation (onnxruntime's quantize_static; per-channel symmetric int8
        weights, uint8 activations at the committed ranges). No inference runs, so the bytes depend only on the
        source file, the table and the pinned onnxruntime/onnx versions, and the manifest can pin their sha256.

The recipe is the one measured in docs/benchmarks.md ("Int8 weights"), where scripts/quantization_study.py tests it on
the second half of lfw-dev's identities.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION_PHOTOS = 300
CALIBRATION_SEED = 1


class QuantizeError(Exception):
    """A step that cannot go on; the message says what to fix."""


def prepare(source: Path, work: Path) -> Path:
    """The source with inferred shapes, as the quantiser wants it. ONNX Runtime's graph optimisation is skipped on
    purpose: its constant folding runs float kernels whose results may depend on the CPU, which would make the
    built file differ between machines; the runtime applies the same optimisations when it loads the file."""
    prepared = work / "prepared.onnx"
    quant_pre_process(str(source), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
    return prepared


def quantize(prepared: Path, out: Path, ranges: Path, reader: CalibrationDataReader | None) -> None:
    """Static QDQ quantisation; with `reader` the ranges are measured and written to `ranges`, without it they are
    read from there."""
    quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibration_cache_path=str(ranges))


def calibration_photos(lfw: Path) -> list[Path]:
    people = sorted(p for p in lfw.iterdir() if p.is_dir())
    if not people:
        raise QuantizeError(f"reading calibration photos: {lfw} has no identity folders")
    tuning = people[: len(people) // 2]
    photos = [f for person in tuning for f in sorted(person.iterdir())]
    random.seed(CALIBRATION_SEED)
    return random.sample(photos, min(CALIBRATION_PHOTOS, len(photos)))


def measure_ranges(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    import reference_pipeline as rp

    lfw = args.shared / "faces" / "lfw-dev"
    if not lfw.is_dir():
        raise QuantizeError(f"measuring ranges: {lfw} is missing (pass --shared)")
    if args.out.exists():
        raise QuantizeError(f"measuring ranges: {args.out} exists; remove it to measure again")
    pipeline = rp.Pipeline(args.recognizer, ROOT / "models")
    recognizer = pipeline.recognizer
    blobs = []
    for photo in calibration_photos(lfw):
        crop = pipeline.aligned_crop(photo)
        if crop is not None:
            blobs.append({recognizer.input_name: recognizer.to_blob(crop)})
    print(f"calibration crops: {len(blobs)}", file=sys.stderr)

    class Crops(CalibrationDataReader):
        def __init__(self) -> None:
            self.remaining = iter(blobs)

        def get_next(self):
            return next(self.remaining, None)

    with tempfile.TemporaryDirectory(prefix="facematch-quantize.") as work:
        work = Path(work)
        prepared = prepare(ROOT / "models" / rp.RECOGNIZERS[args.recognizer].file, work)
        quantize(prepared, work / "measured.onnx", args.out, Crops())
    # Sorted keys and one tensor a line, so that a re-measured table reads as a diff.
    table = json.loads(args.out.read_text())
    args.out.write_text(json.dumps(table, sort_keys=True, indent=0) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


def build(args: argparse.Namespace) -> None:
    if not args.source.is_file():
        raise QuantizeError(f"building {args.out}: source {args.source} is missing; run scripts/setup.sh")
    if not args.ranges.is_file():
        raise QuantizeError(f"building {args.out}: ranges table {args.ranges} is missing (it is committed in models/)")
    with tempfile.TemporaryDirectory(prefix="facematch-quantize.") as work:
        work = Path(work)
        # quantize_static reads the table when the file exists; a private copy guarantees it never writes to it.
        ranges = work / "ranges.json"
        ranges.write_bytes(args.ranges.read_bytes())
        staged = work / "quantized.onnx"
        quantize(prepare(args.source, work), staged, ranges, None)
        if ranges.read_bytes() != args.ranges.read_bytes():
            raise QuantizeError(f"building {args.out}: the quantiser re-measured the ranges instead of reading "
                                f"{args.ranges}; is the table from another onnxruntime version?")
        args.out.write_bytes(staged.read_bytes())
    print(f"wrote {args.out}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = parser.add_subparsers(dest="step", required=True)
    ranges = steps.add_parser("ranges", help="measure activation ranges on lfw-dev crops")
    ranges.add_argument("--recognizer", required=True)
    ranges.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ranges.add_argument("--out", type=Path, required=True)
    built = steps.add_parser("build", help="quantise a model at committed ranges")
    built.add_argument("--source", type=Path, required=True)
    built.add_argument("--ranges", type=Path, required=True)
    built.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        (measure_ranges if args.step == "ranges" else build)(args)
    except QuantizeError as error:
        print(f"quantize_recognizer: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
