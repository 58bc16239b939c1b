#!/usr/bin/env bash
# The project's test command (README, CI): set-up (idempotent), then every test, unit and integration, on the real
# models and the real photos in ../shared/faces. Tests that need ../shared fail, not skip, when it is missing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
cargo test --locked --all-targets "$@"
