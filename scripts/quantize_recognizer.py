"""Int8 recognizers: builds a quantised ONNX file from a full-precision one and a committed table of activation ranges.

Two steps, kept apart so that the set-up never needs photos and every machine builds the same bytes:

    quantize_recognizer.py ranges --model dlib-resnet-v1-int8
        measures the activation ranges of every tensor the quantiser needs on aligned crops of 300 seeded photos of
        the first half, alphabetically, of ../shared/faces/lfw-dev's identities (the Python reference pipeline
        makes the crops) and writes models/<model>.ranges.json. Run by a developer when a recipe changes; the table
        is committed beside the manifest.

    quantize_recognizer.py build --model dlib-resnet-v1-int8
        what scripts/setup.sh runs: static QDQ quantisation of models/<source>.onnx (onnxruntime's quantize_static;
        per-channel symmetric int8 weights, uint8 activations at the committed ranges) into models/<model>.onnx.
        No inference runs, so the bytes depend only on the source file, the table and the pinned onnxruntime/onnx
        versions, and the manifest can pin their sha256.

Each int8 model's recipe is in RECIPES below; research/README.md records how each was chosen and tested on the
second half of lfw-dev's identities (research/quantization_study.py), docs/benchmarks.md ("Int8 recognizers") the
shipped builds' figures.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION_PHOTOS = 300
CALIBRATION_SEED = 1


class QuantizeError(Exception):
    """A step that cannot go on; the message says what to fix."""


@dataclass(frozen=True)
class Recipe:
    """How one int8 model is made from its full-precision source."""

    source: str
    calibration: CalibrationMethod = CalibrationMethod.MinMax
    # Run ONNX Runtime's basic graph optimisation before quantising (fuses each Conv with its bias Add, so the
    # pair is quantised as one node). Its folding is elementwise float arithmetic, the same on every x86 CPU.
    optimize: bool = False
    # Nodes left in float (names after the preparation step).
    keep_float: tuple[str, ...] = ()
    extra_options: dict = field(default_factory=dict)


RECIPES = {
    # dlib's ResNet keeps its accuracy with plain min-max ranges.
    "dlib-resnet-v1-int8": Recipe(source="dlib-resnet-v1"),
    # The MobileNetV2 of 0095 does not: the first convolution's output has channels spanning 1e-4 that feed
    # depthwise weights up to 161, and the input of the final 8x8 depthwise convolution has channels spanning 0.1
    # inside a tensor spanning 265, so one scale per tensor rounds them away (-6 dB and -1 dB against float).
    # Everything up to the first depthwise convolution and after the last residual Add stays float, and the
    # ranges clip at the 99.999th percentile.
    "face-reid-retail-0095-int8": Recipe(
        source="face-reid-retail-0095",
        calibration=CalibrationMethod.Percentile,
        optimize=True,
        keep_float=("Multiply_8165__3", "409__6", "Multiply_8175__9", "412__15", "Multiply_8182__18",
                    "Multiply_8504__669", "655__675", "Multiply_8511__678", "658__684"),
        extra_options={"CalibPercentile": 99.999},
    ),
}


def recipe_of(model: str) -> Recipe:
    if model not in RECIPES:
        raise QuantizeError(f"choosing a recipe: no int8 recipe for {model} (known: {', '.join(RECIPES)})")
    return RECIPES[model]


def prepare(source: Path, work: Path, recipe: Recipe) -> Path:
    """The source with inferred shapes (and, when the recipe asks, basic graph optimisation), as the quantiser
    wants it."""
    prepared = work / "prepared.onnx"
    quant_pre_process(str(source), str(prepared), skip_optimization=not recipe.optimize, skip_symbolic_shape=True)
    return prepared


def quantize(prepared: Path, out: Path, ranges: Path, recipe: Recipe, reader: CalibrationDataReader | None) -> None:
    """Static QDQ quantisation; with `reader` the ranges are measured and written to `ranges`, without it they are
    read from there."""
    quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=recipe.calibration, nodes_to_exclude=list(recipe.keep_float) or None,
                    extra_options=dict(recipe.extra_options), calibration_cache_path=str(ranges))


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

    recipe = recipe_of(args.model)
    out = ROOT / "models" / f"{args.model}.ranges.json"
    lfw = args.shared / "faces" / "lfw-dev"
    if not lfw.is_dir():
        raise QuantizeError(f"measuring ranges: {lfw} is missing (pass --shared)")
    if out.exists():
        raise QuantizeError(f"measuring ranges: {out} exists; remove it to measure again")
    pipeline = rp.Pipeline(recipe.source, ROOT / "models")
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
        prepared = prepare(ROOT / "models" / rp.RECOGNIZERS[recipe.source].file, work, recipe)
        quantize(prepared, work / "measured.onnx", out, recipe, Crops())
    # Sorted keys and one value a line, so that a re-measured table reads as a diff.
    table = json.loads(out.read_text())
    out.write_text(json.dumps(table, sort_keys=True, indent=0) + "\n")
    print(f"wrote {out}", file=sys.stderr)


def build(args: argparse.Namespace) -> None:
    recipe = recipe_of(args.model)
    models = ROOT / "models"
    source, table, out = models / f"{recipe.source}.onnx", models / f"{args.model}.ranges.json", models / f"{args.model}.onnx"
    if not source.is_file():
        raise QuantizeError(f"building {out}: source {source} is missing; run scripts/setup.sh")
    if not table.is_file():
        raise QuantizeError(f"building {out}: ranges table {table} is missing (it is committed in models/)")
    with tempfile.TemporaryDirectory(prefix="facematch-quantize.") as work:
        work = Path(work)
        # quantize_static reads the table when the file exists; a private copy guarantees it never writes to it.
        ranges = work / "ranges.json"
        ranges.write_bytes(table.read_bytes())
        staged = work / "quantized.onnx"
        quantize(prepare(source, work, recipe), staged, ranges, recipe, None)
        if ranges.read_bytes() != table.read_bytes():
            raise QuantizeError(f"building {out}: the quantiser re-measured the ranges instead of reading {table}; "
                                "is the table from another onnxruntime version?")
        out.write_bytes(staged.read_bytes())
    print(f"wrote {out}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = parser.add_subparsers(dest="step", required=True)
    ranges = steps.add_parser("ranges", help="measure activation ranges on lfw-dev crops")
    ranges.add_argument("--model", required=True, choices=sorted(RECIPES))
    ranges.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    built = steps.add_parser("build", help="quantise a model at its committed ranges")
    built.add_argument("--model", required=True, choices=sorted(RECIPES))
    args = parser.parse_args(argv)
    try:
        (measure_ranges if args.step == "ranges" else build)(args)
    except QuantizeError as error:
        print(f"quantize_recognizer: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
