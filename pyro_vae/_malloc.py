"""Keep freed evaluation tiles in the process's heap (glibc), so the next tile reuses them.

A K-sample evaluation allocates and frees tensors of a few MB per tile, thousands of times.
glibc's malloc serves them from ``mmap`` or trims the freed top of its heap back to the kernel
(its thresholds start at 128 kB and adapt upward only so far), so every tile page-faults its
fresh memory in again: on this project's CPU that is about 30% of an evaluation
(benchmarks/RESULTS.md: 9.3 against 6.5 us a sample). :func:`retain_freed_tiles` sets the two
thresholds to the upper bounds that glibc's own adaptation would reach (``M_MMAP_THRESHOLD``
32 MB, ``M_TRIM_THRESHOLD`` 64 MB), once per process, before the first CPU evaluation: at most
64 MB of freed memory stays with the process. It does nothing off glibc, where the user set
``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` themselves, or with ``PYRO_VAE_MALLOPT=0``.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["retain_freed_tiles"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 64 * 2**20
_done: list[bool] = []


def retain_freed_tiles() -> bool:
    """Set glibc's thresholds once (see the module docstring); whether they are set."""
    if _done:
        return _done[0]
    ok = False
    user = any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))
    wanted = os.environ.get("PYRO_VAE_MALLOPT", "1") != "0"
    if wanted and not user and platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        try:
            libc = ctypes.CDLL(None)
            ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
                libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            )
        except (OSError, AttributeError):
            ok = False
    _done.append(ok)
    return ok
