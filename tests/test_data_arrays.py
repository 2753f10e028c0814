"""Tests for pyro_vae.data.arrays: as_tensor on arrays, tensors and Datasets, and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyro_vae.data import as_tensor

# --------------------------------------------------------------------------------------------------
# as_tensor


class PairDataset(torch.utils.data.Dataset):
    def __init__(self, xs: torch.Tensor) -> None:
        self.xs = xs

    def __len__(self) -> int:
        return len(self.xs)

    def __getitem__(self, i: int):
        return self.xs[i], i % 10


class StreamDataset(torch.utils.data.IterableDataset):
    def __iter__(self):
        for i in range(3):
            yield np.full((2, 2), i, dtype=np.uint8)


def test_as_tensor_conversions() -> None:
    images = np.arange(5 * 28 * 28, dtype=np.uint8).reshape(5, 28, 28)
    t = as_tensor(images)
    assert t.dtype == torch.float32 and t.shape == (5, 784)
    assert torch.equal(t, torch.from_numpy(images.reshape(5, -1).astype(np.float32)))

    x64 = torch.rand(4, 3, dtype=torch.float64)
    assert as_tensor(x64).dtype == torch.float32 and as_tensor(x64).shape == (4, 3)
    assert as_tensor(np.array([[True, False]])).tolist() == [[1.0, 0.0]]

    xs = torch.rand(6, 1, 4, 4)
    assert torch.equal(as_tensor(PairDataset(xs)), xs.reshape(6, 16))
    assert torch.equal(as_tensor(torch.utils.data.TensorDataset(xs)), xs.reshape(6, 16))
    assert as_tensor(StreamDataset()).tolist() == [[0.0] * 4, [1.0] * 4, [2.0] * 4]

    readonly = np.frombuffer(bytes(8), dtype=np.uint8).reshape(2, 4)
    assert as_tensor(readonly).shape == (2, 4)


def test_as_tensor_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        as_tensor(np.zeros((0, 784)))
    with pytest.raises(ValueError, match="no features"):
        as_tensor(torch.zeros(3, 0))
    with pytest.raises(ValueError, match=r"1 non-finite value\(s\) \(NaN\)"):
        as_tensor(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match=r"non-finite value\(s\) \(infinite\)"):
        as_tensor(torch.tensor([[float("inf"), 0.0]]))
    with pytest.raises(ValueError, match="at least 2 dims"):
        as_tensor(np.zeros(784))
    with pytest.raises(ValueError, match="at least 2 dims"):
        as_tensor(torch.tensor(1.0))
    with pytest.raises(TypeError, match="unsupported data type list"):
        as_tensor([[0.0, 1.0]])
    with pytest.raises(TypeError, match="dtype"):
        as_tensor(np.array([["a", "b"]]))
    with pytest.raises(TypeError, match="complex"):
        as_tensor(torch.zeros(2, 2, dtype=torch.complex64))
    with pytest.raises(ValueError, match="empty"):
        as_tensor(PairDataset(torch.zeros(0, 3)))
    with pytest.raises(ValueError, match="item 1 has shape"):
        as_tensor(_Ragged())
    with pytest.raises(TypeError, match="items must be tensors"):
        as_tensor(_Strings())


class _Ragged(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.zeros(3 + i)


class _Strings(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> str:
        return "x"
