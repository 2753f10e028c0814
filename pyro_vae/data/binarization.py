"""Binarization of pixel intensities in ``[0, 1]`` into ``{0, 1}`` for a Bernoulli likelihood:
dynamic (a fresh draw per call, for training) and static (a fixed draw, for a test set)."""

from __future__ import annotations

import torch

__all__ = ["binarize", "binarize_static", "draw_bernoulli"]


def draw_bernoulli(p: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One Bernoulli(p) draw per element of ``p`` (any shape and layout, floating, values in
    ``[0, 1]``, not checked: for data already checked once, as ``train()``'s): ``1{u < p}`` with
    ``u ~ U[0, 1)``, so P(1) = p, from the global generator or ``generator`` (then drawn on its
    device and moved to ``p``'s). Returns a tensor of ``p``'s shape, dtype and device (and, from
    the global generator, layout) with values in ``{0., 1.}``.

    ``torch.bernoulli(p)`` draws the same distribution, but on a CPU one element at a time: a
    128 x 784 batch of uniform p takes 1.0 ms there against 0.24 ms here (MNIST's, 81% exact
    zeros, which it skips: 0.36 ms; ``python benchmarks/bench_parts.py``). The comparison is
    written into the uniform draw's own buffer, so the batch costs one allocation. On a CPU,
    for a contiguous p in float32 or float64 (train()'s batches), these are the very numbers
    ``torch.bernoulli`` draws after the same seed (tested). For half precision, u is drawn in
    float32: a bfloat16 u would lie on a grid of 1/256 and bias P(1)."""
    dtype = p.dtype if p.element_size() >= 4 else torch.float32
    if generator is None:
        u = torch.rand_like(p, dtype=dtype)
    else:
        u = torch.rand(p.shape, generator=generator, device=generator.device, dtype=dtype)
        u = u.to(p.device)
    return torch.lt(u, p, out=u) if dtype == p.dtype else (u < p).to(p.dtype)


def _check_unit_interval(x: torch.Tensor, fn: str) -> None:
    """Raise unless ``x`` is a floating tensor of probabilities (any shape), naming ``fn``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn} expects a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{fn} expects a floating-point tensor of probabilities, got {x.dtype}")
    # NaN fails both comparisons, so it is caught here too.
    if x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
        raise ValueError(
            f"{fn} expects values in [0, 1], got min {x.min().item():.4g}, "
            f"max {x.max().item():.4g} (scale bytes by 1/255 first)"
        )


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dynamic binarization: one Bernoulli(x) draw per pixel, fresh on every call.

    Args:
        x: float tensor of any shape (e.g. a batch ``[B, 784]``) with values in ``[0, 1]``.
        generator: optional random generator; the draw happens on its device and is moved to
            ``x``'s device.

    Returns:
        Tensor of ``x``'s shape, dtype and device with values in ``{0., 1.}``; ``E[result] = x``.
    """
    _check_unit_interval(x, "binarize")
    return draw_bernoulli(x, generator)


def binarize_static(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Fixed binarization (for a test set): the same output for the same ``x`` and ``seed``.

    The draw is made on the CPU from a generator seeded with ``seed`` and then moved to ``x``'s
    device, so results agree across calls, processes and devices.

    Args:
        x: float tensor of any shape (e.g. ``[10000, 784]``) with values in ``[0, 1]``.
        seed: seed of the draw.

    Returns:
        Tensor of ``x``'s shape, dtype and device with values in ``{0., 1.}``.
    """
    _check_unit_interval(x, "binarize_static")
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    p = x.detach().to(device="cpu", dtype=torch.float32)
    return draw_bernoulli(p, generator).to(device=x.device, dtype=x.dtype)
