"""The data checks every entry point runs: shape, finiteness, range, integrality.

Each check is one vectorized pass over the data (``aminmax`` propagates NaN and shows an
infinity, so finiteness and the range cost one pass; integrality one more, in cache-sized
blocks), and its result is remembered for the tensor it was computed on, until the tensor is
modified in place (its version counter moves): a data set is checked once, not at every call of
``train``, ``evaluate`` or ``log_likelihood`` on it. On a 2-core CPU the 60,000 x 784 MNIST
training set is checked in about 60 ms (one thread), against 1.1 s for the elementwise masks
used before.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

__all__ = ["check_data", "check_finite", "value_range", "is_integral", "forget"]

#: elements per block of the integrality pass: ``frac`` and ``any`` on one block stay in cache
_BLOCK = 2**16

# (memory, layout, what) -> (weak reference, version, result). A hit needs the tensor checked
# alive (so its memory cannot have been reused) and neither it nor the tensor asked about
# modified since: views (e.g. the reshape that as_tensor returns) share a version counter, so a
# write through any of them shows. Writes that bypass torch's version counter (through
# ``x.data``, or a numpy array sharing the memory via ``torch.from_numpy``) are not seen:
# :func:`forget` clears the memo after such a write.
_memo: dict[tuple, tuple[weakref.ref, int, object]] = {}


def _remembered(x: torch.Tensor, what: str, compute: Callable[[], object]):
    if x.is_inference():  # made under torch.inference_mode(): no version counter to trust
        return compute()
    key = (x.data_ptr(), tuple(x.shape), x.stride(), x.dtype, x.device, what)
    hit = _memo.get(key)
    if hit is not None:
        checked = hit[0]()
        if checked is not None and checked._version == hit[1] == x._version:
            return hit[2]
    result = compute()

    def forget(ref, key=key):
        if _memo.get(key, (None,))[0] is ref:
            del _memo[key]

    # The memo lives as long as the memory: a view (as_tensor's alias of the caller's tensor)
    # dies with the call, its base does not.
    owner = x if x._base is None else x._base
    try:
        ref = weakref.ref(owner, forget)
    except TypeError:  # a tensor subclass without weak references: no memo
        return result
    _memo[key] = (ref, x._version, result)
    return result


def forget() -> None:
    """Clear the memo of checked tensors (after writing to one behind torch's back)."""
    _memo.clear()


def value_range(x: torch.Tensor) -> tuple[float, float]:
    """``(min, max)`` of ``x`` in one pass; NaN for both if ``x`` holds a NaN."""

    def compute():
        lo, hi = torch.aminmax(x.detach().reshape(-1))
        return float(lo), float(hi)

    return _remembered(x, "range", compute)


def is_integral(x: torch.Tensor) -> bool:
    """Whether every value of the finite floating tensor ``x`` is a whole number."""

    def compute():
        flat = x.detach().reshape(-1)
        return not any(
            bool(torch.frac(flat[s : s + _BLOCK]).any()) for s in range(0, flat.numel(), _BLOCK)
        )

    return _remembered(x, "integral", compute)


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
    check_finite(x, what)


def check_finite(x: torch.Tensor, what: str = "data") -> None:
    """Raise a clear error if the floating tensor ``x`` holds a NaN or an infinity."""
    if x.numel() == 0:
        return
    lo, hi = value_range(x)
    if lo != lo or hi != hi or lo == float("-inf") or hi == float("inf"):
        bad = ~torch.isfinite(x)  # only on failure: the count and the kind for the message
        n = int(bad.sum())
        kind = "NaN" if bool(torch.isnan(x).any()) else "infinite"
        raise ValueError(
            f"{what} contains {n} non-finite value(s) ({kind}); "
            f"clean or impute them before training"
        )
