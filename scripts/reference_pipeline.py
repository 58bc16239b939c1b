"""Python/onnxruntime reference of facematch's pipeline (decode → YuNet → 5-point alignment → embedding), used for
parity checks against the Rust pipeline and as the baseline its speed is measured against.

It is a plain, normal implementation: OpenCV for decoding, resizing and warping, numpy for YuNet decoding, NMS and
the similarity fit, onnxruntime at one intra-op thread for both networks, batch size one.

Script modes:
    reference_pipeline.py --photos DIR_OR_FILES... --recognizer ID [--detector FILE] [--limit N] [--repeat R]
                          [--json OUT]
        times each stage over the photos (largest face per photo) and prints per-stage mean milliseconds.

The detector runs at its fixed input size (letterboxed) when the model has one; a model with a dynamic input size
(yunet_s_dynamic.onnx) gets the photo shrunk to fit 640 when larger, or enlarged up to --max-upscale (default 2,
as the Rust pipeline's `detection.max_upscale`) when smaller, padded to a multiple of 32.
    reference_pipeline.py --pairs pairs.csv --recognizer ID [--threshold T]
        embeds every photo in the pair list and prints verification accuracy at the best cosine threshold and at T.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

# The checkout's models/ folder, where the set-up puts the converted networks.
DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
DETECTOR_FILE = "face_detection_yunet_2023mar.onnx"
DETECTOR_INPUT_SIZE = 640
# Feature maps of the deepest stride must tile the input exactly.
DETECTOR_SIZE_MULTIPLE = 32
DETECTOR_STRIDES = (8, 16, 32)
DEFAULT_SCORE_THRESHOLD = 0.6
DEFAULT_NMS_IOU = 0.3
# Largest enlargement of a small photo for a dynamic-size detector (the Rust default): YuNet's landmarks are more
# precise on a larger face.
DEFAULT_MAX_UPSCALE = 2.0
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class PipelineError(Exception):
    """A photo or model the reference cannot process."""


@dataclass(frozen=True)
class RecognizerSpec:
    """How one embedding network wants its aligned crop."""

    id: str
    file: str
    size: int
    rgb: bool
    mean: tuple[float, float, float]
    divisor: float
    # Landmark positions in crop pixels, YuNet order: image-left eye, image-right eye, nose, left/right mouth corner
    template: tuple[tuple[float, float], ...]
    dim: int


RETAIL_0095_TEMPLATE_FRACTIONS = (
    (0.31556875, 0.46157411),
    (0.68262292, 0.46157411),
    (0.50026250, 0.64050536),
    (0.34947188, 0.82469196),
    (0.65343646, 0.82469196),
)

RECOGNIZERS = {
    "face-reid-retail-0095": RecognizerSpec(
        id="face-reid-retail-0095",
        file="face-reid-retail-0095.onnx",
        size=128,
        rgb=False,
        mean=(0.0, 0.0, 0.0),
        divisor=1.0,
        template=tuple((x * 128.0, y * 128.0) for x, y in RETAIL_0095_TEMPLATE_FRACTIONS),
        dim=256,
    ),
    "dlib-resnet-v1": RecognizerSpec(
        id="dlib-resnet-v1",
        file="dlib-resnet-v1.onnx",
        size=150,
        rgb=True,
        mean=(122.782, 117.001, 104.298),
        divisor=256.0,
        template=((47.55, 46.60), (100.48, 46.60), (74.01, 76.56), (50.41, 103.02), (97.61, 103.02)),
        dim=128,
    ),
}
# The int8 builds (scripts/quantize_recognizer.py) want the same crops as their sources.
for _source in ("dlib-resnet-v1", "face-reid-retail-0095"):
    RECOGNIZERS[f"{_source}-int8"] = replace(RECOGNIZERS[_source], id=f"{_source}-int8", file=f"{_source}-int8.onnx")


@dataclass(frozen=True)
class Detection:
    """A face in original-image pixel coordinates."""

    x: float
    y: float
    width: float
    height: float
    score: float
    landmarks: np.ndarray  # (5, 2) float32

    @property
    def area(self) -> float:
        return self.width * self.height


def open_session(path: Path) -> ort.InferenceSession:
    """One intra-op and one inter-op thread, sequential: the baseline is per-core work, like the Rust side's."""
    if not path.is_file():
        raise PipelineError(f"opening model {path}: file not found")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def decode_photo(path: Path) -> np.ndarray:
    """BGR uint8; IMREAD_COLOR applies the EXIF orientation and expands grayscale to three channels."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise PipelineError(f"decoding {path}: not a readable image")
    return image


def suppress_overlaps(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy NMS over (x, y, w, h) boxes, highest score first; a box goes when its IoU with a kept one exceeds
    the threshold."""
    order = np.argsort(-scores, kind="stable")
    x1, y1 = boxes[:, 0], boxes[:, 1]
    x2, y2 = x1 + boxes[:, 2], y1 + boxes[:, 3]
    areas = boxes[:, 2] * boxes[:, 3]
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        inter_w = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        inter_h = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = inter_w * inter_h
        union = areas[best] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
        order = rest[iou <= iou_threshold]
    return keep


