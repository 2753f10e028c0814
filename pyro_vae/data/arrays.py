"""Users' own data (numpy arrays, torch tensors, a ``torch.utils.data.Dataset``) as the float32
``[N, D]`` matrix the models train on."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .checks import check_finite

__all__ = ["as_tensor"]


def _item_to_tensor(item: Any, index: int) -> torch.Tensor:
    """One dataset item (``x`` or ``(x, y, ...)``) as a tensor of ``x``'s shape."""
    if isinstance(item, (tuple, list)):
        if not item:
            raise ValueError(f"dataset item {index} is an empty {type(item).__name__}")
        item = item[0]  # (x, y) pairs: the labels are not needed by a VAE
    if isinstance(item, torch.Tensor):
        return item.detach()
    if (
        isinstance(item, np.ndarray)
        or hasattr(item, "__array_interface__")
        or hasattr(item, "__array__")
    ):
        arr = np.asarray(item)  # also PIL images
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"dataset item {index} has unsupported dtype {arr.dtype}")
        return torch.from_numpy(np.array(arr, dtype=np.float32))
    raise TypeError(
        f"dataset item {index} is a {type(item).__name__}; items must be tensors or arrays, "
        "or (x, y) tuples of them (for torchvision data sets, pass transform=ToTensor())"
    )


def _dataset_to_tensor(data: torch.utils.data.Dataset) -> torch.Tensor:
    """Every item of ``data`` stacked: float32 ``[N, *item_shape]``."""
    if isinstance(data, torch.utils.data.IterableDataset):
        items = iter(data)
    else:
        try:
            n = len(data)  # type: ignore[arg-type]
        except TypeError as e:
            raise TypeError("a map-style Dataset must define __len__") from e
        items = (data[i] for i in range(n))
    rows: list[torch.Tensor] = []
    for i, item in enumerate(items):
        x = _item_to_tensor(item, i)
        if rows and x.shape != rows[0].shape:
            raise ValueError(
                f"dataset item {i} has shape {tuple(x.shape)}, "
                f"but item 0 has {tuple(rows[0].shape)}"
            )
        rows.append(x.to(torch.float32))
    if not rows:
        raise ValueError("the dataset is empty (0 items)")
    return torch.stack(rows)


def as_tensor(data: Any) -> torch.Tensor:
    """Convert users' own data into the float32 ``[N, D]`` matrix the models train on.

    Args:
        data: a numpy array or torch tensor ``[N, ...]`` (trailing dims are flattened, e.g. images
            ``[N, 28, 28]`` become ``[N, 784]``), or a ``torch.utils.data.Dataset`` whose items are
            ``x`` or ``(x, y, ...)`` with ``x`` a tensor/array (labels are dropped). Values are not
            rescaled: divide bytes by 255 yourself.

    Returns:
        float32 tensor ``[N, D]``, on the input tensor's device (CPU for numpy and Datasets). It
        may share memory with a float32 input tensor.

    Raises:
        TypeError: unsupported container or dtype (strings, objects, complex numbers).
        ValueError: fewer than 2 dimensions, no rows or no features, NaN or infinite values.
    """
    if isinstance(data, torch.Tensor):
        if data.is_complex():
            raise TypeError(f"complex tensors are not supported (dtype {data.dtype})")
        # The caller's tensor itself where it needs no change: the data checks' memo
        # (data/checks.py) then knows it on the next call.
        tensor = data.detach() if data.requires_grad else data
    elif isinstance(data, np.ndarray):
        if data.dtype.kind not in "biuf":
            raise TypeError(
                f"unsupported numpy dtype {data.dtype}; expected bool, integer or float data"
            )
        # A copy: torch warns on read-only arrays, and the caller's array stays untouched.
        tensor = torch.from_numpy(np.array(data, dtype=np.float32))
    elif isinstance(data, torch.utils.data.Dataset):
        tensor = _dataset_to_tensor(data)
    else:
        raise TypeError(
            f"unsupported data type {type(data).__name__}; pass a numpy array, a torch tensor "
            "or a torch.utils.data.Dataset"
        )
    if tensor.ndim < 2:
        raise ValueError(
            f"expected data of shape [N, ...] with at least 2 dims, got {tuple(tensor.shape)}; "
            "use x[None] for a single example or x[:, None] for N one-feature examples"
        )
    if tensor.shape[0] == 0:
        raise ValueError(f"data is empty: shape {tuple(tensor.shape)} has no rows")
    if tensor.ndim != 2:
        tensor = tensor.reshape(tensor.shape[0], -1)
    tensor = tensor.to(torch.float32)
    if tensor.shape[1] == 0:
        raise ValueError("data has no features (a trailing dimension is 0)")
    check_finite(tensor, "data")
    return tensor
