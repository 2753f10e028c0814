"""Downloading the four IDX files from a data set's canonical mirrors, each checked by md5."""

from __future__ import annotations

import hashlib
import http.client
import urllib.request
from collections.abc import Callable

import numpy as np

from .errors import CorruptDataError, SourceFailed
from .idx import IDX_FILES, MAGIC, RawData, gunzip, parse_idx
from .specs import DatasetSpec

__all__ = ["DOWNLOAD_TIMEOUT_S", "MAX_DOWNLOAD_BYTES", "download_idx_set", "fetch_url"]

DOWNLOAD_TIMEOUT_S = 5.0  # closed networks usually fail at once; a black hole must not stall a run
MAX_DOWNLOAD_BYTES = 64 * 2**20


def fetch_url(url: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> bytes:
    """The body of ``url``; :class:`SourceFailed` when it exceeds :data:`MAX_DOWNLOAD_BYTES`."""
    request = urllib.request.Request(url, headers={"User-Agent": "pyro_vae"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        blob = response.read(MAX_DOWNLOAD_BYTES + 1)
    if len(blob) > MAX_DOWNLOAD_BYTES:
        raise SourceFailed(f"{url}: larger than {MAX_DOWNLOAD_BYTES} bytes")
    return blob


def _checked_idx(blob: bytes, url: str, base: str, spec: DatasetSpec) -> np.ndarray:
    """Parse a downloaded IDX file after checking its md5; raises :class:`CorruptDataError`."""
    content = gunzip(blob, url) if blob[:2] == b"\x1f\x8b" else blob
    gz_ok = hashlib.md5(blob).hexdigest() == spec.gz_md5[base]
    # A mirror that gzipped the files again changes the .gz sum, not the content's.
    content_ok = spec.md5 is not None and hashlib.md5(content).hexdigest() == spec.md5[base]
    if not (gz_ok or content_ok):
        raise CorruptDataError(f"{url}: md5 checksum mismatch (corrupt or tampered download)")
    return parse_idx(content, url, MAGIC[base])


def download_idx_set(spec: DatasetSpec, log: Callable[[str], None]) -> tuple[RawData, str]:
    """Fetch each IDX file from the first of ``spec.mirrors`` that serves it intact.

    Returns the raw bytes and an origin naming the mirrors used; raises :class:`SourceFailed`
    listing every url's fault as soon as one file fails on every mirror.
    """
    arrays = []
    used: list[str] = []
    for base in IDX_FILES:
        errors = []
        for mirror in spec.mirrors:
            url = f"{mirror}{base}.gz"
            log(f"downloading {url}")
            try:
                blob = fetch_url(url)
            # IncompleteRead (a cut connection) is an HTTPException, not an OSError.
            except (OSError, http.client.HTTPException, ValueError, SourceFailed) as e:
                errors.append(f"{url}: {getattr(e, 'reason', e)}")
                continue
            try:
                array = _checked_idx(blob, url, base, spec)
            except CorruptDataError as e:
                errors.append(str(e))  # already names the url
                continue
            arrays.append(array)
            used.append(mirror)
            break
        else:
            # One file missing on every mirror means the whole download cannot succeed; stop early.
            raise SourceFailed("; ".join(errors))
    return RawData(*arrays), "download " + ", ".join(sorted(set(used)))
