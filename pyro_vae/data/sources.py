"""The import path of the data layer from before it was split into modules.

``pyro_vae.experiments`` still imports ``DATASETS``, ``ImageData``, ``binarize_static`` and
``load_dataset`` from here; new code imports from :mod:`pyro_vae.data`. This module re-exports the
names it always had: the package's, less ``check_data``. The sources themselves are in
:mod:`pyro_vae.data.acquire`.
"""

from __future__ import annotations

# The package is fully imported before any of its submodules, and it does not import this one.
from . import *  # noqa: F403
from . import __all__ as _package_all

__all__ = [name for name in _package_all if name != "check_data"]
