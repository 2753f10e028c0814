"""Data: the MNIST family's acquisition, the safe cache, binarization and the data checks."""

from .checks import check_data
from .sources import *  # noqa: F401,F403
from .sources import __all__ as _sources_all

__all__ = ["check_data", *_sources_all]
