"""The local cache: one ``.npz`` a data set holding its original uint8 bytes, their md5 sums and
where they came from, read without pickle and verified in full on every load."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from pyro_vae._io import atomic_write

from .errors import CorruptDataError
from .idx import IDX_FILES, RawData
from .specs import DatasetSpec
from .validate import validate

__all__ = [
    "CACHE_VERSION",
    "cache_is_current",
    "cache_path",
    "default_cache_dir",
    "read_cache",
    "write_cache",
]

#: Bumped whenever the layout of the ``.npz`` changes; older files are then rebuilt.
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$PYRO_VAE_CACHE``, else ``$XDG_CACHE_HOME/pyro_vae``, else ``~/.cache/pyro_vae``."""
    explicit = os.environ.get("PYRO_VAE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "pyro_vae"
    return Path.home() / ".cache" / "pyro_vae"


def cache_path(cache_dir: Path, name: str) -> Path:
    """The cache file of data set ``name`` in ``cache_dir``, e.g. ``mnist-v1.npz``."""
    return cache_dir / f"{name}-v{CACHE_VERSION}.npz"


def _md5_list(md5s: dict[str, str]) -> list[str]:
    """The md5 sums in :data:`IDX_FILES` order, as the cache stores them."""
    return [md5s[b] for b in IDX_FILES]


@contextmanager
def _open_npz(path: Path) -> Iterator[Any]:
    # Our own file handle: np.load leaks its handle when the zip directory is unreadable.
    with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
        yield z


def write_cache(path: Path, raw: RawData, md5s: dict[str, str], origin: str) -> None:
    """Write ``raw`` (uint8 images ``[N, 28, 28]``, labels ``[N]``) to ``path`` atomically."""

    def write(tmp: str) -> None:
        # A file object, not a name: np.savez would append ".npz" to the temporary name.
        with open(tmp, "wb") as f:
            np.savez(
                f,
                version=np.array(CACHE_VERSION),
                md5=np.array(_md5_list(md5s)),
                origin=np.array(origin),
                **raw._asdict(),
            )

    atomic_write(path, write)


def read_cache(path: Path, spec: DatasetSpec, name: str) -> tuple[RawData, dict[str, str], str]:
    """Load and fully verify the cache: ``(raw bytes, md5 of each IDX file, original origin)``.

    Raises :class:`CorruptDataError` for anything wrong: unreadable, another format version,
    content that fails :func:`validate` or does not match its stored md5 sums.
    """
    try:
        with _open_npz(path) as z:
            version = int(z["version"])
            if version != CACHE_VERSION:
                raise CorruptDataError(f"{path}: cache format {version}, expected {CACHE_VERSION}")
            raw = RawData(*(z[field] for field in RawData._fields))
            stored = [str(s) for s in z["md5"]]
            origin = str(z["origin"])
    except CorruptDataError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise CorruptDataError(f"{path}: unreadable cache ({type(e).__name__}: {e})") from e
    md5s = validate(raw, spec, name, f"cache {path}")
    if stored != _md5_list(md5s):
        raise CorruptDataError(f"{path}: cache content does not match its stored md5 sums")
    return raw, md5s, origin


def cache_is_current(path: Path, md5s: dict[str, str]) -> bool:
    """Whether ``path`` already holds these exact arrays (so rewriting 55 MB can be skipped)."""
    try:
        with _open_npz(path) as z:
            return int(z["version"]) == CACHE_VERSION and [str(s) for s in z["md5"]] == _md5_list(
                md5s
            )
    except Exception:  # any unreadable file just gets rewritten
        return False
