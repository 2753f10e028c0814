"""Keep freed CPU tensors in the process's heap (glibc), so the next step or tile reuses them.

Training steps and K-sample evaluations allocate and free tensors of a few MB (a K = 5 step's
``[K*B, D]`` = ``[640, 784]`` decoder outputs are 2 MB each) thousands of times. glibc's malloc
serves them from ``mmap`` or trims the freed top of its heap back to the kernel (its thresholds
start at 128 kB and adapt upward only so far: 2 MB and 4 MB in a K = 5 run), so every step or
tile page-faults its fresh memory in again. On this project's CPU that is about 30% of an
evaluation (benchmarks/RESULTS.md: 9.3 against 6.5 us a sample), 14% of an iwae K = 5 training
step (1,000-1,230 faults a step) and 9% at K = 50, where glibc's thresholds were not already
pushed up by what the process did before (loading MNIST through :mod:`pyro_vae.data` does that
for K = 5, not for K = 50).
:func:`retain_freed_memory` sets the two thresholds to the upper bounds that glibc's own
adaptation would reach (``M_MMAP_THRESHOLD`` 32 MB, ``M_TRIM_THRESHOLD`` 64 MB), once per
process, before the first CPU training step (train()) or evaluation: at most 64 MB of freed
memory stays with the process. The setting is process-wide. It does nothing off glibc, where
the user set ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` themselves, or with
``PYRO_VAE_MALLOPT=0``.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["retain_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 64 * 2**20
_done: list[bool] = []


def retain_freed_memory() -> bool:
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
