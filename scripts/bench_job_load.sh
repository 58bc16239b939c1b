#!/usr/bin/env bash
# Checkpoint latency while an investigator's bulk job runs: does a 2,000-photo job starve the checkpoint?
#
#   1. a data dir seeded with 10,000 synthetic templates (`facematch bench seed`), keys made with the CLI;
#   2. the server (release build, `--features lab` for the load generator);
#   3. checkpoint searches alone: `facematch bench http` at concurrency 1, identification mode, --duration-s;
#   4. a job of the first N lfw-dev photos (default 2,000) zipped here and submitted with an investigator key, and at
#      once the same checkpoint load for the same time while the job runs; the job's progress is read before and after,
#      so its own rate under load is known;
#   5. the job's end is awaited (its rate alone, once the load stops), then the checkpoint load alone again (drift).
# The probe is the benchmark photo of scripts/bench_http.sh (640x480, one face).
#
# Usage: scripts/bench_job_load.sh [--out DIR] [--photos N] [--duration-s S]
# Env:   FACEMATCH_BIN  use this binary (built with `--features lab`) instead of building target/release/facematch
# Writes baseline/during/after load reports, job snapshots and summary.json + summary.md into --out
# (default reports/bench-job-load/<UTC time>).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh
shared="${FACEMATCH_SHARED:-$root/../shared}"
out="reports/bench-job-load/$(date -u +%Y%m%dT%H%M%SZ)"
photos=2000
duration_s=60
die() { printf 'bench_job_load: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'bench_job_load: %s\n' "$*" >&2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --photos) photos="$2"; shift 2 ;;
    --duration-s) duration_s="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^set -euo/ { exit } NR > 1' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ -d "$shared/faces/lfw-dev" ] || die "$shared/faces/lfw-dev is missing"
bin="$(bench_binary)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/facematch-bench-job.XXXXXX")"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -TERM "$server_pid"; wait "$server_pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
export NO_COLOR=1

probe="$work/probe-640x480.jpg"
bench_make_probe "$shared" "$probe"
say "zipping the first $photos lfw-dev photos"
.venv/bin/python - "$shared/faces/lfw-dev" "$photos" "$work/job.zip" <<'PY'
import pathlib, sys, zipfile
root, count, out = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
files = sorted(p for p in root.rglob("*.jpg"))[:count]
assert len(files) == count, f"lfw-dev has only {len(files)} photos"
with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
    for p in files:
        z.write(p, p.relative_to(root).as_posix())
PY

data="$work/data"
say "seeding 10,000 templates"
"$bin" bench seed --data-dir "$data" --templates 10000 --watchlists 4 --seed 7 >"$out/seed.json"
FACEMATCH_API_KEY="$(bench_create_key "$bin" "$data" checkpoint)"
FACEMATCH_METRICS_KEY="$(bench_create_key "$bin" "$data" admin)"
investigator="$(bench_create_key "$bin" "$data" investigator)"
export FACEMATCH_API_KEY FACEMATCH_METRICS_KEY

log="$out/serve.log"
FACEMATCH_ACCESS__RATE_PER_SECOND=1000 FACEMATCH_ACCESS__RATE_BURST=2000 \
  "$bin" serve --data-dir "$data" --listen 127.0.0.1:0 >"$log" 2>&1 &
server_pid=$!
url="$(bench_server_url "$server_pid" "$log")" || die "the server did not start"

checkpoint_load() { bench_checkpoint_load "$bin" "$url" "$probe" "$duration_s" "$out" "$1"; }
job_state() { curl -sf "$url/v1/jobs/$job" -H "authorization: Bearer $investigator"; }

checkpoint_load baseline
say "submitting the job"
job="$(curl -sf -XPOST "$url/v1/jobs" -H "authorization: Bearer $investigator" -H 'x-facematch-purpose: benchmark' \
  -F case=bench-job-load -F "archive=@$work/job.zip;type=application/zip" |
  .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
started="$(date +%s.%N)"
job_state >"$out/job-start.json"
checkpoint_load during
job_state >"$out/job-after-load.json"
loaded="$(date +%s.%N)"
while .venv/bin/python -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["state"] in ("queued","running") else 1)' < <(job_state); do
  sleep 1
done
finished="$(date +%s.%N)"
job_state >"$out/job-end.json"
checkpoint_load after
kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""

.venv/bin/python - "$out" "$started" "$loaded" "$finished" "$photos" <<'PY'
import json, pathlib, sys, datetime
out, started, loaded, finished, photos = pathlib.Path(sys.argv[1]), *map(float, sys.argv[2:5]), int(sys.argv[5])
def level(name):
    l = json.loads((out / name / "levels.json").read_text())["outcome"]["levels"][0]
    return {"ok": l["ok"], "errors": l["sent"] - l["ok"], "p50_ms": l["latency_ms"]["p50"], "p99_ms": l["latency_ms"]["p99"]}
job_load = json.loads((out / "job-after-load.json").read_text())
job_end = json.loads((out / "job-end.json").read_text())
done_under_load = job_load["done"] + job_load["refused"]
summary = {
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "photos": photos,
    "baseline": level("baseline"), "during_job": level("during"), "after": level("after"),
    "job": {"state": job_end["state"], "done": job_end["done"], "refused": job_end["refused"], "faces": job_end["faces"],
            "photos_per_s_under_load": done_under_load / (loaded - started),
            "photos_per_s_alone": (job_end["done"] + job_end["refused"] - done_under_load) / max(finished - loaded, 1e-9),
            "seconds": finished - started},
}
(out / "summary.json").write_text(json.dumps(summary, indent=2))
b, d, a, j = summary["baseline"], summary["during_job"], summary["after"], summary["job"]
md = [f"Checkpoint searches at concurrency 1 (10k templates) with and without a {photos}-photo job ({summary['date']}):", "",
      "| checkpoint load | searches | errors | p50 ms | p99 ms |", "|---|---|---|---|---|",
      f"| alone, before | {b['ok']} | {b['errors']} | {b['p50_ms']:.1f} | {b['p99_ms']:.1f} |",
      f"| while the job runs | {d['ok']} | {d['errors']} | {d['p50_ms']:.1f} | {d['p99_ms']:.1f} |",
      f"| alone, after | {a['ok']} | {a['errors']} | {a['p50_ms']:.1f} | {a['p99_ms']:.1f} |", "",
      f"The job: {j['done']} photos searched, {j['refused']} refused, {j['faces']} faces, {j['seconds']:.0f} s in all; "
      f"{j['photos_per_s_under_load']:.1f} photos/s beside the checkpoint load, {j['photos_per_s_alone']:.1f} photos/s alone."]
(out / "summary.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
PY
