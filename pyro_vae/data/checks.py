"""The shape and finiteness check every entry point runs on a data tensor."""

from __future__ import annotations

import torch

__all__ = ["check_data"]


def check_data(x: torch.Tensor, x_dim: int | None = None, what: str = "data") -> None:
    """Raise a clear error unless ``x`` is a finite floating tensor of shape ``[N, x_dim]``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{what} must be a torch.Tensor of shape [N, x_dim], got {type(x).__name__}"
        )
    if x.dim() != 2:
        hint = " (flatten images to [N, H*W], e.g. x.reshape(len(x), -1))" if x.dim() > 2 else ""
        raise ValueError(f"{what} must have shape [N, x_dim], got {list(x.shape)}{hint}")
    if x_dim is not None and x.shape[1] != x_dim:
        raise ValueError(
            f"{what} has {x.shape[1]} features per datapoint but the model expects x_dim={x_dim} "
            f"(shape {list(x.shape)}); build the model with x_dim={x.shape[1]} or reshape the data"
        )
    if not x.is_floating_point():
        raise TypeError(f"{what} must be floating point, got {x.dtype}; convert with x.float()")
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        n = int(bad.sum())
        kind = "NaN" if bool(torch.isnan(x).any()) else "infinite"
        raise ValueError(
            f"{what} contains {n} non-finite value(s) ({kind}); "
            f"clean or impute them before training"
        )
