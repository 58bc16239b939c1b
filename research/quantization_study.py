"""Int8 study of a recognizer: the speed and accuracy of an int8 build against its full-precision source.

Measures, does not build: the int8 file is the one scripts/setup.sh made from its recipe in
scripts/quantize_recognizer.py (to try a new recipe, add it there, then run its `ranges` and `build` steps). The
recipes' calibration crops come from the first half (alphabetical) of lfw-dev's identities; this study tests on
every photo of the second half's identities with at least 2 photos: all mated and all non-mated pairs, TAR at FAR
1e-2/1e-3/1e-4, and the cosine between the float and int8 embeddings of the same crop.
Speed: one intra-op thread, the two sessions alternating, 5 rounds of 100 runs on one crop, median per face.

    .venv/bin/python research/quantization_study.py dlib-resnet-v1-int8 [--shared ../shared]

(The figures of 2026-11-22 13:25 and 13:55 UTC, docs/history/2026-11-22-1333.md, came from this script's first
version, commit 8f162fe, which quantised inside the study with plain min-max ranges.)
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
# reference_pipeline (and quantize_recognizer) are product scripts in ../scripts.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import quantize_recognizer as qr
import reference_pipeline as rp

parser = argparse.ArgumentParser(description="int8 study of a recognizer")
parser.add_argument("model", choices=sorted(qr.RECIPES))
parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared")
args = parser.parse_args()
source = qr.RECIPES[args.model].source
models = Path(__file__).resolve().parent.parent / "models"
src, q = models / f"{source}.onnx", models / f"{args.model}.onnx"
if not q.is_file():
    sys.exit(f"quantization_study: {q} is missing; run scripts/setup.sh")
pipe = rp.Pipeline(source, models)
lfw = args.shared / "faces" / "lfw-dev"
people = sorted(p for p in lfw.iterdir() if p.is_dir())
test_people = people[len(people) // 2:]

def session(path):
    o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
s32, s8 = session(src), session(q)
name = pipe.recognizer.input_name
first = next(c for c in (pipe.aligned_crop(f) for p in test_people for f in sorted(p.iterdir())) if c is not None)
blob = pipe.recognizer.to_blob(first)
for s in (s32, s8): [s.run(None, {name: blob}) for _ in range(20)]
t = {"fp32": [], "int8": []}
for r in range(5):
    for k, s in (("fp32", s32), ("int8", s8)):
        t0 = time.perf_counter()
        for _ in range(100): s.run(None, {name: blob})
        t[k].append((time.perf_counter() - t0) * 10)
print("embed ms per face (median of 5x100):", {k: round(float(np.median(v)), 3) for k, v in t.items()}, flush=True)

# accuracy on held-out identities: every photo of test people with >= 2 photos, all mated and non-mated pairs
emb32, emb8, ids = [], [], []
for p in test_people:
    files = sorted(p.iterdir())
    if len(files) < 2: continue
    for f in files:
        c = pipe.aligned_crop(f)
        if c is None: continue
        b = pipe.recognizer.to_blob(c)
        emb32.append(rp.normalise(s32.run(None, {name: b})[0].reshape(-1)))
        emb8.append(rp.normalise(s8.run(None, {name: b})[0].reshape(-1)))
        ids.append(p.name)
E32, E8 = np.array(emb32), np.array(emb8); ids = np.array(ids)
print("photos", len(ids), "identities", len(set(ids)), "same-crop cosine fp32 vs int8: min %.4f median %.4f" % (
    float(np.min(np.sum(E32 * E8, 1))), float(np.median(np.sum(E32 * E8, 1)))))
same = ids[:, None] == ids[None, :]
iu = np.triu_indices(len(ids), 1)
for tag, E in (("fp32", E32), ("int8", E8)):
    S = E @ E.T
    m, n = S[iu][same[iu]], S[iu][~same[iu]]
    out = []
    for far in (1e-2, 1e-3, 1e-4):
        thr = np.quantile(n, 1 - far)
        out.append("TAR@FAR%g=%.4f" % (far, float(np.mean(m > thr))))
    print(tag, "mated", len(m), "non-mated", len(n), " ".join(out), flush=True)
