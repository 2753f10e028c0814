"""Tests for pyro_vae.data.binarization: dynamic and static binarization."""

from __future__ import annotations

import pytest
import torch

from pyro_vae.data import binarize, binarize_static

# --------------------------------------------------------------------------------------------------
# Binarization


def test_binarize_is_bernoulli() -> None:
    # Not seed 0: the generator below would then draw exactly x, and u < x would never hold.
    x = torch.rand(200, 784, generator=torch.Generator().manual_seed(123))
    b = binarize(x, generator=torch.Generator().manual_seed(0))
    assert b.shape == x.shape and b.dtype == x.dtype
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    assert abs(b.mean().item() - x.mean().item()) < 0.01
    edges = torch.tensor([0.0, 1.0, 0.0, 1.0])
    assert torch.equal(binarize(edges), edges)
    # Same generator seed, same draw; no generator, a fresh draw each call.
    again = binarize(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(b, again)
    assert not torch.equal(binarize(x), binarize(x))


def test_binarize_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binarize(torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError):
        binarize(torch.tensor([0.5, float("nan")]))
    with pytest.raises(TypeError, match="floating-point"):
        binarize(torch.tensor([0, 1]))


def test_binarize_static_is_deterministic() -> None:
    x = torch.rand(100, 784, generator=torch.Generator().manual_seed(1))
    rng_before = torch.get_rng_state()
    a = binarize_static(x)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global stream is untouched
    assert torch.equal(a, binarize_static(x.clone()))
    assert torch.equal(a, binarize_static(x, seed=0))
    assert not torch.equal(a, binarize_static(x, seed=1))
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert abs(a.mean().item() - x.mean().item()) < 0.02
    assert binarize_static(x.double()).dtype == torch.float64
