"""Tests for pyro_vae.data.binarization: dynamic and static binarization."""

from __future__ import annotations

import pytest
import torch

from pyro_vae.data import binarize, binarize_static
from pyro_vae.data.binarization import draw_bernoulli

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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_draw_bernoulli_is_bernoulli(dtype) -> None:
    """train()'s draw: 1{u < p}, P(1) = p per element (a binomial count within 5 sigma, also in
    half precision, where u is drawn in float32), the edges exact, p's shape, dtype and layout
    kept for a non-contiguous p, the global generator's stream (the same draw after the same
    seed, and for float32/64 the very numbers of binarize and of (rand_like(p) < p))."""
    p = torch.tensor([0, 1 / 512, 0.1, 0.5, 0.9, 1], dtype=dtype).repeat(20000, 1).t()
    torch.manual_seed(3)
    b = draw_bernoulli(p)
    assert b.shape == p.shape and b.dtype == dtype and b.stride() == p.stride()
    assert set(b.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(b[0], torch.zeros(20000, dtype=dtype))
    assert torch.equal(b[-1], torch.ones(20000, dtype=dtype))
    counts, q = b.double().sum(1), p[:, 0].double()
    sigma = (20000 * q * (1 - q)).sqrt()
    assert ((counts - 20000 * q).abs() <= 5 * sigma + 1e-9).all(), (counts, 20000 * q)
    torch.manual_seed(3)
    assert torch.equal(draw_bernoulli(p), b)
    # the same draw from a given generator: unbiased in half precision too
    g = binarize(p, generator=torch.Generator().manual_seed(5))
    assert g.shape == p.shape and g.dtype == dtype
    assert ((g.double().sum(1) - 20000 * q).abs() <= 5 * sigma + 1e-9).all()
    if dtype in (torch.float32, torch.float64):
        torch.manual_seed(3)
        assert torch.equal(binarize(p), b)
        torch.manual_seed(3)
        assert torch.equal((torch.rand_like(p) < p).to(dtype), b)
        # ... and, for a contiguous p (train()'s batches), torch.bernoulli's on a CPU: seeded
        # training runs, and resumes of checkpoints written before train() drew this way, see
        # the numbers they always saw (edges of exact 0s and 1s included)
        dense = p.contiguous()
        torch.manual_seed(3)
        drawn = draw_bernoulli(dense)
        torch.manual_seed(3)
        assert torch.equal(torch.bernoulli(dense), drawn)


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
