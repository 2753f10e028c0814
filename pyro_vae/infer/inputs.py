"""The checks an estimator makes of the data it is given: a non-empty ``[N, ...]`` tensor, and
the model object's own ``check_data`` where it has one."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..data.checks import check_data as check_data_shape

__all__ = ["check_model_data", "check_owner_data", "require_data"]


def require_data(data, name: str = "data") -> None:
    """Raise a ``ValueError`` unless ``data`` is a non-empty tensor of shape ``[N, ...]``."""
    if not isinstance(data, torch.Tensor) or data.dim() < 1 or len(data) == 0:
        raise ValueError(f"{name} must be a non-empty tensor of shape [N, ...]")


def check_owner_data(model: Callable, data: torch.Tensor, check_data: bool = True) -> None:
    """``data`` checked as :func:`require_data` does, then (with ``check_data``) by the
    ``check_data`` of the object that ``model`` is a bound method of, where it has one (e.g.
    :meth:`pyro_vae.VAE.check_data`: shape, NaNs, the likelihood's support), so that grayscale
    pixels under a Bernoulli get the library's message, not Pyro's."""
    require_data(data)
    check = getattr(getattr(model, "__self__", None), "check_data", None)
    if check_data and callable(check):
        check(data, "data")


def check_model_data(module, data: torch.Tensor, what: str = "data") -> None:
    """The model object's own ``check_data`` where it has one, else shape and finiteness."""
    own = getattr(module, "check_data", None)
    if callable(own):
        own(data, what)
    else:
        check_data_shape(data, None, what)
