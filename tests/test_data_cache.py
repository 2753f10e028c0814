"""Tests for pyro_vae.data.cache: the round trip, a corrupt cache reported and rebuilt, and
where the cache lives.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import test_data_support
import torch
from test_data_support import Tiny, assert_matches, fake_server, mirror_files, write_idx_set

from pyro_vae.data import DatasetWarning, default_cache_dir, load_dataset

# The shared fixtures of the data tests, made visible to this module's tests.
isolated = test_data_support.isolated
tiny = test_data_support.tiny


# --------------------------------------------------------------------------------------------------
# Cache


def test_cache_round_trip(tmp_path: Path, tiny: Tiny) -> None:
    first = load_dataset("mnist", data_dir=write_idx_set(tmp_path / "data", tiny.mnist))
    cache_file = default_cache_dir() / "mnist-v1.npz"
    assert cache_file.is_file() and str(tmp_path) in str(cache_file)
    start = time.perf_counter()
    second = load_dataset("mnist", download=False)
    assert time.perf_counter() - start < 1.0
    assert second.source.startswith(f"cache {cache_file}") and "data-dir" in second.source
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(first, name), getattr(second, name))
    # The cache holds the original bytes, in a format that loads without pickle.
    with np.load(cache_file, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["train_images"], tiny.mnist.train_images)


def test_explicit_cache_dir(tmp_path: Path, tiny: Tiny) -> None:
    load_dataset(
        "mnist", data_dir=write_idx_set(tmp_path / "d", tiny.mnist), cache_dir=tmp_path / "c"
    )
    assert (tmp_path / "c" / "mnist-v1.npz").is_file()
    assert load_dataset("mnist", cache_dir=tmp_path / "c").source.startswith("cache")


@pytest.mark.parametrize("damage", ["truncate", "flip-pixel", "garbage"])
def test_corrupt_cache_is_reported_and_rebuilt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny: Tiny, damage: str
) -> None:
    load_dataset("mnist", data_dir=write_idx_set(tmp_path / "data", tiny.mnist))
    cache_file = default_cache_dir() / "mnist-v1.npz"
    blob = bytearray(cache_file.read_bytes())
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "flip-pixel":
        # Zip members are stored uncompressed, so the pixel bytes appear verbatim in the file.
        at = bytes(blob).find(tiny.mnist.train_images.tobytes()[:64])
        assert at > 0
        blob[at] ^= 0xFF
    else:
        blob = bytearray(b"not a zip file at all")
    cache_file.write_bytes(bytes(blob))

    fake_server(monkeypatch, mirror_files(tiny.mnist, "https://mirror-b.test/"))
    with pytest.warns(DatasetWarning, match="corrupt cache"):
        d = load_dataset("mnist")
    assert d.source == "download https://mirror-b.test/"
    assert_matches(d, tiny.mnist)
    assert load_dataset("mnist").source.startswith("cache")  # rebuilt


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYRO_VAE_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("PYRO_VAE_CACHE")
    assert default_cache_dir() == tmp_path / "xdg" / "pyro_vae"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "pyro_vae"
