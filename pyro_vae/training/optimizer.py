"""The optimizer of every training run: Adam, with torch's fused kernel by default.

torch's ``Adam`` updates the parameters one tensor at a time by default on a CPU (``for-loop``);
``foreach`` batches the tensors into multi-tensor operations; ``fused`` does the whole update in
one kernel per dtype and device. They are the same algorithm and differ in floating-point
rounding only (``tests/test_optimizer.py``). On this project's CPU the fused update takes a
fifth of the hand-written training step off (``benchmarks/RESULTS.md``). Where torch has no
fused kernel for the parameters' device or dtype, ``fused`` falls back to torch's default.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["ADAM_IMPLEMENTATIONS", "make_optimizer", "load_optimizer_state"]

#: TrainConfig.adam_impl -> Adam's keyword arguments
ADAM_IMPLEMENTATIONS = {
    "fused": {"fused": True},
    "foreach": {"foreach": True},
    "for-loop": {"foreach": False},
}


def _flags(impl: str) -> dict:
    try:
        return ADAM_IMPLEMENTATIONS[impl]
    except KeyError:
        raise ValueError(
            f"unknown Adam implementation {impl!r}; choose one of {sorted(ADAM_IMPLEMENTATIONS)}"
        ) from None


def make_optimizer(params: Iterable[torch.Tensor], lr: float, impl: str = "fused"):
    """``torch.optim.Adam(params, lr)`` in implementation ``impl`` (``fused``, ``foreach`` or
    ``for-loop``); ``fused`` is torch's default Adam where torch has no fused kernel for the
    parameters' device and dtype."""
    params = list(params)
    flags = _flags(impl)
    try:
        return torch.optim.Adam(params, lr=lr, **flags)
    except RuntimeError:
        if impl != "fused":
            raise
        return torch.optim.Adam(params, lr=lr)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a checkpoint's optimizer ``state`` into ``optimizer``, keeping ``optimizer``'s own
    implementation flags: ``load_state_dict`` would otherwise take ``fused``/``foreach`` from the
    saved groups, so a run resumed from an older (unfused) checkpoint would stay unfused."""
    own = [{k: g.get(k) for k in ("fused", "foreach")} for g in optimizer.param_groups]
    groups = state.get("param_groups", [])
    if len(groups) == len(own):
        state = {**state, "param_groups": [{**g, **o} for g, o in zip(groups, own)]}
    optimizer.load_state_dict(state)