class FaceDetector:
    """YuNet: at its fixed input size, letterboxed, or at the photo's own size for a dynamic-size model."""

    def __init__(self, model_path: Path, score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                 nms_iou: float = DEFAULT_NMS_IOU, max_upscale: float = DEFAULT_MAX_UPSCALE) -> None:
        self.session = open_session(model_path)
        self.max_upscale = max(1.0, max_upscale)
        self.model_file = model_path.name
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.output_names = [o.name for o in self.session.get_outputs()]
        input_shape = self.session.get_inputs()[0].shape
        # (height, width) of a fixed-size model; None when the model takes any size.
        self.fixed_size = (tuple(input_shape[2:]) if all(isinstance(d, int) for d in input_shape[2:]) else None)
        # Anchor-cell origins per stride depend only on the input size, so they are built once per size.
        self.grids: dict[tuple[int, int], dict[int, tuple[np.ndarray, np.ndarray]]] = {}

    def grid(self, input_h: int, input_w: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        if (input_h, input_w) not in self.grids:
            cells = {}
            for stride in DETECTOR_STRIDES:
                rows_n, cols_n = input_h // stride, input_w // stride
                rows, cols = np.divmod(np.arange(rows_n * cols_n, dtype=np.float32), cols_n)
                cells[stride] = (cols, rows)
            self.grids[(input_h, input_w)] = cells
        return self.grids[(input_h, input_w)]

    def letterbox(self, image: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Scales the photo (bilinear) to fit the model input — the fixed size, or for a dynamic model its own size
        shrunk to fit 640 or enlarged at most max_upscale times — and pads right/bottom with zeros; returns the NCHW blob and the per-axis scale factors
        from original to letterboxed pixels."""
        height, width = image.shape[:2]
        if self.fixed_size is not None:
            input_h, input_w = self.fixed_size
            scale = min(input_h / height, input_w / width)
        else:
            scale = min(self.max_upscale, DETECTOR_INPUT_SIZE / max(height, width))
        new_w = max(1, round(width * scale))
        new_h = max(1, round(height * scale))
        if self.fixed_size is not None:
            new_w, new_h = min(input_w, new_w), min(input_h, new_h)
        else:
            input_w = -(-new_w // DETECTOR_SIZE_MULTIPLE) * DETECTOR_SIZE_MULTIPLE
            input_h = -(-new_h // DETECTOR_SIZE_MULTIPLE) * DETECTOR_SIZE_MULTIPLE
        resized = image if (new_w, new_h) == (width, height) else cv2.resize(
            image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        canvas = np.zeros((input_h, input_w, 3), dtype=np.uint8)
        canvas[:new_h, :new_w] = resized
        blob = canvas.transpose(2, 0, 1)[np.newaxis].astype(np.float32)
        return blob, new_w / width, new_h / height

    def detect(self, image: np.ndarray) -> list[Detection]:
        blob, scale_x, scale_y = self.letterbox(image)
        grid = self.grid(blob.shape[2], blob.shape[3])
        outputs = dict(zip(self.output_names, self.session.run(self.output_names, {"input": blob})))
        all_boxes, all_scores, all_landmarks = [], [], []
        for stride in DETECTOR_STRIDES:
            cls = np.clip(outputs[f"cls_{stride}"][0, :, 0], 0, 1)
            obj = np.clip(outputs[f"obj_{stride}"][0, :, 0], 0, 1)
            scores = np.sqrt(cls * obj)
            chosen = np.nonzero(scores > self.score_threshold)[0]
            if chosen.size == 0:
                continue
            cols, rows = grid[stride]
            cols, rows = cols[chosen], rows[chosen]
            bbox = outputs[f"bbox_{stride}"][0, chosen]
            kps = outputs[f"kps_{stride}"][0, chosen].reshape(-1, 5, 2)
            centre_x = (cols + bbox[:, 0]) * stride
            centre_y = (rows + bbox[:, 1]) * stride
            box_w = np.exp(bbox[:, 2]) * stride
            box_h = np.exp(bbox[:, 3]) * stride
            all_boxes.append(np.stack([centre_x - box_w / 2, centre_y - box_h / 2, box_w, box_h], axis=1))
            all_scores.append(scores[chosen])
            landmarks = np.empty_like(kps)
            landmarks[:, :, 0] = (cols[:, None] + kps[:, :, 0]) * stride
            landmarks[:, :, 1] = (rows[:, None] + kps[:, :, 1]) * stride
            all_landmarks.append(landmarks)
        if not all_boxes:
            return []
        boxes = np.concatenate(all_boxes)
        scores = np.concatenate(all_scores)
        landmarks = np.concatenate(all_landmarks)
        # NMS runs in letterbox pixels, as OpenCV's FaceDetectorYN does, then everything maps back.
        keep = suppress_overlaps(boxes, scores, self.nms_iou)
        scale = np.array([scale_x, scale_y], dtype=np.float32)
        detections = []
        for i in keep:
            x, y, w, h = boxes[i]
            detections.append(Detection(
                x=float(x / scale_x), y=float(y / scale_y), width=float(w / scale_x), height=float(h / scale_y),
                score=float(scores[i]), landmarks=(landmarks[i] / scale).astype(np.float32),
            ))
        return detections


def fit_similarity(source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking source points onto target points
    (Umeyama 1991), as a 2×3 matrix for cv2.warpAffine; `weights` (one per point, default equal) weight each
    point's squared error."""
    source = source.astype(np.float64)
    target = target.astype(np.float64)
    w = np.full(len(source), 1 / len(source)) if weights is None else np.asarray(weights, np.float64) / np.sum(weights)
    source_mean, target_mean = w @ source, w @ target
    source_c, target_c = source - source_mean, target - target_mean
    covariance = (target_c * w[:, None]).T @ source_c
    u, singular, vt = np.linalg.svd(covariance)
    reflection = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        # The best orthogonal map would be a mirror; a face crop must never be flipped.
        reflection[1, 1] = -1
    rotation = u @ reflection @ vt
    source_variance = float(w @ (source_c ** 2).sum(axis=1))
    if source_variance <= 0:
        raise PipelineError("aligning face: landmarks are all at one point")
    scale = float(np.trace(np.diag(singular) @ reflection)) / source_variance
    translation = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, translation[:, None]])


