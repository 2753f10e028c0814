"""glibc keeps freed CPU memory (pyro_vae/_malloc.py): set once, by train(), only where asked."""

import os
import platform
import subprocess
import sys

import pytest

CODE = "from pyro_vae._malloc import retain_freed_memory as r; print(r(), r())"

# train() alone (no test data, so no evaluation sets them), then whether glibc serves a 24 MB
# block from its heap (thresholds set: no new mmap'd block) or from mmap (its defaults). Nothing
# in this small run frees an mmap'd block of 24 MB or more, which would raise glibc's own
# threshold past it.
PROBE = """
import ctypes, torch, pyro_vae as pv
torch.manual_seed(0)
if TRAIN:
    pv.train(pv.VAE(6, 2, (8,)), torch.rand(32, 6).round(),
             config=pv.TrainConfig(epochs=1, batch_size=16, progress=False))
FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in FIELDS.split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype, libc.malloc.restype = Info, ctypes.c_void_p
before = libc.mallinfo2().hblks
block = libc.malloc(24 * 2**20)
print(libc.mallinfo2().hblks - before)
libc.free(ctypes.c_void_p(block))
"""

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")


def _has_mallinfo2() -> bool:  # glibc >= 2.33
    import ctypes

    return platform.libc_ver()[0] == "glibc" and hasattr(ctypes.CDLL(None), "mallinfo2")


def _run(code=CODE, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "PYRO_VAE_"))}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**full, **env}
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


@glibc_only
def test_the_thresholds_are_set_once_on_glibc():
    assert _run() == ["True", "True"]


def test_the_user_and_the_opt_out_win():
    assert _run(PYRO_VAE_MALLOPT="0") == ["False", "False"]
    assert _run(MALLOC_TRIM_THRESHOLD_="1000000") == ["False", "False"]


@pytest.mark.skipif(not _has_mallinfo2(), reason="glibc >= 2.33's mallinfo2 only")
def test_train_keeps_freed_memory_in_the_heap_unless_opted_out():
    assert _run("TRAIN = False" + PROBE) == ["1"]  # importing pyro_vae sets nothing
    assert _run("TRAIN = True" + PROBE) == ["0"]
    assert _run("TRAIN = True" + PROBE, PYRO_VAE_MALLOPT="0") == ["1"]
