# Shared by the HTTP benchmark scripts (sourced, not run): the probe photo and API keys.

# bench_make_probe SHARED OUT: the probe, deepface id01/img11.jpg (600x800, one face) scaled to fit 640x480 and
# centred on grey, JPEG quality 90 (OpenCV from .venv).
bench_make_probe() {
  .venv/bin/python -c '
import sys, cv2, numpy as np
im = cv2.imread(sys.argv[1])
h, w = im.shape[:2]
s = min(640 / w, 480 / h)
im = cv2.resize(im, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
canvas = np.full((480, 640, 3), 127, np.uint8)
y, x = (480 - im.shape[0]) // 2, (640 - im.shape[1]) // 2
canvas[y:y + im.shape[0], x:x + im.shape[1]] = im
cv2.imwrite(sys.argv[2], canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
' "$1/faces/deepface/id01/img11.jpg" "$2"
}

# bench_create_key BIN DATA_DIR ROLE: prints a new key's secret (the CLI shows it once).
bench_create_key() {
  "$1" keys create --data-dir "$2" --name "bench $3" --role "$3" --purpose "benchmark" 2>/dev/null |
    .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["secret"])'
}

# bench_server_url PID LOG: waits until the server PID (started with `--listen 127.0.0.1:0`, logging to LOG) has
# logged its address and answers /readyz, then prints its base URL; fails if it exits first.
bench_server_url() {
  local addr=""
  while [ -z "$addr" ]; do
    kill -0 "$1" 2>/dev/null || { printf 'the server exited during start-up; see %s\n' "$2" >&2; return 1; }
    addr="$(sed -n 's/.*listening address=\([0-9.:]*\).*/\1/p' "$2" | head -n 1)"
    [ -n "$addr" ] || sleep 0.05
  done
  until curl -sf -o /dev/null "http://$addr/readyz"; do
    kill -0 "$1" 2>/dev/null || { printf 'the server exited; see %s\n' "$2" >&2; return 1; }
    sleep 0.05
  done
  printf 'http://%s\n' "$addr"
}

# bench_binary: the facematch binary with the lab commands: $FACEMATCH_BIN, or target/release/facematch built here.
bench_binary() {
  if [ -n "${FACEMATCH_BIN:-}" ]; then
    printf '%s\n' "$FACEMATCH_BIN"
  else
    printf 'building the release binary\n' >&2
    cargo build --release --features lab --quiet
    printf '%s\n' "$PWD/target/release/facematch"
  fi
}

# bench_checkpoint_load BIN URL PROBE DURATION_S OUT NAME: checkpoint searches of PROBE at concurrency 1 in
# identification mode for DURATION_S seconds, the report in OUT/NAME (and OUT/NAME.txt).
bench_checkpoint_load() {
  printf 'checkpoint load: %s (load average %s)\n' "$6" "$(cut -d' ' -f1-3 /proc/loadavg)" >&2
  "$1" bench http --url "$2" --photos "$3" --concurrency 1 --requests 100000 --duration-s "$4" \
    --mode identification --warmup 3 --out "$5/$6" >"$5/$6.txt"
}
