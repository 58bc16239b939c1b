"""Side-by-side of our HNSW against PyPI hnswlib on the very vectors `facematch bench index` wrote to DIR.

Usage: python scripts/ann_side_by_side.py DIR

Reads DIR/meta.json, base.f32, queries.f32, gt.u32 (written by the Rust bench) and DIR/report.json (our numbers),
builds hnswlib (pinned in scripts/requirements-bench.txt: hnswlib==0.8.0) with the same M, ef_construction and
build threads, measures recall@k and single-thread queries/s (wall clock and per CPU-second of the searching thread, best of
the same number of passes) at the same ef values, resident-memory growth, save
and load time, writes DIR/hnswlib_report.json and prints a table of ours / hnswlib ratios.
"""

import json
import os
import sys
import tempfile
import time

import hnswlib  # hnswlib==0.8.0 (PyPI), see scripts/requirements-bench.txt
import numpy as np


def rss_bytes():
    """Resident set size of this process from /proc (Linux)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def process_cpu_seconds():
    """User + system CPU time of the whole process (all threads)."""
    t = os.times()
    return t.user + t.system


def recall_at_k(found, truth, k):
    """Mean fraction of each query's true top-k present in the found top-k."""
    hits = 0
    for f, t in zip(found, truth):
        hits += len(set(int(x) for x in f[:k]) & set(int(x) for x in t[:k]))
    return hits / (k * len(truth))


def best_qps_at(points, target, field="queries_per_second"):
    """Highest rate among settings whose recall reaches `target` (None if none does)."""
    ok = [p[field] for p in points if p["recall"] >= target and p.get(field)]
    return max(ok) if ok else None


def measure_hnswlib(directory, meta):
    """Builds and queries hnswlib exactly as the Rust side did; returns a report dict."""
    n, dim, k = meta["n"], meta["dim"], meta["k"]
    base = np.fromfile(os.path.join(directory, meta["base"]), dtype="<f4").reshape(n, dim)
    queries = np.fromfile(os.path.join(directory, meta["query_file"]), dtype="<f4").reshape(-1, dim)
    truth = np.fromfile(os.path.join(directory, meta["ground_truth"]), dtype="<u4").reshape(-1, k)

    rss_before = rss_bytes()
    cpu_before = process_cpu_seconds()
    started = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=n, ef_construction=meta["ef_construction"], M=meta["m"], random_seed=meta["seed"])
    index.set_num_threads(meta["build_threads"])
    index.add_items(base, np.arange(n))
    build_seconds = time.perf_counter() - started
    build_cpu_seconds = process_cpu_seconds() - cpu_before
    rss_grown = rss_bytes() - rss_before

    # One thread, batched so that Python's per-call overhead does not count against hnswlib.
    index.set_num_threads(1)
    index.set_ef(meta["ef"][0])
    index.knn_query(queries[: min(200, len(queries))], k=k)
    search = []
    for ef in meta["ef"]:
        index.set_ef(ef)
        best, best_cpu, labels = 0.0, 0.0, None
        # Best of the same number of passes as the Rust side: the machine may be shared.
        for _ in range(max(1, meta.get("repeats", 1))):
            cpu = time.thread_time()
            started = time.perf_counter()
            found, _ = index.knn_query(queries, k=k)
            seconds = time.perf_counter() - started
            cpu_seconds = time.thread_time() - cpu
            best = max(best, len(queries) / seconds)
            best_cpu = max(best_cpu, len(queries) / cpu_seconds)
            labels = found if labels is None else labels
        search.append({
            "ef": ef,
            "recall": recall_at_k(labels, truth, k),
            "recall_at_1": recall_at_k(labels, truth, 1),
            "queries_per_second": best,
            "cpu_queries_per_second": best_cpu,
        })

    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = os.path.join(tmp, "hnswlib.bin")
        started = time.perf_counter()
        index.save_index(path)
        save_seconds = time.perf_counter() - started
        file_bytes = os.path.getsize(path)
        del index
        started = time.perf_counter()
        loaded = hnswlib.Index(space="ip", dim=dim)
        loaded.load_index(path, max_elements=n)
        load_seconds = time.perf_counter() - started
        del loaded

    return {
        "version": getattr(hnswlib, "__version__", "0.8.0"),
        "build_seconds": build_seconds,
        "build_cpu_seconds": build_cpu_seconds,
        "rss_bytes": rss_grown,
        "bytes_per_template": rss_grown / n,
        "search": search,
        "save_seconds": save_seconds,
        "load_seconds": load_seconds,
        "file_bytes": file_bytes,
    }