class Recognizer:
    """Aligns a detected face to the network's template and embeds it."""

    def __init__(self, spec: RecognizerSpec, models_dir: Path) -> None:
        self.spec = spec
        self.session = open_session(models_dir / spec.file)
        self.input_name = self.session.get_inputs()[0].name
        self.template = np.array(spec.template, dtype=np.float64)
        self.mean = np.array(spec.mean, dtype=np.float32).reshape(3, 1, 1)

    def align(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        """The aligned crop, BGR uint8, spec.size square; outside the photo is black."""
        matrix = fit_similarity(detection.landmarks, self.template)
        return cv2.warpAffine(image, matrix, (self.spec.size, self.spec.size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))

    def to_blob(self, crop: np.ndarray) -> np.ndarray:
        """The network input, 1×3×size×size float32."""
        pixels = crop[:, :, ::-1] if self.spec.rgb else crop
        blob = pixels.transpose(2, 0, 1).astype(np.float32)
        if self.spec.divisor != 1.0 or any(self.spec.mean):
            blob = (blob - self.mean) / np.float32(self.spec.divisor)
        return blob[np.newaxis]

    def embed(self, crop: np.ndarray) -> np.ndarray:
        """The raw embedding, float32 of length spec.dim (not normalised)."""
        output = self.session.run(None, {self.input_name: self.to_blob(crop)})[0]
        embedding = output.reshape(-1)
        if embedding.size != self.spec.dim:
            raise PipelineError(f"embedding with {self.spec.id}: got {embedding.size} values, expected "
                                f"{self.spec.dim}")
        return embedding


def largest(detections: list[Detection]) -> Detection | None:
    return max(detections, key=lambda d: (d.area, d.score), default=None)


def normalise(embedding: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(embedding))
    return embedding / norm if norm > 0 else embedding


@dataclass
class StageTimes:
    decode: float = 0.0
    detect: float = 0.0
    align: float = 0.0
    embed: float = 0.0
    total: float = 0.0


class Pipeline:
    """Detector plus one recognizer, both loaded from a models directory."""

    def __init__(self, recognizer_id: str, models_dir: Path = DEFAULT_MODELS_DIR,
                 score_threshold: float = DEFAULT_SCORE_THRESHOLD, nms_iou: float = DEFAULT_NMS_IOU,
                 detector_file: str = DETECTOR_FILE, max_upscale: float = DEFAULT_MAX_UPSCALE) -> None:
        if recognizer_id not in RECOGNIZERS:
            raise PipelineError(f"choosing recognizer: unknown id {recognizer_id} (known: {', '.join(RECOGNIZERS)})")
        self.detector = FaceDetector(models_dir / detector_file, score_threshold, nms_iou, max_upscale)
        self.recognizer = Recognizer(RECOGNIZERS[recognizer_id], models_dir)

    def process(self, path: Path) -> tuple[np.ndarray | None, Detection | None, StageTimes]:
        """Embedding of the largest face in the photo (None when there is no face) and the time each stage took,
        in milliseconds."""
        times = StageTimes()
        start = time.perf_counter()
        image = decode_photo(path)
        after_decode = time.perf_counter()
        face = largest(self.detector.detect(image))
        after_detect = time.perf_counter()
        times.decode = (after_decode - start) * 1e3
        times.detect = (after_detect - after_decode) * 1e3
        if face is None:
            times.total = (after_detect - start) * 1e3
            return None, None, times
        crop = self.recognizer.align(image, face)
        after_align = time.perf_counter()
        embedding = self.recognizer.embed(crop)
        end = time.perf_counter()
        times.align = (after_align - after_detect) * 1e3
        times.embed = (end - after_align) * 1e3
        times.total = (end - start) * 1e3
        return embedding, face, times

    def aligned_crop(self, path: Path) -> np.ndarray | None:
        """The recognizer's aligned crop of the largest face, or None when there is none."""
        image = decode_photo(path)
        face = largest(self.detector.detect(image))
        return None if face is None else self.recognizer.align(image, face)


def collect_photos(items: list[str]) -> list[Path]:
    """Files as given, directories searched recursively; sorted within each directory so runs are repeatable."""
    photos: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            photos.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file()))
        elif path.is_file():
            photos.append(path)
        else:
            raise PipelineError(f"collecting photos: {item} does not exist")
    return photos


