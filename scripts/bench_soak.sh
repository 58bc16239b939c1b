#!/usr/bin/env bash
# Soak, overload and slow-sender flood of the HTTP service on loopback (2 cores, default model, 10,000 synthetic
# templates, a 640x480 JPEG with one face, checkpoint key, anchored audit trail):
#   1. capacity: `facematch bench http` closed loop at concurrency 8 for --capacity-s seconds; the sustainable rate
#      is --fraction (default 0.75) of the searches per second it answered, so that queues stay short;
#   2. soak: `facematch bench soak` open loop at that rate for --soak-s (default 600) seconds, windows of 30 s,
#      sampling the server's resident memory and open files every window;
#   3. overload: three times that rate for --overload-s (default 120) seconds: the server must shed with 503/429
#      while the requests it admits keep a bounded p99;
#   4. flood: the sustainable rate again for --flood-s (default 120) seconds beside --slow-senders (default 400)
#      connections that trickle their headers or idle; the searches must go on as in the soak.
# One server serves all four, so the flood also shows recovery after the overload. All searches use one checkpoint
# key, so the per-key rate limit (`access.rate_per_second`, default 50) is raised to --key-rate (default 1000) to
# measure the server rather than one key's allowance; with --key-rate 50 the overload sheds with 429 instead.
#
# Usage: scripts/bench_soak.sh [--out DIR] [--soak-s S] [--overload-s S] [--flood-s S] [--capacity-s S]
#                              [--fraction F] [--rate R] [--slow-senders N] [--key-rate N] [--keep]
#        --rate R skips the capacity measurement and uses R searches/s as the sustainable rate.
# Env:   FACEMATCH_BIN  use this binary (built with `--features lab`) instead of building target/release/facematch
# Writes capacity/, soak/, overload/, flood/ (each with soak.json and soak.md) and summary.md into --out
# (default reports/bench-soak/<UTC time>). Run it on a quiet machine: a build beside it moves every figure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh
shared="${FACEMATCH_SHARED:-$root/../shared}"
out="reports/bench-soak/$(date -u +%Y%m%dT%H%M%SZ)"
soak_s=600
overload_s=120
flood_s=120
capacity_s=30
fraction=0.75
rate=""
slow_senders=400
key_rate=1000
keep=0
die() { printf 'bench_soak: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'bench_soak: %s\n' "$*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --soak-s) soak_s="$2"; shift 2 ;;
    --overload-s) overload_s="$2"; shift 2 ;;
    --flood-s) flood_s="$2"; shift 2 ;;
    --capacity-s) capacity_s="$2"; shift 2 ;;
    --fraction) fraction="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --slow-senders) slow_senders="$2"; shift 2 ;;
    --key-rate) key_rate="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) awk 'NR > 1 && /^set -euo/ { exit } NR > 1' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

[ -x .venv/bin/python ] || die ".venv is missing; run scripts/setup.sh"
command -v curl >/dev/null || die "curl is needed to poll /readyz"
[ -f "$shared/faces/deepface/id01/img11.jpg" ] || die "$shared/faces/deepface is missing"
if [ -n "${FACEMATCH_BIN:-}" ]; then
  bin="$FACEMATCH_BIN"
else
  say "building the release binary"
  cargo build --release --features lab --quiet
  bin="$root/target/release/facematch"
fi
[ -x "$bin" ] || die "$bin is not executable"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/facematch-bench-soak.XXXXXX")"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ "$keep" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
export NO_COLOR=1

# The probe, as scripts/bench_http.sh makes it: 640x480, one face.
probe="$work/probe-640x480.jpg"
bench_make_probe "$shared" "$probe"

data="$work/gallery"
say "seeding 10,000 templates"
"$bin" bench seed --data-dir "$data" --templates 10000 --watchlists 4 --seed 7 >"$out/seed.json"
# Keys travel in the environment, never on a command line that `ps` shows.
FACEMATCH_API_KEY="$(bench_create_key "$bin" "$data" checkpoint)"
FACEMATCH_METRICS_KEY="$(bench_create_key "$bin" "$data" admin)"
export FACEMATCH_API_KEY FACEMATCH_METRICS_KEY

log="$out/serve.log"
FACEMATCH_ACCESS__RATE_PER_SECOND="$key_rate" FACEMATCH_ACCESS__RATE_BURST="$((2 * key_rate))" \
  "$bin" serve --data-dir "$data" --listen 127.0.0.1:0 >"$log" 2>&1 &
server_pid=$!
url="$(bench_server_url "$server_pid" "$log")" || die "the server did not start"
say "server $server_pid at $url (open-file limit $(awk '/Max open files/ { print $4 }' "/proc/$server_pid/limits"))"

if [ -z "$rate" ]; then
  say "capacity: closed loop at concurrency 8 for $capacity_s s"
  "$bin" bench http --url "$url" --photos "$probe" --concurrency 8 --requests 100000 --duration-s "$capacity_s" \
    --warmup 5 --out "$out/capacity" >"$out/capacity.txt"
  rate="$(.venv/bin/python -c '
import json, sys
level = json.load(open(sys.argv[1]))["outcome"]["levels"][0]
print("%.1f" % (float(sys.argv[2]) * level["ok_per_second"]))
' "$out/capacity/levels.json" "$fraction")"
fi
overload_rate="$(awk -v r="$rate" 'BEGIN { printf "%.1f", 3 * r }')"
say "sustainable rate $rate searches/s; overload $overload_rate"

soak() { # NAME RATE SECONDS WINDOW [extra args]
  local name="$1" r="$2" s="$3" w="$4"
  shift 4
  say "$name: $r searches/s for $s s $*"
  "$bin" bench soak --url "$url" --photos "$probe" --rate "$r" --duration-s "$s" --window-s "$w" \
    --server-pid "$server_pid" --out "$out/$name" "$@" >"$out/$name.txt" 2>"$out/$name.progress"
}
soak soak "$rate" "$soak_s" 30
soak overload "$overload_rate" "$overload_s" 15 --max-in-flight 512
soak flood "$rate" "$flood_s" 15 --slow-senders "$slow_senders" --slow-style mixed

kill -TERM "$server_pid"
wait "$server_pid" || die "the server exited with an error on SIGTERM"
server_pid=""
{
  echo "# Soak, overload and slow-sender flood ($(date -u +%Y-%m-%d), $(nproc) cores, load average at the end $(cut -d' ' -f1-3 /proc/loadavg))"
  echo
  echo "Sustainable rate: $rate searches/s ($fraction of the closed-loop capacity at concurrency 8, or given)."
  for name in soak overload flood; do echo; sed 's/^# /## /' "$out/$name/soak.md"; done
} >"$out/summary.md"
cat "$out/summary.md"
say "written to $out"
