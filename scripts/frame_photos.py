"""Writes a copy of a labelled photo folder (`<identity>/<photo>`) with every photo centred in a larger grey frame.

The faces keep their pixels; only the photo around them grows. So the same people can be evaluated as faces that
fill a small part of a large photo, as in a wide checkpoint shot or an investigator's scene photo, where the
detector's whole-photo pass sees the face at a fraction of its size. Used for the second look's figures in
docs/benchmarks.md ("Small faces in large photos"). The copy goes to a folder outside the repository's tracked files (the photos are
research data, never committed):

    .venv/bin/python scripts/frame_photos.py ../shared/faces/lfw-dev reports/framed/lfw-dev-1000 --side 1000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder of <identity>/<photo>.jpg")
    parser.add_argument("out", type=Path, help="folder to write (created)")
    parser.add_argument("--side", type=int, default=1000, help="frame width and height in pixels (default 1000)")
    parser.add_argument("--grey", type=int, default=128, help="frame colour, 0-255 (default 128)")
    args = parser.parse_args()
    photos = sorted(args.source.glob("*/*.jpg"))
    if not photos:
        print(f"frame_photos: no <identity>/<photo>.jpg in {args.source}", file=sys.stderr)
        return 1
    for path in photos:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            print(f"frame_photos: {path} cannot be decoded", file=sys.stderr)
            return 1
        height, width = image.shape[:2]
        if height > args.side or width > args.side:
            print(f"frame_photos: {path} is {width}x{height}, larger than the frame", file=sys.stderr)
            return 1
        frame = np.full((args.side, args.side, 3), args.grey, dtype=np.uint8)
        top, left = (args.side - height) // 2, (args.side - width) // 2
        frame[top:top + height, left:left + width] = image
        target = args.out / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        # Lossless, so the faces' pixels are exactly the source's decoded pixels.
        cv2.imwrite(str(target.with_suffix(".png")), frame)
    print(f"frame_photos: {len(photos)} photos framed at {args.side} px in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
