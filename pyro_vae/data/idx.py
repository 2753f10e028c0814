"""The IDX format of the MNIST family: parsing, reading a file plain or gzipped, finding the four
files of a data set in a folder, and the md5 of an array as its canonical IDX file."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import REFETCH, CorruptDataError, SourceFailed

__all__ = [
    "IDX_FILES",
    "IMAGE_MAGIC",
    "LABEL_MAGIC",
    "MAGIC",
    "RawData",
    "find_idx_files",
    "gunzip",
    "idx_md5",
    "parse_idx",
    "read_idx",
    "read_idx_folder",
]

#: Canonical IDX file names (uncompressed); a ``.gz`` suffix is also accepted.
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

IMAGE_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dims
LABEL_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dim
#: The magic number each of :data:`IDX_FILES` must start with.
MAGIC = {
    IDX_FILES[0]: IMAGE_MAGIC,
    IDX_FILES[1]: LABEL_MAGIC,
    IDX_FILES[2]: IMAGE_MAGIC,
    IDX_FILES[3]: LABEL_MAGIC,
}


class RawData(NamedTuple):
    """The original bytes of one data set, as in its four IDX files (in :data:`IDX_FILES` order)."""

    train_images: np.ndarray  # uint8 [N_train, 28, 28]
    train_labels: np.ndarray  # uint8 [N_train]
    test_images: np.ndarray  # uint8 [N_test, 28, 28]
    test_labels: np.ndarray  # uint8 [N_test]


def parse_idx(
    buf: bytes | bytearray | memoryview, what: str, expected_magic: int | None = None
) -> np.ndarray:
    """Parse the bytes of one uncompressed IDX file into a uint8 array shaped as its header says.

    ``what`` names the file in error messages. Raises :class:`CorruptDataError` when the header is
    not that of unsigned bytes, the magic is not ``expected_magic``, or the length is not exactly
    what the header describes.
    """
    if len(buf) < 4:
        raise CorruptDataError(
            f"{what}: truncated or corrupt ({len(buf)} bytes, no IDX header); {REFETCH}"
        )
    zero0, zero1, type_code, ndim = buf[0], buf[1], buf[2], buf[3]
    magic = (type_code << 8) | ndim
    if zero0 != 0 or zero1 != 0 or type_code != 0x08 or not 1 <= ndim <= 4:
        raise CorruptDataError(
            f"{what}: not an IDX file of unsigned bytes (magic 0x{bytes(buf[:4]).hex()}, expected "
            f"{expected_magic or '2049/2051'}); {REFETCH}"
        )
    if expected_magic is not None and magic != expected_magic:
        raise CorruptDataError(
            f"{what}: wrong IDX magic number {magic}, expected {expected_magic}; {REFETCH}"
        )
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise CorruptDataError(
            f"{what}: truncated or corrupt (file ends inside the header); {REFETCH}"
        )
    dims = struct.unpack(f">{ndim}I", bytes(buf[4:header]))
    count = int(np.prod(dims, dtype=np.int64))
    if len(buf) < header + count:
        raise CorruptDataError(
            f"{what}: truncated or corrupt: {len(buf)} bytes but the header {dims} needs "
            f"{header + count}; {REFETCH}"
        )
    if len(buf) > header + count:
        raise CorruptDataError(
            f"{what}: corrupt: {len(buf) - header - count} bytes beyond what the header {dims} "
            f"describes; {REFETCH}"
        )
    return np.frombuffer(buf, dtype=np.uint8, count=count, offset=header).reshape(dims)


def gunzip(blob: bytes, what: str) -> bytes:
    """Decompress ``blob``; a damaged stream raises :class:`CorruptDataError` naming ``what``."""
    try:
        return gzip.decompress(blob)
    except EOFError as e:
        raise CorruptDataError(f"{what}: truncated gzip file ({e}); {REFETCH}") from e
    except (OSError, zlib.error) as e:
        raise CorruptDataError(f"{what}: corrupt gzip file ({e}); {REFETCH}") from e


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
        blob = gunzip(blob, str(path))
    return parse_idx(blob, str(path), expected_magic)


def idx_md5(array: np.ndarray, magic: int) -> str:
    """md5 of the uncompressed IDX file that holds ``array``: comparable with published sums."""
    digest = hashlib.md5(struct.pack(f">I{array.ndim}I", magic, *array.shape))
    digest.update(np.ascontiguousarray(array, dtype=np.uint8))
    return digest.hexdigest()


def _idx_files_in(layout: Path) -> dict[str, Path]:
    """Those of the four IDX files that ``layout`` holds, under any of their accepted names."""
    found: dict[str, Path] = {}
    for base in IDX_FILES:
        # LeCun's site once served names with a dot ("train-images.idx3-ubyte"); accept both.
        dotted = base.replace("-idx", ".idx")
        for candidate in (base, base + ".gz", dotted, dotted + ".gz"):
            if (layout / candidate).is_file():
                found[base] = layout / candidate
                break
    return found


def find_idx_files(folder: Path, torchvision_folder: str) -> dict[str, Path]:
    """All four IDX files in ``folder`` (flat) or in ``folder/<torchvision_folder>/raw``.

    Raises :class:`SourceFailed` saying what is missing where.
    """
    if not folder.exists():
        raise SourceFailed(f"{folder} does not exist")
    if not folder.is_dir():
        raise SourceFailed(f"{folder} is not a directory")
    problems = []
    for layout in (folder, folder / torchvision_folder / "raw"):
        if not layout.is_dir():
            continue
        found = _idx_files_in(layout)
        if len(found) == len(IDX_FILES):
            return found
        if found:
            missing = [b for b in IDX_FILES if b not in found]
            problems.append(f"{layout} lacks {', '.join(missing)} (plain or .gz)")
    if not problems:
        problems.append(
            f"no IDX files ({IDX_FILES[0]}[.gz], ...) in {folder} "
            f"or {folder / torchvision_folder / 'raw'}"
        )
    raise SourceFailed("; ".join(problems))


def read_idx_folder(folder: Path, torchvision_folder: str) -> RawData:
    """Read the four IDX files that :func:`find_idx_files` finds, each checked for its magic."""
    files = find_idx_files(folder, torchvision_folder)
    return RawData(*(read_idx(files[base], MAGIC[base]) for base in IDX_FILES))
