"""Attempts of 2026-11-22 evening (measured with the Python reference, neither built): weighting the five landmarks
in the alignment fit, and crop jitter at enrolment only.

weights   Every lfw-dev photo's subject (the detector at 2x, the most central of the large faces: what the Rust
          pipeline does) is aligned by a weighted least-squares similarity instead of the plain one, then embedded.
          The weights are per landmark (eyes, nose, mouth corners). The mean residual of the plain fit says
          YuNet's points sit 1.5-2 px (of 128) off 0095's template, and the nose's spread across photos is
          several times the eyes' (it moves with yaw). Lowering the weight of the noisier points, or raising the
          eyes', might give steadier crops. (Adding the mean residual to the template would not: a residual of a
          least-squares fit is orthogonal to what a similarity can change, so the average crop stays where it is.)
gallery   Crop jitter (the mean template of 7 shifted and scaled crops, see face_choice_and_landmarks_attempt.py)
          improved held-out FNIR by 11-13 % but costs 7 embeddings per face. At enrolment only, the cost falls
          where time is cheap and searches stay one embedding. This reads the templates that script wrote: the
          gallery takes a jittered template, the searches the plain one.

The protocol, the 20 halves and FNIR at FPIR 1 % are face_choice_and_landmarks_attempt.py's. Each row gives all of
lfw-dev, then the mean over the 20 halves, the mean per-half change against plain 2x/central top1 and how many
halves improve on it.

    .venv/bin/python research/landmark_weights_and_enrolment_jitter_attempt.py weights \\
        --recognizer face-reid-retail-0095                  # about 3 minutes on one core
    .venv/bin/python research/landmark_weights_and_enrolment_jitter_attempt.py gallery \\
        --templates reports/attempts/face-choice-0095.jsonl  # seconds; needs that script's output
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

# face_choice_and_landmarks_attempt sits beside this file; reference_pipeline is a product script in ../scripts.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "scripts"))
import face_choice_and_landmarks_attempt as attempt  # noqa: E402
import reference_pipeline as rp  # noqa: E402

# Per landmark, in YuNet's order: image-left eye, image-right eye, nose, image-left and image-right mouth corner.
WEIGHTS = {
    "plain": [1, 1, 1, 1, 1],
    "nose 0": [1, 1, 0, 1, 1],
    "nose 0.5": [1, 1, 0.5, 1, 1],
    "mouth 0.5": [1, 1, 1, 0.5, 0.5],
    "eyes 2": [2, 2, 1, 1, 1],
    "eyes 2, nose 0.5": [2, 2, 0.5, 1, 1],
}
# (gallery variant, search variant) pairs of face_choice_and_landmarks_attempt.py's templates.
GALLERY_SIDE = [("2x/central", "2x/central"), ("2x/jitter", "2x/central"), ("2x/mirror+jitter", "2x/central"),
                ("2x/jitter", "2x/jitter"), ("2x/mirror+jitter", "2x/mirror+jitter")]


def weighted_rows(recognizer: str) -> list[dict]:
    variants = attempt.Variants(recognizer)
    size = variants.recognizer.spec.size
    rows = []
    for i, path in enumerate(sorted(attempt.LFW.glob("*/*.jpg"))):
        image = rp.decode_photo(path)
        height, width = image.shape[:2]
        row: dict = {"identity": path.parent.name, "file": path.name}
        faces = variants.detect(image, 2.0)
        if faces:
            landmarks = attempt.central(faces, width, height).landmarks
            for name, weights in WEIGHTS.items():
                matrix = rp.fit_similarity(landmarks, variants.recognizer.template, weights)
                crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_CONSTANT)
                row[name] = rp.normalise(variants.recognizer.embed(crop))
        rows.append(row)
        if i % 500 == 0:
            print(f"{i} photos", file=sys.stderr, flush=True)
    return rows


def report(rows: list[dict], pairs: list[tuple[str, str]], margins: list[int]) -> None:
    people: dict[str, list[dict]] = {}
    for row in rows:
        people.setdefault(row["identity"], []).append(row)
    names = sorted(people)
    halves = attempt.split_halves(names, people)
    base = [attempt.fnir_at_fpir(people, h, pairs[0][0], 0, pairs[0][1])[1] for h in halves]
    for margin in margins:
        statistic = f"margin({margin})" if margin else "top1"
        print(f"\n{statistic}: all of lfw-dev | mean of 20 halves, change against {pairs[0][1]} top1")
        for gallery_variant, search_variant in pairs:
            rank1, fnir = attempt.fnir_at_fpir(people, names, gallery_variant, margin, search_variant)
            per_half = [attempt.fnir_at_fpir(people, h, gallery_variant, margin, search_variant) for h in halves]
            change = np.mean([f / b - 1 for (_, f), b in zip(per_half, base)]) * 100
            wins = sum(f < b for (_, f), b in zip(per_half, base))
            label = gallery_variant if gallery_variant == search_variant else f"{gallery_variant} / {search_variant}"
            print(f"  {label:38s} rank-1 {rank1 * 100:6.2f} %  FNIR {fnir * 100:6.2f} % | "
                  f"rank-1 {np.mean([r for r, _ in per_half]) * 100:6.2f} %  "
                  f"FNIR {np.mean([f for _, f in per_half]) * 100:6.2f} %  {change:+6.1f} % (better on {wins}/20)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="attempt", required=True)
    weights = sub.add_parser("weights", help="weighted landmark fits (embeds every lfw-dev photo)")
    weights.add_argument("--recognizer", required=True, choices=sorted(rp.RECOGNIZERS))
    gallery = sub.add_parser("gallery", help="jittered templates at enrolment only")
    gallery.add_argument("--templates", type=Path, required=True,
                         help="output of face_choice_and_landmarks_attempt.py (JSON lines)")
    parser.add_argument("--margins", default="0,10,50", help="decision statistics: 0 = top1, k = margin(k)")
    args = parser.parse_args()
    margins = [int(m) for m in args.margins.split(",")]
    if args.attempt == "weights":
        report(weighted_rows(args.recognizer), [(name, name) for name in WEIGHTS], margins)
    else:
        rows = [json.loads(line) for line in args.templates.open()]
        report(rows, GALLERY_SIDE, margins)
    return 0


if __name__ == "__main__":
    sys.exit(main())