def benchmark(pipeline: Pipeline, photos: list[Path], repeat: int) -> dict:
    """Per-stage timings over every photo, repeat times; align/embed means are over photos with a face."""
    if not photos:
        raise PipelineError("benchmarking: no photos")
    # One untimed pass over the first photo so session start-up (allocator, kernel selection) is not billed.
    pipeline.process(photos[0])
    samples: dict[str, list[float]] = {"decode": [], "detect": [], "align": [], "embed": [], "total": []}
    faces = 0
    # Processor time of the whole timed loop: unlike wall time it does not grow when other processes take the CPU.
    cpu_start = time.process_time()
    for _ in range(repeat):
        faces = 0
        for photo in photos:
            embedding, _, times = pipeline.process(photo)
            samples["decode"].append(times.decode)
            samples["detect"].append(times.detect)
            samples["total"].append(times.total)
            if embedding is not None:
                faces += 1
                samples["align"].append(times.align)
                samples["embed"].append(times.embed)
    cpu_ms_per_photo = (time.process_time() - cpu_start) * 1e3 / (repeat * len(photos))
    return {
        "recognizer": pipeline.recognizer.spec.id,
        "detector": pipeline.detector.model_file,
        "photos": len(photos),
        "photos_with_face": faces,
        "repeat": repeat,
        "mean_ms": {k: (statistics.fmean(v) if v else None) for k, v in samples.items()},
        "median_ms": {k: (statistics.median(v) if v else None) for k, v in samples.items()},
        "cpu_ms_per_photo": cpu_ms_per_photo,
        "onnxruntime": ort.__version__,
        "opencv": cv2.__version__,
        "python": platform.python_version(),
        "threads": {"intra_op": 1, "inter_op": 1},
    }


