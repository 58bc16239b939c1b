"""Proves that the ONNX written by `convert_openvino_ir.py` computes what the OpenVINO IR computes, on real aligned
face crops, by running the IR in the OpenVINO runtime (CPU, f32 inference precision) and the ONNX in onnxruntime.

Exit status is non-zero when the IR files do not have the pinned hashes, when the ONNX hash differs from
--expect-sha256, when fewer than --min-crops photos yield a face, or when any output differs by more than
--tolerance in absolute value.

Usage:
    verify_openvino_conversion.py [--onnx models/face-reid-retail-0095.onnx] [--photos ../shared/faces/deepface]
        [--expect-sha256 HEX] [--json OUT]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_pipeline as reference  # noqa: E402  (sibling script, not an installed package)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
RECOGNIZER_ID = "face-reid-retail-0095"
# The Open Model Zoo 2023.0 FP16 release, as listed in shared/README.md; a different IR would prove nothing about
# the file the project ships.
IR_XML_SHA256 = "ce53d2c9c08c0bd1c1660fb8a5b6d0e3e4ec19eb92f1036d2d83a85e83082dce"
IR_BIN_SHA256 = "241229ca3d206321868d46ce74a3c0b06c49cea58db7dc70b2e842ff287545d1"


class VerificationError(Exception):
    """The conversion does not match the IR, or the inputs are not the pinned ones."""


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_hash(path: Path, expected: str) -> None:
    actual = sha256_of(path)
    if actual != expected.lower():
        raise VerificationError(f"hashing {path}: sha256 {actual}, expected {expected}")


def gather_blobs(pipeline: reference.Pipeline, photos: list[Path]) -> tuple[list[Path], np.ndarray]:
    """Recognizer input blobs (N×3×128×128, BGR 0..255) of the largest face in each photo that has one."""
    used, blobs = [], []
    for photo in photos:
        crop = pipeline.aligned_crop(photo)
        if crop is None:
            continue
        used.append(photo)
        blobs.append(pipeline.recognizer.to_blob(crop)[0])
    return used, np.stack(blobs) if blobs else np.empty((0, 3, 128, 128), np.float32)


def run_openvino(xml: Path, weights: Path, blobs: np.ndarray) -> tuple[np.ndarray, float, str]:
    """Outputs one crop at a time (the IR's batch is fixed at 1); returns outputs, mean ms per crop, version."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(xml), str(weights))
    # Without the hint the CPU plugin may run in bf16 or f16 on capable hardware, which would hide or fake
    # differences far larger than the tolerance.
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    if "32" not in precision:
        raise VerificationError(f"compiling the IR: inference precision is {precision}, not f32")
    request = compiled.create_infer_request()
    request.infer({0: blobs[:1]})
    outputs = []
    start = time.perf_counter()
    for blob in blobs:
        result = request.infer({0: blob[np.newaxis]})
        outputs.append(np.array(next(iter(result.values()))).reshape(-1))
    elapsed = (time.perf_counter() - start) * 1e3 / len(blobs)
    return np.stack(outputs), elapsed, ov.__version__


def run_onnxruntime(onnx_path: Path, blobs: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Outputs one crop at a time and all crops in one batch (the ONNX's batch is dynamic, so both must agree)."""
    session = reference.open_session(onnx_path)
    session.run(["embedding"], {"input": blobs[:1]})
    start = time.perf_counter()
    single = np.stack([session.run(["embedding"], {"input": blob[np.newaxis]})[0].reshape(-1) for blob in blobs])
    elapsed = (time.perf_counter() - start) * 1e3 / len(blobs)
    batched = session.run(["embedding"], {"input": blobs})[0]
    return single, batched, elapsed


def compare(candidate: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Absolute difference per value; relative difference per embedding, against that embedding's largest
    magnitude, because single components near zero make element-wise ratios meaningless."""
    diff = np.abs(candidate.astype(np.float64) - truth.astype(np.float64))
    scale = np.abs(truth).max(axis=1, keepdims=True).astype(np.float64)
    cosine = np.sum(candidate * truth, axis=1) / (np.linalg.norm(candidate, axis=1) * np.linalg.norm(truth, axis=1))
    return {
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float((diff / scale).max()),
        "min_cosine": float(cosine.min()),
    }


def verify(args: argparse.Namespace) -> dict:
    check_hash(args.xml, IR_XML_SHA256)
    check_hash(args.bin, IR_BIN_SHA256)
    onnx_sha256 = sha256_of(args.onnx)
    if args.expect_sha256 and onnx_sha256 != args.expect_sha256.lower():
        raise VerificationError(f"hashing {args.onnx}: sha256 {onnx_sha256}, expected {args.expect_sha256}")

    pipeline = reference.Pipeline(RECOGNIZER_ID, args.models)
    start = time.perf_counter()
    photos, blobs = gather_blobs(pipeline, reference.collect_photos(args.photos))
    crop_seconds = time.perf_counter() - start
    if len(photos) < args.min_crops:
        raise VerificationError(f"gathering crops: only {len(photos)} photos had a face, need {args.min_crops}")

    expected, openvino_ms, openvino_version = run_openvino(args.xml, args.bin, blobs)
    single, batched, onnxruntime_ms = run_onnxruntime(args.onnx, blobs)
    report = {
        "onnx": str(args.onnx),
        "onnx_sha256": onnx_sha256,
        "crops": len(photos),
        "openvino": openvino_version,
        "tolerance": args.tolerance,
        "single": compare(single, expected),
        "batched": compare(batched, expected),
        "timing": {
            "crop_gathering_s": crop_seconds,
            "openvino_ms_per_crop": openvino_ms,
            "onnxruntime_ms_per_crop": onnxruntime_ms,
        },
    }
    worst = max(report["single"]["max_abs_diff"], report["batched"]["max_abs_diff"])
    report["passed"] = bool(worst <= args.tolerance)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--xml", type=Path, default=SHARED / "models" / "face-reidentification-retail-0095.xml")
    parser.add_argument("--bin", type=Path, default=SHARED / "models" / "face-reidentification-retail-0095.bin")
    parser.add_argument("--models", type=Path, default=reference.DEFAULT_MODELS_DIR,
                        help="directory with the YuNet model (and, by default, the converted ONNX)")
    parser.add_argument("--onnx", type=Path, help="converted ONNX (default: MODELS/face-reid-retail-0095.onnx)")
    parser.add_argument("--photos", nargs="+", default=[str(SHARED / "faces" / "deepface")])
    parser.add_argument("--min-crops", type=int, default=20)
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed absolute output difference")
    parser.add_argument("--expect-sha256", help="sha256 the ONNX file must have")
    parser.add_argument("--json", type=Path, help="write the report here as JSON")
    args = parser.parse_args(argv)
    if args.onnx is None:
        args.onnx = args.models / reference.RECOGNIZERS[RECOGNIZER_ID].file

    try:
        report = verify(args)
    except (VerificationError, reference.PipelineError, OSError) as err:
        print(f"verify_openvino_conversion: {err}", file=sys.stderr)
        return 1
    print(f"{report['onnx']} sha256 {report['onnx_sha256']}")
    print(f"{report['crops']} aligned crops, OpenVINO {report['openvino']} (CPU, f32) vs onnxruntime")
    for mode in ("single", "batched"):
        r = report[mode]
        print(f"  {mode:<7} max |diff| {r['max_abs_diff']:.3e}  max rel diff {r['max_rel_diff']:.3e}  "
              f"min cosine {r['min_cosine']:.9f}")
    t = report["timing"]
    print(f"  timing: crops {t['crop_gathering_s']:.2f} s, OpenVINO {t['openvino_ms_per_crop']:.3f} ms/crop, "
          f"onnxruntime {t['onnxruntime_ms_per_crop']:.3f} ms/crop (1 thread each)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if not report["passed"]:
        print(f"verify_openvino_conversion: max |diff| exceeds tolerance {args.tolerance}", file=sys.stderr)
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
