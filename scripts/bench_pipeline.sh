#!/usr/bin/env bash
# Side-by-side speed of the Rust face pipeline (`facematch bench pipeline`) and the Python onnxruntime reference
# (scripts/reference_pipeline.py), in one run, on the same photos, with the same model files, both at one thread.
#
# Photo sets: the first 50 photos of ../shared/faces/lfw-dev (250x250 grayscale JPEG), and six large deepface
# photos (2.5 to 14 megapixels). For each round, set and recognizer, the two implementations run back to back, in
# alternating order, so that they share the machine's noise; everything runs under `nice`. The summary takes, per
# stage, the median over rounds of each run's median wall time, and of each run's processor time per photo (which,
# unlike wall time, does not grow when other processes hold the CPU), and prints the Rust/Python ratios.
#
# Both sides do the same work per photo: decode (the file read included), detect at the same input size (the
# detector model decides: a fixed-size model is letterboxed, a dynamic one gets the photo shrunk to fit 640 or
# enlarged at most --max-upscale times, default 2 as the service's `detection.max_upscale`, padded to a multiple of
# 32), then align and embed one face (Python: the largest, Rust: the best score). The reference has no second look at
# faces that are small in a large photo, so the Rust side runs with detection.refine_face_px = 0 (the product's
# default refines such faces: one more small inference each; see src/detect/passes.rs).
#
# Usage: scripts/bench_pipeline.sh [--rounds N] [--repeat R] [--detector ID] [--recognizers "ID ..."] [--out DIR]
#                                  [--lfw-limit N] [--python-detector FILE] [--max-upscale X]
# --python-detector gives the reference another detector file than the Rust side's (e.g. the fixed 640x640 YuNet,
# to compare against the reference as it ran before the dynamic-size model); the work then differs, and the
# summary says so. --max-upscale X (a decimal, default 2.0) caps both sides' enlargement of small photos; 1.0
# measures the work of the runs made before small photos were enlarged (docs/history/).
# Needs scripts/setup.sh to have run. Writes every run's JSON and summary.json/summary.md into --out
# (default reports/bench-pipeline/<UTC time>).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
shared="${FACEMATCH_SHARED:-$root/../shared}"
rounds=5
repeat=1
detector=yunet-s-dynamic
recognizers="dlib-resnet-v1 dlib-resnet-v1-int8 face-reid-retail-0095 face-reid-retail-0095-int8"
lfw_limit=50
out="reports/bench-pipeline/$(date -u +%Y%m%dT%H%M%SZ)"
python_detector_file=""
max_upscale=2.0
die() { printf 'bench_pipeline: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'bench_pipeline: %s\n' "$*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --repeat) repeat="$2"; shift 2 ;;
    --detector) detector="$2"; shift 2 ;;
    --recognizers) recognizers="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --lfw-limit) lfw_limit="$2"; shift 2 ;;
    --python-detector) python_detector_file="$2"; shift 2 ;;
    --max-upscale) max_upscale="$2"; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

[ -x .venv/bin/python ] || die ".venv is missing; run scripts/setup.sh"
[ -f "models/$detector.toml" ] || die "models/$detector.toml is missing"
detector_file="$(sed -n 's/^file = "\(.*\)"/\1/p' "models/$detector.toml")"
[ -f "models/$detector_file" ] || die "models/$detector_file is missing; run scripts/setup.sh"
python_detector_file="${python_detector_file:-$detector_file}"
[ -f "models/$python_detector_file" ] || die "models/$python_detector_file is missing; run scripts/setup.sh"
lfw="$shared/faces/lfw-dev"
[ -d "$lfw" ] || die "$lfw is missing"
deepface_large=(id09/img40.jpg id03/img49.jpg id09/img41.jpg id04/img54.jpg id01/img4.jpg id07/img33.jpg)
large=()
for photo in "${deepface_large[@]}"; do
  [ -f "$shared/faces/deepface/$photo" ] || die "$shared/faces/deepface/$photo is missing"
  large+=("$shared/faces/deepface/$photo")
done

say "building the release binary"
nice cargo build --release --features lab --quiet
binary=target/release/facematch
mkdir -p "$out"

