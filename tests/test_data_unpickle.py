"""Tests for pyro_vae.data.unpickle: only numpy arrays may be rebuilt."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from test_data_support import Evil

from pyro_vae.data.unpickle import safe_unpickle

# --------------------------------------------------------------------------------------------------
# Restricted unpickler


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
            safe_unpickle(pickle.dumps(Evil(marker), protocol=protocol))
    with pytest.raises(pickle.UnpicklingError):
        safe_unpickle(pickle.dumps(eval, protocol=2))
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_accepts_numpy_arrays(protocol: int) -> None:
    arrays = (np.arange(12, dtype=np.float32).reshape(3, 4), np.array([5, 0, 4], dtype=np.int64))
    loaded = safe_unpickle(pickle.dumps(arrays, protocol=protocol))
    for a, b in zip(arrays, loaded, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
