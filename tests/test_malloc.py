"""glibc keeps freed evaluation tiles (pyro_vae/_malloc.py): set once, and only where asked."""

import os
import platform
import subprocess
import sys

import pytest

CODE = "from pyro_vae._malloc import retain_freed_tiles as r; print(r(), r())"


def _run(**env):
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "PYRO_VAE_"))}
    proc = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, env={**full, **env}
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_the_thresholds_are_set_once_on_glibc():
    assert _run() == ["True", "True"]


def test_the_user_and_the_opt_out_win():
    assert _run(PYRO_VAE_MALLOPT="0") == ["False", "False"]
    assert _run(MALLOC_TRIM_THRESHOLD_="1000000") == ["False", "False"]
