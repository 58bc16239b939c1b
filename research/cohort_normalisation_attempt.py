"""Decision-statistic attempt (measured, not built): a per-comparison score normalised against a fixed external cohort.

    s'(p, g) = s(p, g) - (m_p + m_g) / 2,  m_x = mean of x's k highest cosines to the cohort

The cohort is every template of one alphabetical half of lfw-dev's identities; the other half runs the open-set
protocol of `facematch eval identify` on its own identities (first photo of each identity with >= 2 photos
enrolled, single-photo identities alternating between gallery distractors and non-mated searches), and the halves
then swap. Unlike the margin statistics, s' is a score of one comparison, so per-comparison impostor rates could
calibrate it at any gallery size; candidates are ranked by s'.

    .venv/bin/python research/cohort_normalisation_attempt.py reports/cache/<model>-<key>.jsonl

The argument is the harness's template cache of lfw-dev (written by `facematch eval identify ... --cache`).
"""
import json, hashlib, sys, numpy as np
from pathlib import Path
cache = sys.argv[1]
emb = {}
for line in open(cache):
    d = json.loads(line)
    if d.get("embedding"): emb[d["photo_sha256"]] = np.array(d["embedding"], dtype=np.float32)
root = Path(__file__).resolve().parents[2] / "shared" / "faces" / "lfw-dev"
people = {}
for p in sorted(root.glob("*/*")):
    e = emb.get(hashlib.sha256(p.read_bytes()).hexdigest())
    if e is not None: people.setdefault(p.parent.name, []).append(e)
names = sorted(people)
half = len(names) // 2
def run(cohort_names, eval_names, ks):
    C = np.array([e for n in cohort_names for e in people[n]])
    multi = [n for n in eval_names if len(people[n]) >= 2]
    single = [n for n in eval_names if len(people[n]) == 1]
    gal = [(n, people[n][0]) for n in multi] + [(n, people[n][0]) for n in single[0::2]]
    G = np.array([g[1] for g in gal]); gid = np.array([g[0] for g in gal])
    mated = [(n, e) for n in multi for e in people[n][1:]]
    nonm = [(n, people[n][0]) for n in single[1::2]]
    P = np.array([e for _, e in mated] + [e for _, e in nonm]); pid = [n for n, _ in mated] + [None] * len(nonm)
    S = P @ G.T
    out = {}
    for k in [0] + ks:
        if k == 0:
            T = S
        else:
            mp = np.sort(P @ C.T, axis=1)[:, -k:].mean(1); mg = np.sort(G @ C.T, axis=1)[:, -k:].mean(1)
            T = S - 0.5 * (mp[:, None] + mg[None, :])
        top = T.argmax(1); score = T[np.arange(len(P)), top]
        nm = len(mated)
        hit = np.array([gid[top[i]] == pid[i] for i in range(nm)])
        ns = np.sort(score[nm:])[::-1]
        allowed = int(np.floor(0.01 * len(ns)))
        thr = ns[allowed]  # scores strictly above the (allowed+1)-th highest pass
        fnir = 1 - np.mean(hit & (score[:nm] > thr))
        out[k] = (hit.mean(), fnir)
    return out, len(G), len(mated), len(nonm)
for label, (co, ev) in {"cohort=first half, eval=second half": (names[:half], names[half:]),
                        "cohort=second half, eval=first half": (names[half:], names[:half])}.items():
    res, g, m, n = run(co, ev, [5, 10, 20, 50, 100])
    base = res[0][1]
    print(label, f"gallery {g}, mated {m}, non-mated {n}")
    for k, (r1, f) in res.items():
        print(f"  k={k:3d} rank-1 {r1*100:.2f}%  FNIR@FPIR1% {f*100:.2f}%  change {100*(f/base-1):+.1f}%")
