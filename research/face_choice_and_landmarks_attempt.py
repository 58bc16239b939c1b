"""Attempts (measured with the Python reference; the first was built): which face is the subject, how
precise its landmarks are, and crop jitter, against FNIR at FPIR 1 % on lfw-dev.

Every photo of lfw-dev goes through scripts/reference_pipeline.py (yunet_s_dynamic.onnx, OpenCV warp) under these
variants, each the subject's normalised template:

    1x/largest      detector at the photo's own size, largest face (the reference as it is)
    1x/central      same detections, the most central face among those at least half the largest's area
    2x/largest      detector on the photo enlarged 2x (what the Rust default detector, the fixed 640x640 YuNet with
                    max_upscale 2, does to a 250 px photo), largest face
    2x/central      the same with the central choice (what the Rust pipeline does since 2026-11-22)
    2x/mirror       2x/central with its landmarks averaged with those found in the mirrored photo
    2x/jitter       2x/central, template = mean of 7 crops: the aligned one, scaled 0.95 and 1.05, shifted 2 px
                    in each direction
    2x/mirror+jitter
    2.56x/central   detector at 2.56x (the photo letterboxed into 640)
    landmarks x4    landmarks averaged over 2x, 2x mirrored, 2.56x, 2.56x mirrored

Protocol: `facematch eval identify`'s open-set protocol (first photo of every identity with >= 2 photos enrolled,
single-photo identities alternating between gallery distractors and non-mated searches), on all of lfw-dev and on
20 halves of its identities (10 seeded stratified halvings, both halves of each). Nothing is fitted to labels, so
every half is held out; the halves show how stable a change is. FNIR at FPIR 1 % counts a mated search as found
when its top candidate is its mate and the decision score exceeds the (floor(0.01 n) + 1)-th highest non-mated one.

    .venv/bin/python research/face_choice_and_landmarks_attempt.py --recognizer face-reid-retail-0095 \
        --out reports/attempts/face-choice-0095.jsonl      # about 15 minutes on one core
    .venv/bin/python research/face_choice_and_landmarks_attempt.py --recognizer dlib-resnet-v1 \
        --out reports/attempts/face-choice-dlib.jsonl --report-only   # re-reads the templates

With --fuse OTHER.jsonl (another recognizer's output of this script), it also reports score-level fusion of the
two models on the 2x/central templates: z(s_a) + w * z(s_b), each model's scores standardised by the mean and
standard deviation of its gallery-against-gallery scores (no labels beyond the gallery's own identities).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

# reference_pipeline is a product script in ../scripts.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import reference_pipeline as rp  # noqa: E402

LFW = Path(__file__).resolve().parents[2] / "shared" / "faces" / "lfw-dev"
# YuNet's landmark order is image-left eye, image-right eye, nose, image-left and image-right mouth corner; in a
# mirrored photo the left and right points swap.
MIRROR_ORDER = [1, 0, 2, 4, 3]
JITTER = [(0.95, 0, 0), (1.05, 0, 0), (1, 2, 0), (1, -2, 0), (1, 0, 2), (1, 0, -2)]
VARIANTS = ["1x/largest", "1x/central", "2x/largest", "2x/central", "2x/mirror", "2x/jitter", "2x/mirror+jitter",
            "2.56x/central", "landmarks x4"]


class Variants:
    def __init__(self, recognizer: str) -> None:
        # The variants scale the photo themselves, so the detector must take it as given.
        pipeline = rp.Pipeline(recognizer, detector_file="yunet_s_dynamic.onnx", max_upscale=1.0)
        self.detector, self.recognizer = pipeline.detector, pipeline.recognizer

    def embed(self, image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        size = self.recognizer.spec.size
        crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        return rp.normalise(self.recognizer.embed(crop))

    def fit(self, landmarks: np.ndarray) -> np.ndarray:
        return rp.fit_similarity(landmarks, self.recognizer.template)

    def detect(self, image: np.ndarray, scale: float) -> list[rp.Detection]:
        height, width = image.shape[:2]
        scaled = image if scale == 1 else cv2.resize(image, (round(width * scale), round(height * scale)),
                                                     interpolation=cv2.INTER_LINEAR)
        return [rp.Detection(x=d.x / scale, y=d.y / scale, width=d.width / scale, height=d.height / scale,
                             score=d.score, landmarks=d.landmarks / scale) for d in self.detector.detect(scaled)]

    def mirrored_landmarks(self, image: np.ndarray, face: rp.Detection, scale: float) -> np.ndarray | None:
        width = image.shape[1]
        found = self.detect(np.ascontiguousarray(image[:, ::-1]), scale)
        if not found:
            return None
        twin = min(found, key=lambda d: abs((width - d.x - d.width) - face.x) + abs(d.y - face.y))
        points = twin.landmarks[MIRROR_ORDER].copy()
        points[:, 0] = width - points[:, 0]
        return points

    def jittered(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        matrix = self.fit(landmarks)
        centre = self.recognizer.spec.size / 2
        total = self.embed(image, matrix)
        for scale, dx, dy in JITTER:
            moved = matrix.copy()
            moved[:, :2] *= scale
            moved[:, 2] = scale * (matrix[:, 2] - centre) + centre + np.array([dx, dy])
            total = total + self.embed(image, moved)
        return rp.normalise(total)

    def photo(self, path: Path) -> dict:
        image = rp.decode_photo(path)
        height, width = image.shape[:2]
        row: dict = {"identity": path.parent.name, "file": path.name}
        plain = self.detect(image, 1.0)
        if plain:
            row["1x/largest"] = self.embed(image, self.fit(rp.largest(plain).landmarks))
            row["1x/central"] = self.embed(image, self.fit(central(plain, width, height).landmarks))
        double = self.detect(image, 2.0)
        if double:
            face = central(double, width, height)
            row["2x/largest"] = self.embed(image, self.fit(rp.largest(double).landmarks))
            row["2x/central"] = self.embed(image, self.fit(face.landmarks))
            mirrored = self.mirrored_landmarks(image, face, 2.0)
            averaged = face.landmarks if mirrored is None else (face.landmarks + mirrored) / 2
            row["2x/mirror"] = self.embed(image, self.fit(averaged))
            row["2x/jitter"] = self.jittered(image, face.landmarks)
            row["2x/mirror+jitter"] = self.jittered(image, averaged)
            letterboxed = self.detect(image, 2.56)
            if letterboxed:
                face256 = central(letterboxed, width, height)
                row["2.56x/central"] = self.embed(image, self.fit(face256.landmarks))
                mirrored256 = self.mirrored_landmarks(image, face256, 2.56)
                points = [face.landmarks, face256.landmarks] + [m for m in (mirrored, mirrored256) if m is not None]
                row["landmarks x4"] = self.embed(image, self.fit(np.mean(points, axis=0)))
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in row.items()}


def central(faces: list[rp.Detection], width: int, height: int) -> rp.Detection:
    largest = max(f.area for f in faces)
    return min((f for f in faces if f.area >= 0.5 * largest),
               key=lambda f: (f.x + f.width / 2 - width / 2) ** 2 + (f.y + f.height / 2 - height / 2) ** 2)


def open_set(people: dict[str, list], names: list[str]) -> tuple[list, list, list]:
    """The harness's protocol on these identities: (gallery, mated searches, non-mated searches) as (identity,
    entry) pairs: the first photo of every identity with >= 2 photos and every other single-photo identity are
    enrolled, the other photos of the former are mated searches, the remaining single photos non-mated ones."""
    multi = [n for n in names if len(people[n]) >= 2]
    single = [n for n in names if len(people[n]) == 1]
    gallery = [(n, people[n][0]) for n in multi] + [(n, people[n][0]) for n in single[0::2]]
    mated = [(n, entry) for n in multi for entry in people[n][1:]]
    nonmated = [(n, people[n][0]) for n in single[1::2]]
    return gallery, mated, nonmated


def rates(found: np.ndarray, decision: np.ndarray, count: int) -> tuple[float, float]:
    """(rank-1, FNIR at FPIR 1 %): `found` says which of the first `count` (mated) searches ranked their mate
    first; the rest of `decision` are non-mated searches, whose (floor(0.01 n) + 1)-th highest is the threshold."""
    impostor = np.sort(decision[count:])[::-1]
    threshold = impostor[int(np.floor(0.01 * len(impostor)))]
    return float(found.mean()), float(1 - np.mean(found & (decision[:count] > threshold)))


def fnir_at_fpir(people: dict[str, list[dict]], names: list[str], variant: str, margin: int,
                 search_variant: str | None = None) -> tuple[float, float]:
    """(rank-1, FNIR at FPIR 1 %) of the open-set protocol on these identities; margin 0 decides on top-1. The
    gallery holds `variant`'s templates, the searches `search_variant`'s (default: the same)."""
    search_variant = search_variant or variant
    gallery, mated, nonmated = open_set(people, names)
    gallery = [(n, row[variant]) for n, row in gallery if variant in row]
    templates = np.array([t for _, t in gallery])
    labels = np.array([n for n, _ in gallery])
    blank = np.zeros(templates.shape[1])
    probes = np.array([row.get(search_variant, blank) for _, row in mated + nonmated])
    scores = probes @ templates.T
    ranked = np.sort(scores, axis=1)[:, ::-1]
    decision = ranked[:, 0] - (ranked[:, 1:1 + margin].mean(axis=1) if margin else 0)
    count = len(mated)
    found = labels[scores[:count].argmax(axis=1)] == np.array([n for n, _ in mated])
    found &= np.array([search_variant in row for _, row in mated])
    return rates(found, decision, count)


def report(rows: list[dict], margins: list[int]) -> None:
    people: dict[str, list[dict]] = {}
    for row in rows:
        people.setdefault(row["identity"], []).append(row)
    names = sorted(people)
    halves = split_halves(names, people)
    for margin in margins:
        statistic = f"margin({margin})" if margin else "top1"
        base = [fnir_at_fpir(people, h, VARIANTS[0], 0)[1] for h in halves]
        reference = [fnir_at_fpir(people, h, "2x/largest", 0)[1] for h in halves]
        print(f"\n{statistic}: all of lfw-dev | mean of 20 halves, change against 1x/largest top1 and 2x/largest top1")
        for variant in VARIANTS:
            rank1, fnir = fnir_at_fpir(people, names, variant, margin)
            per_half = [fnir_at_fpir(people, h, variant, margin) for h in halves]
            mean_fnir = np.mean([f for _, f in per_half])
            change = lambda against: np.mean([f / b - 1 for (_, f), b in zip(per_half, against)]) * 100
            wins = sum(f < b for (_, f), b in zip(per_half, reference))
            print(f"  {variant:17s} rank-1 {rank1 * 100:6.2f} %  FNIR {fnir * 100:6.2f} % | "
                  f"rank-1 {np.mean([r for r, _ in per_half]) * 100:6.2f} %  FNIR {mean_fnir * 100:6.2f} %  "
                  f"{change(base):+6.1f} %  {change(reference):+6.1f} % (better on {wins}/20)")


def report_fusion(rows: list[dict], other: list[dict], weights: list[float]) -> None:
    variant = "2x/central"
    people: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for a, b in zip(rows, other, strict=True):
        if a["file"] != b["file"]:
            raise SystemExit("--fuse: the two outputs list different photos")
        if variant in a and variant in b:
            people.setdefault(a["identity"], []).append((np.array(a[variant]), np.array(b[variant])))

    def fused(names: list[str], weight: float) -> tuple[float, float]:
        gallery, mated, nonmated = open_set(people, names)
        probes = mated + nonmated
        total = 0
        for model, w in ((0, 1.0), (1, weight)):
            if w == 0:
                continue
            templates = np.array([t[model] for _, t in gallery])
            own = (templates @ templates.T)[np.triu_indices(len(templates), 1)]
            scores = np.array([t[model] for _, t in probes]) @ templates.T
            total = total + w * (scores - own.mean()) / own.std()
        labels = np.array([n for n, _ in gallery])
        count = len(mated)
        found = labels[total[:count].argmax(axis=1)] == np.array([n for n, _ in mated])
        return rates(found, total.max(axis=1), count)

    names = sorted(people)
    halves = split_halves(names, people)
    base = [fused(h, 0.0)[1] for h in halves]
    print("\nfusion on 2x/central, top1 of z(first) + w z(second): all of lfw-dev | mean of 20 halves, change "
          "against w = 0")
    for weight in weights:
        rank1, fnir = fused(names, weight)
        per_half = [fused(h, weight) for h in halves]
        change = np.mean([f / b - 1 for (_, f), b in zip(per_half, base)]) * 100
        wins = sum(f < b for (_, f), b in zip(per_half, base))
        print(f"  w = {weight:4.2f}  rank-1 {rank1 * 100:6.2f} %  FNIR {fnir * 100:6.2f} % | "
              f"rank-1 {np.mean([r for r, _ in per_half]) * 100:6.2f} %  "
              f"FNIR {np.mean([f for _, f in per_half]) * 100:6.2f} %  {change:+6.1f} % (better on {wins}/20)")


def split_halves(names: list[str], people: dict) -> list[list[str]]:
    """Both halves of 10 seeded halvings, stratified by identities with several photos and with one."""
    multi = [n for n in names if len(people[n]) >= 2]
    single = [n for n in names if len(people[n]) == 1]
    halves = []
    for seed in range(1, 11):
        rng = np.random.default_rng(seed)
        m, s = rng.permutation(multi), rng.permutation(single)
        halves.append(sorted([*m[:len(m) // 2], *s[:len(s) // 2]]))
        halves.append(sorted([*m[len(m) // 2:], *s[len(s) // 2:]]))
    return halves


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recognizer", required=True, choices=sorted(rp.RECOGNIZERS))
    parser.add_argument("--out", type=Path, required=True, help="templates of every variant (JSON lines)")
    parser.add_argument("--report-only", action="store_true", help="re-read --out instead of embedding")
    parser.add_argument("--margins", default="0,10,50", help="decision statistics: 0 = top1, k = margin(k)")
    parser.add_argument("--fuse", type=Path, help="another recognizer's --out: also report score-level fusion")
    parser.add_argument("--fuse-weights", default="0,0.25,0.5,0.75,1", help="weights w of the second model")
    args = parser.parse_args()
    if not args.report_only:
        variants = Variants(args.recognizer)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w") as out:
            for i, path in enumerate(sorted(LFW.glob("*/*.jpg"))):
                out.write(json.dumps(variants.photo(path)) + "\n")
                if i % 500 == 0:
                    print(f"{i} photos", file=sys.stderr, flush=True)
    rows = [json.loads(line) for line in args.out.open()]
    report(rows, [int(m) for m in args.margins.split(",")])
    if args.fuse:
        other = [json.loads(line) for line in args.fuse.open()]
        report_fusion(rows, other, [float(w) for w in args.fuse_weights.split(",")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