# run_set SET ROUND RECOGNIZER ARGS...: one Python and one Rust run over the photos in ARGS, order by round parity.
run_set() {
  local set="$1" round="$2" recognizer="$3"
  shift 3
  local python_json="$out/$set-$recognizer-python-r$round.json" rust_json="$out/$set-$recognizer-rust-r$round.json"
  local limit_py=() limit_rs=()
  if [ "$set" = lfw ]; then limit_py=(--limit "$lfw_limit"); limit_rs=(--limit "$lfw_limit"); fi
  run_python() {
    nice .venv/bin/python scripts/reference_pipeline.py --photos "$@" "${limit_py[@]}" --recognizer "$recognizer" \
      --detector "$python_detector_file" --max-upscale "$max_upscale" --repeat "$repeat" --json "$python_json" >/dev/null
  }
  run_rust() {
    FACEMATCH_DETECTION__MAX_UPSCALE="$max_upscale" FACEMATCH_DETECTION__REFINE_FACE_PX=0 \
      nice "$binary" --recognizer "$recognizer" bench pipeline "$@" "${limit_rs[@]}" --detector "$detector" \
      --max-faces 1 --repeat "$repeat" --json "$rust_json" >/dev/null
  }
  if [ $((round % 2)) -eq 1 ]; then run_python "$@"; run_rust "$@"; else run_rust "$@"; run_python "$@"; fi
}

for round in $(seq 1 "$rounds"); do
  for recognizer in $recognizers; do
    say "round $round/$rounds: $recognizer"
    run_set lfw "$round" "$recognizer" "$lfw"
    run_set deepface-large "$round" "$recognizer" "${large[@]}"
  done
done

.venv/bin/python - "$out" "$detector" "$rounds" "$repeat" "$lfw_limit" "$python_detector_file" "$detector_file" "$max_upscale" <<'PY'
"""Medians over rounds of each run's per-stage median, and the Rust/Python ratio per stage."""
import json
import platform
import statistics
import sys
from pathlib import Path

out, detector, rounds, repeat, lfw_limit = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
python_detector, rust_detector_file, max_upscale = sys.argv[6], sys.argv[7], float(sys.argv[8])
stages = ["decode", "detect", "align", "embed", "total"]
summary = {"detector": detector, "python_detector_file": python_detector, "max_upscale": max_upscale, "rounds": rounds,
           "repeat_per_round": int(repeat), "sets": {}}
lines = [f"detector {detector} (max upscale {max_upscale:g}); {rounds} rounds x {repeat} pass(es); per stage: median over rounds of each run's "
         "median wall ms; processor time: median over rounds of (user + system ms of the timed passes) / photos; "
         "ratio = Rust / Python", ""]
if python_detector != rust_detector_file:
    lines.insert(1, f"NOT the same work: the reference ran detector file {python_detector}, "
                    f"Rust ran {rust_detector_file}")
lines.append("| set | recognizer | side | " + " | ".join(stages) + " | processor time per photo |")
lines.append("|---|---|---|" + "---|" * (len(stages) + 1))
for set_name in ["lfw", "deepface-large"]:
    for python_file in sorted(out.glob(f"{set_name}-*-python-r1.json")):
        recognizer = python_file.name[len(set_name) + 1:-len("-python-r1.json")]
        medians = {}
        for side in ["python", "rust"]:
            runs = [json.loads(p.read_text()) for p in sorted(out.glob(f"{set_name}-{recognizer}-{side}-r*.json"))]
            medians[side] = {s: statistics.median(r["median_ms"][s] for r in runs if r["median_ms"].get(s) is not None)
                             for s in stages}
            cpu = [r["cpu_ms_per_photo"] for r in runs if r.get("cpu_ms_per_photo") is not None]
            medians[side]["cpu"] = statistics.median(cpu) if cpu else float("nan")
            medians[side + "_runs"] = len(runs)
            medians[side + "_photos"] = runs[0]["photos"]
        ratio = {s: medians["rust"][s] / medians["python"][s] for s in stages + ["cpu"]}
        summary["sets"].setdefault(set_name, {})[recognizer] = {**medians, "ratio": ratio}
        for side in ["python", "rust"]:
            cells = " | ".join(f"{medians[side][s]:.2f}" for s in stages + ["cpu"])
            lines.append(f"| {set_name} ({medians[side + '_photos']} photos) | {recognizer} | {side} | {cells} |")
        cells = " | ".join(f"**{ratio[s]:.2f}**" for s in stages + ["cpu"])
        lines.append(f"| | {recognizer} | **Rust/Python** | {cells} |")
summary["python"] = platform.python_version()
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
say "runs and summary in $out"
