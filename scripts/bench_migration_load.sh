#!/usr/bin/env bash
# Checkpoint latency while the gallery moves to another recognizer: does the old model keep serving?
#
#   1. a data dir with every lfw-dev photo enrolled by the default model (`facematch enroll`, faces kept), keys made
#      with the CLI;
#   2. the server (release build, `--features lab` for the load generator);
#   3. checkpoint searches alone: `facematch bench http` at concurrency 1, identification mode, --duration-s;
#   4. a migration to --to (default dlib-resnet-v1, gaps accepted) started with an admin key, and at once the same
#      checkpoint load for the same time while it runs; the migration's progress is read before and after, so its own
#      rate under load is known;
#   5. the switch is awaited, then the checkpoint load again, now answered by the new model.
# The probe is the benchmark photo of scripts/bench_http.sh (640x480, one face).
#
# Usage: scripts/bench_migration_load.sh [--out DIR] [--to MODEL] [--duration-s S]
# Env:   FACEMATCH_BIN  use this binary (built with `--features lab`) instead of building target/release/facematch
# Writes baseline/during/after load reports, migration snapshots and summary.json + summary.md into --out
# (default reports/bench-migration-load/<UTC time>).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh
shared="${FACEMATCH_SHARED:-$root/../shared}"
out="reports/bench-migration-load/$(date -u +%Y%m%dT%H%M%SZ)"
to=dlib-resnet-v1
duration_s=20
die() { printf 'bench_migration_load: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'bench_migration_load: %s\n' "$*" >&2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --to) to="$2"; shift 2 ;;
    --duration-s) duration_s="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^set -euo/ { exit } NR > 1' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[ -d "$shared/faces/lfw-dev" ] || die "$shared/faces/lfw-dev is missing"
bin="$(bench_binary)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/facematch-bench-migration.XXXXXX")"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -TERM "$server_pid"; wait "$server_pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
export NO_COLOR=1

probe="$work/probe-640x480.jpg"
bench_make_probe "$shared" "$probe"
data="$work/data"
admin="$(bench_create_key "$bin" "$data" admin)"
enroller="$(bench_create_key "$bin" "$data" enroller)"
FACEMATCH_API_KEY="$(bench_create_key "$bin" "$data" checkpoint)"
FACEMATCH_METRICS_KEY="$admin"
export FACEMATCH_API_KEY FACEMATCH_METRICS_KEY
say "enrolling every lfw-dev photo with the default model"
"$bin" watchlists create lfw --data-dir "$data" --key "$admin" >/dev/null
# A photo the quality policy refuses makes the exit status a failure; the summary says how many.
"$bin" enroll "$shared/faces/lfw-dev" --watchlist lfw --data-dir "$data" --key "$enroller" >"$out/enroll.json" 2>/dev/null ||
  say "some photos were not enrolled; see $out/enroll.json"

log="$out/serve.log"
FACEMATCH_ACCESS__RATE_PER_SECOND=1000 FACEMATCH_ACCESS__RATE_BURST=2000 \
  "$bin" serve --data-dir "$data" --listen 127.0.0.1:0 >"$log" 2>&1 &
server_pid=$!
url="$(bench_server_url "$server_pid" "$log")" || die "the server did not start"

checkpoint_load() { bench_checkpoint_load "$bin" "$url" "$probe" "$duration_s" "$out" "$1"; }
migration_state() { curl -sf "$url/v1/models/migrations/$migration?per_page=1" -H "authorization: Bearer $admin"; }

checkpoint_load baseline
say "starting the migration to $to"
migration="$(curl -sf -XPOST "$url/v1/models/migrations" -H "authorization: Bearer $admin" -H 'x-facematch-purpose: benchmark' \
  -H 'content-type: application/json' -d "{\"to\":\"$to\",\"accept_gaps\":true}" |
  .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
started="$(date +%s.%N)"
checkpoint_load during
migration_state >"$out/migration-after-load.json"
loaded="$(date +%s.%N)"
while .venv/bin/python -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["migration"]["state"] == "running" else 1)' < <(migration_state); do
  sleep 0.5
done
finished="$(date +%s.%N)"
migration_state >"$out/migration-end.json"
checkpoint_load after
kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""

.venv/bin/python - "$out" "$started" "$loaded" "$finished" <<'PY'
import json, pathlib, sys, datetime
out, started, loaded, finished = pathlib.Path(sys.argv[1]), *map(float, sys.argv[2:5])
def level(name):
    l = json.loads((out / name / "levels.json").read_text())["outcome"]["levels"][0]
    return {"ok": l["ok"], "errors": l["sent"] - l["ok"], "p50_ms": l["latency_ms"]["p50"], "p99_ms": l["latency_ms"]["p99"]}
under = json.loads((out / "migration-after-load.json").read_text())["migration"]
end = json.loads((out / "migration-end.json").read_text())["migration"]
done_under_load = under["progress"]["done"] + under["progress"]["failed"]
p = end["progress"]
summary = {
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "from": end["from_model"], "to": end["to_model"], "state": end["state"],
    "baseline": level("baseline"), "during_migration": level("during"), "after_switch": level("after"),
    "migration": {"faces": p["faces"], "done": p["done"], "failed": p["failed"],
                  "subjects_without_template": p["subjects_without_template"],
                  "faces_per_s_under_load": done_under_load / (loaded - started),
                  "faces_per_s_alone": (p["done"] + p["failed"] - done_under_load) / max(finished - loaded, 1e-9),
                  "seconds": finished - started},
}
(out / "summary.json").write_text(json.dumps(summary, indent=2))
b, d, a, m = summary["baseline"], summary["during_migration"], summary["after_switch"], summary["migration"]
md = [f"Checkpoint searches at concurrency 1 while the gallery moves from {summary['from']} to {summary['to']} "
      f"({summary['date']}):", "",
      "| checkpoint load | searches | errors | p50 ms | p99 ms |", "|---|---|---|---|---|",
      f"| {summary['from']} alone, before | {b['ok']} | {b['errors']} | {b['p50_ms']:.1f} | {b['p99_ms']:.1f} |",
      f"| {summary['from']} while the migration runs | {d['ok']} | {d['errors']} | {d['p50_ms']:.1f} | {d['p99_ms']:.1f} |",
      f"| {summary['to']} after the switch | {a['ok']} | {a['errors']} | {a['p50_ms']:.1f} | {a['p99_ms']:.1f} |", "",
      f"The migration ({summary['state']}): {m['done']} of {m['faces']} faces remade, {m['failed']} refused, "
      f"{m['seconds']:.0f} s in all; {m['faces_per_s_under_load']:.0f} faces/s beside the checkpoint load, "
      f"{m['faces_per_s_alone']:.0f} faces/s alone."]
(out / "summary.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
PY
