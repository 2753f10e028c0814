"""Import the library with ``benchmarks/proposed.patch`` applied, side by side with the original.

The working tree's ``pyro_vae`` is copied to a temporary folder as the package
``pyro_vae_proposed``, the patch is applied to the copy (the library itself is never edited), and
the copy is imported, so one process can time the current and the proposed code interleaved.
"""

from __future__ import annotations

import atexit
import importlib
import itertools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PATCH = Path(__file__).resolve().parent / "proposed.patch"
_cache: dict = {}


def library_part(text: str) -> str:
    """The file sections of a unified diff that touch ``pyro_vae/`` (not the tests)."""
    sections, keep = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("--- "):
            keep = line[4:].strip().removeprefix("a/").startswith("pyro_vae/")
        if keep:
            sections.append(line)
    return "".join(sections)


def load_proposed(patch: Path = PATCH):
    """The patched package, or ``None`` (with the reason on stderr) if the patch does not apply
    to the current files (e.g. they changed since it was written)."""
    if "module" in _cache:
        return _cache["module"]
    import pyro_vae

    module = None
    src = Path(pyro_vae.__file__).resolve().parent
    tmp = Path(tempfile.mkdtemp(prefix="pyro_vae_proposed_"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    dst = tmp / "pyro_vae_proposed"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    # The patch names a/pyro_vae/<file>; inside the copy that is -p2.
    lib_patch = tmp / "library.patch"
    lib_patch.write_text(library_part(Path(patch).read_text()))
    cmd = ["patch", "-p2", "--forward", "--batch", "--silent", "-d", str(dst), "-i", str(lib_patch)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        ok, why = out.returncode == 0, out.stdout + out.stderr
    except FileNotFoundError:
        ok, why = False, "the `patch` program is not installed"
    if ok:
        sys.path.insert(0, str(tmp))
        module = importlib.import_module("pyro_vae_proposed")
        # Distinct param-store names from the original package's VAEs (vae0, vae1, ...).
        sys.modules["pyro_vae_proposed.vae"]._instances = itertools.count(1_000_000)
    else:
        print(
            f"proposed.patch does not apply to {src}; its rows are skipped:\n{why}", file=sys.stderr
        )
    _cache["module"] = module
    return module