def ratio(ours, theirs):
    """ours / theirs as text, or '-' when either is missing."""
    if ours is None or theirs in (None, 0):
        return "-"
    return f"{ours / theirs:.2f}"


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def print_table(meta, ours, theirs):
    """Prints the comparison; ratios are ours / hnswlib (above 1 is better for q/s, below 1 for time and bytes)."""
    print(f"\nn={meta['n']} dim={meta['dim']} queries={meta['queries']} M={meta['m']} "
          f"ef_construction={meta['ef_construction']} build threads={meta['build_threads']}")
    print(f"{'metric':<34}{'ours':>14}{'hnswlib':>14}{'ours/hnswlib':>14}")
    rows = [
        ("build seconds (wall)", ours["build_seconds"], theirs["build_seconds"], ".1f"),
        ("build CPU seconds", ours.get("build_cpu_seconds"), theirs["build_cpu_seconds"], ".1f"),
        ("memory bytes/template (RSS)", (ours["rss_bytes"] or 0) / meta["n"], theirs["bytes_per_template"], ".0f"),
        ("memory bytes/template (stats)", ours["bytes_per_template"], None, ".0f"),
        ("save seconds", ours["save_seconds"], theirs["save_seconds"], ".2f"),
        ("load seconds", ours["load_seconds"], theirs["load_seconds"], ".2f"),
        ("file bytes", ours["file_bytes"], theirs["file_bytes"], ".0f"),
    ]
    for name, a, b, spec in rows:
        print(f"{name:<34}{fmt(a, spec):>14}{fmt(b, spec):>14}{ratio(a, b):>14}")
    theirs_by_ef = {p["ef"]: p for p in theirs["search"]}
    for p in ours["search"]:
        t = theirs_by_ef.get(p["ef"])
        if t is None:
            continue
        print(f"{'ef ' + str(p['ef']) + ' recall@' + str(meta['k']):<34}{p['recall']:>14.4f}{t['recall']:>14.4f}"
              f"{ratio(p['recall'], t['recall']):>14}")
        print(f"{'ef ' + str(p['ef']) + ' q/s (1 thread)':<34}{p['queries_per_second']:>14.0f}"
              f"{t['queries_per_second']:>14.0f}{ratio(p['queries_per_second'], t['queries_per_second']):>14}")
        a, b = p.get("cpu_queries_per_second"), t["cpu_queries_per_second"]
        print(f"{'ef ' + str(p['ef']) + ' q/CPU-s (1 thread)':<34}{fmt(a, '.0f'):>14}{fmt(b, '.0f'):>14}{ratio(a, b):>14}")
    for target in (0.95, 0.99, 0.995):
        for field, label in (("queries_per_second", "q/s"), ("cpu_queries_per_second", "q/CPU-s")):
            a, b = best_qps_at(ours["search"], target, field), best_qps_at(theirs["search"], target, field)
            name = f"best {label} at recall >= {target}"
            print(f"{name:<34}{fmt(a, '.0f'):>14}{fmt(b, '.0f'):>14}{ratio(a, b):>14}")


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    directory = argv[1]
    with open(os.path.join(directory, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    with open(os.path.join(directory, "report.json"), encoding="utf-8") as f:
        ours = json.load(f)["ours"]
    theirs = measure_hnswlib(directory, meta)
    with open(os.path.join(directory, "hnswlib_report.json"), "w", encoding="utf-8") as f:
        json.dump(theirs, f, indent=2)
    print_table(meta, ours, theirs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
