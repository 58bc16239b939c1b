#!/usr/bin/env bash
# The project's test command (README, CI): set-up (idempotent), then every test, unit and integration, on the real
# models and the real photos in ../shared/faces. Tests that need ../shared fail, not skip, when it is missing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
# The console's browser tests: Debian's chromium and playwright-core (tests/browser).
bash scripts/setup_browser.sh
# Prove the default recognizer's conversion on every run: the ONNX must match Intel's OpenVINO runtime within 1e-4
# on real aligned crops and have the sha256 the manifest pins.
.venv/bin/python -m pip install -q --disable-pip-version-check -r scripts/requirements-verify.txt
pinned="$(sed -n 's/^sha256 = "\([0-9a-f]*\)"/\1/p' models/face-reid-retail-0095.toml)"
.venv/bin/python scripts/verify_openvino_conversion.py --expect-sha256 "$pinned"
# The lab (evaluation harness, load generator, benchmarks) and HTTPS (`tls`) are built too, so their tests run;
# never --all-features, which would turn on `cuda`.
cargo test --locked --features lab,tls --all-targets "$@"