def best_threshold(similarities: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """The cosine threshold (similarity >= t means same person) with the highest pair accuracy, taking the
    midpoint between neighbouring scores so the threshold does not sit on a sample; returns (threshold, accuracy)."""
    ordered = np.unique(similarities[np.isfinite(similarities)])
    candidates = np.concatenate([[ordered[0] - 1e-6], (ordered[:-1] + ordered[1:]) / 2, [ordered[-1] + 1e-6]])
    best_t, best_acc = float(candidates[0]), -1.0
    for t in candidates:
        acc = float(np.mean((similarities >= t) == same))
        if acc > best_acc:
            best_t, best_acc = float(t), acc
    return best_t, best_acc


def evaluate_pairs(pipeline: Pipeline, pairs_csv: Path, threshold: float | None) -> dict:
    """Pair verification over a file_x,file_y,same list; a photo without a face makes its pairs 'different'."""
    with pairs_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"file_x", "file_y", "same"} <= set(rows[0]):
        raise PipelineError(f"reading {pairs_csv}: expected columns file_x,file_y,same")
    base = pairs_csv.parent
    embeddings: dict[str, np.ndarray | None] = {}
    for name in sorted({r["file_x"] for r in rows} | {r["file_y"] for r in rows}):
        embedding, _, _ = pipeline.process(base / name)
        embeddings[name] = None if embedding is None else normalise(embedding)
    similarities = np.array([
        float(embeddings[r["file_x"]] @ embeddings[r["file_y"]])
        if embeddings[r["file_x"]] is not None and embeddings[r["file_y"]] is not None else -np.inf
        for r in rows
    ])
    same = np.array([r["same"].strip() in {"1", "true", "True"} for r in rows])
    best_t, best_acc = best_threshold(similarities, same)
    report = {
        "recognizer": pipeline.recognizer.spec.id,
        "pairs": len(rows),
        "same_pairs": int(same.sum()),
        "photos": len(embeddings),
        "photos_without_face": sorted(n for n, e in embeddings.items() if e is None),
        "best_threshold": best_t,
        "accuracy_at_best": best_acc,
        "mean_similarity_same": float(np.mean(similarities[same & np.isfinite(similarities)])),
        "mean_similarity_different": float(np.mean(similarities[~same & np.isfinite(similarities)])),
    }
    if threshold is not None:
        report["threshold"] = threshold
        report["accuracy_at_threshold"] = float(np.mean((similarities >= threshold) == same))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS_DIR, help="directory holding the ONNX models")
    parser.add_argument("--recognizer", default="face-reid-retail-0095", choices=sorted(RECOGNIZERS))
    parser.add_argument("--detector", default=DETECTOR_FILE,
                        help="detector ONNX file in --models (fixed-size or dynamic-size YuNet)")
    parser.add_argument("--photos", nargs="+", help="photo files or directories (searched recursively)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N photos (0: all)")
    parser.add_argument("--repeat", type=int, default=1, help="passes over the photos")
    parser.add_argument("--pairs", type=Path, help="pairs CSV (file_x,file_y,same) relative to its own folder")
    parser.add_argument("--threshold", type=float, help="cosine threshold to report pair accuracy at")
    parser.add_argument("--score-threshold", type=float, default=DEFAULT_SCORE_THRESHOLD)
    parser.add_argument("--nms-iou", type=float, default=DEFAULT_NMS_IOU)
    parser.add_argument("--max-upscale", type=float, default=DEFAULT_MAX_UPSCALE,
                        help="largest enlargement of a small photo for a dynamic-size detector")
    parser.add_argument("--json", type=Path, help="write the report here as JSON")
    args = parser.parse_args(argv)
    if (args.photos is None) == (args.pairs is None):
        parser.error("give exactly one of --photos or --pairs")
    if args.repeat < 1 or args.limit < 0:
        parser.error("--repeat must be >= 1 and --limit >= 0")
    try:
        pipeline = Pipeline(args.recognizer, args.models, args.score_threshold, args.nms_iou, args.detector,
                            args.max_upscale)
        if args.pairs is not None:
            report = evaluate_pairs(pipeline, args.pairs, args.threshold)
            print(f"{report['recognizer']} on {args.pairs}: {report['pairs']} pairs "
                  f"({report['same_pairs']} same), {len(report['photos_without_face'])} photos without a face")
            print(f"best threshold {report['best_threshold']:.4f}: accuracy {report['accuracy_at_best']:.4f}")
            if args.threshold is not None:
                print(f"threshold {args.threshold:.4f}: accuracy {report['accuracy_at_threshold']:.4f}")
        else:
            photos = collect_photos(args.photos)
            if args.limit:
                photos = photos[:args.limit]
            report = benchmark(pipeline, photos, args.repeat)
            print(f"{report['recognizer']}: {report['photos']} photos × {report['repeat']}, "
                  f"{report['photos_with_face']} with a face")
            for stage, value in report["mean_ms"].items():
                shown = "n/a" if value is None else f"{value:8.3f} ms"
                print(f"  {stage:<7} mean {shown}")
    except (PipelineError, OSError, ort.capi.onnxruntime_pybind11_state.Fail) as err:
        print(f"reference_pipeline: {err}", file=sys.stderr)
        return 1
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
