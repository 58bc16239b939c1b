#!/usr/bin/env bash
# The project's "run" command (README): set-up (idempotent), release build, then the HTTP service.
# Extra arguments go to `facematch serve` (e.g. --demo ../shared/faces/deepface, --listen 0.0.0.0:8080).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
# Without the `lab` feature: the service links none of the harness's dependencies (plotters, hnsw_rs, rand).
cargo build --release --locked
exec target/release/facematch serve "$@"
