"""Pieces of a training step, each against what a hand-written loop uses, interleaved.

    python benchmarks/bench_parts.py           # 784-pixel batches of 128, K = 1 and 5 (about 40 s)
    python benchmarks/bench_parts.py --smoke   # tiny sizes, seconds (CI)

* ``draw``: dynamic binarization of a ``[128, 784]`` batch: ``torch.bernoulli(p)`` (what
  hand-written loops call; on a CPU it draws element by element) against train()'s
  ``pyro_vae.data.binarization.draw_bernoulli`` (``1{u < p}`` written into the uniform draw).
* ``batch``: the rows of a batch of 128 from a 60,000 x 784 data set at a shuffled order's
  indices, binarized: ``torch.bernoulli(x[index])`` against train()'s
  ``pyro_vae.training.loop.minibatch`` (``index_select``, then the draw above); the row first
  checks that both give the same batch after the same seed.
* ``likelihood``: the Bernoulli log-likelihood summed over pixels, forward and backward, on
  ``[K, 128, 784]`` logits: torch's cross-entropy
  (``-binary_cross_entropy_with_logits(...).sum(-1)``, as the references and Pyro's Bernoulli
  compute it), ``-softplus((1 - 2x) * logit).sum(-1)``
  under autograd, and the library's (``BernoulliLikelihood.log_prob``: the softplus value and
  its own backward ``(x - sigmoid(logit)) * grad``), as it runs (compiled from
  ``COMPILE_MIN_LOGITS`` logits on: K = 5 here, not K = 1), with its eager path and with its
  compiled kernel at any size (``pyro_vae/model/_bernoulli_kernel.py``). Each row checks that
  its gradient equals the cross-entropy's.
* ``value``: the same log-likelihood without a gradient on one tile of the K-sample evaluation
  (``[133, 10, 784]``, the tile ``pv.log_likelihood`` chooses for the test set at K = 5000 on
  a CPU; ``[128, 128, 64]``, 2^20 logits, with ``--smoke``): the cross-entropy against the
  library's eager path (``-softplus((1 - 2x) * logit).sum(-1)``) and its compiled value kernel
  (which an evaluation switches to once a tile shape has run ``VALUE_COMPILE_AFTER`` logits).
  Each row checks that its value equals the cross-entropy's.

Times are per call (median of interleaved rounds; CPU time on one thread by default), and the
ratio column is the reference's time over the row's, median [q1, q3] of the rounds (> 1: faster
than the reference).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_timing_args,
    calibrate,
    environment,
    fmt_ratio,
    interleaved,
    library_batch,
    markdown_table,
    quartiles,
    reference_batch,
    setup_clock,
)

import pyro_vae  # noqa: E402
from pyro_vae.data.binarization import draw_bernoulli  # noqa: E402
from pyro_vae.infer.evaluate import _sizes as tile_sizes  # noqa: E402
from pyro_vae.model import _bernoulli_kernel as bernoulli_kernel  # noqa: E402
from pyro_vae.model.likelihoods import BernoulliLikelihood  # noqa: E402


def _rows(times: dict[str, list[float]], label: str) -> list[list[str]]:
    ref = times["reference"] if "reference" in times else next(iter(times.values()))
    rows = []
    for name, ts in times.items():
        ratio = "1" if ts is ref else fmt_ratio([r / t for r, t in zip(ref, ts, strict=True)])
        rows.append([label, name, f"{quartiles(ts)[1] * 1e3:.3f}", ratio])
    return rows


def bench_draw(args, device) -> list[list[str]]:
    p = torch.rand(args.batch, args.pixels, device=device)
    cands = {"reference": lambda: torch.bernoulli(p), "library": lambda: draw_bernoulli(p)}
    reps = {n: calibrate(f, device, args.block_s) for n, f in cands.items()}
    times = interleaved(cands, args.rounds, device, reps)
    return _rows(times, f"draw [{args.batch}, {args.pixels}]")


def bench_batch(args, device) -> list[list[str]]:
    g = torch.Generator().manual_seed(0)
    data = torch.rand(args.rows, args.pixels, generator=g).to(device)
    order = torch.randperm(args.rows, generator=g).to(device)
    indices = itertools.cycle(order[: args.rows // args.batch * args.batch].view(-1, args.batch))
    makers = {"reference": reference_batch, "library": library_batch}
    same = []
    for make in makers.values():
        torch.manual_seed(0)
        same.append(make(data, order[: args.batch]))
    assert torch.equal(*same), "train()'s batch differs from torch.bernoulli(x[index])"
    cands = {name: lambda make=make: make(data, next(indices)) for name, make in makers.items()}
    reps = {n: calibrate(f, device, args.block_s) for n, f in cands.items()}
    times = interleaved(cands, args.rounds, device, reps)
    return _rows(times, f"batch [{args.batch}, {args.pixels}] of {args.rows:,} rows")


def eager(fn):
    """``fn`` with the Bernoulli likelihood's compiled kernel switched off."""

    def run(t):
        with bernoulli_kernel.settings(enabled=False):
            return fn(t)

    return run


def compiled(fn):
    """``fn`` with the compiled kernels whatever the size and however long a shape has run (also
    in smoke mode)."""

    def run(t):
        with bernoulli_kernel.settings(enabled=True, min_logits=0, value_compile_after=0):
            return fn(t)

    return run


def bench_likelihood(args, device, k: int) -> list[list[str]]:
    torch.manual_seed(0)
    shape = (k, args.batch, args.pixels) if k > 1 else (args.batch, args.pixels)
    # logits of a trained decoder's size (|logit| up to about 15), data with MNIST's ~13% ones
    logits = (4 * torch.randn(shape, device=device)).requires_grad_()
    x = (torch.rand(args.batch, args.pixels, device=device) < 0.13).float()
    weights = torch.randn(shape[:-1], device=device)
    like = BernoulliLikelihood(args.pixels)

    def cross_entropy(t):
        return -F.binary_cross_entropy_with_logits(t, x.expand_as(t), reduction="none").sum(-1)

    fns = {
        "reference": cross_entropy,
        "softplus under autograd": lambda t: -F.softplus(t * (1 - 2 * x), threshold=50.0).sum(-1),
        "library": lambda t: like.log_prob(t, x),
        "library, eager path": eager(lambda t: like.log_prob(t, x)),
        "library, compiled kernel": compiled(lambda t: like.log_prob(t, x)),
    }
    (expected,) = torch.autograd.grad((cross_entropy(logits) * weights).sum(), logits)
    for name, fn in fns.items():
        (grad,) = torch.autograd.grad((fn(logits) * weights).sum(), logits)
        torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-5, msg=name)

    def step(fn):
        def run():
            logits.grad = None
            fn(logits).backward(weights)

        return run

    cands = {name: step(fn) for name, fn in fns.items()}
    reps = {n: calibrate(f, device, args.block_s) for n, f in cands.items()}
    times = interleaved(cands, args.rounds, device, reps)
    return _rows(times, f"likelihood forward + backward, K = {k}")


def bench_value(args, device) -> list[list[str]]:
    torch.manual_seed(0)
    # the tile that pv.log_likelihood chooses for MNIST's test set at K = 5000 on a CPU
    batch, k = tile_sizes(torch.empty(10_000, args.pixels), 5000, None, None, None)
    logits = 4 * torch.randn(k, batch, args.pixels, device=device)
    x = (torch.rand(batch, args.pixels, device=device) < 0.13).float()
    like = BernoulliLikelihood(args.pixels)

    def cross_entropy():
        return -F.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none"
        ).sum(-1)

    def library(path):  # eager or compiled, over this tile
        fn = path(lambda t: like.log_prob(t, x))
        return lambda: fn(logits)

    cands = {
        "reference": cross_entropy,
        "library, eager path": library(eager),
        "library, compiled value kernel": library(compiled),
    }
    with torch.no_grad():
        expected = cross_entropy()
        for name, fn in cands.items():
            torch.testing.assert_close(fn(), expected, rtol=1e-5, atol=1e-3, msg=name)
        reps = {n: calibrate(f, device, args.block_s) for n, f in cands.items()}
        times = interleaved(cands, args.rounds, device, reps)
    return _rows(times, f"log-likelihood value, evaluation tile [{k}, {batch}, {args.pixels}]")


def main(argv=None) -> list[list[str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 2 rounds (CI)")
    p.add_argument("--rounds", type=int, default=None)
    add_timing_args(p)
    args = p.parse_args(argv)
    device = pyro_vae.resolve_device(args.device)
    setup_clock(args, device)
    args.batch, args.pixels = (16, 64) if args.smoke else (128, 784)
    args.rows = 512 if args.smoke else 60_000
    args.rounds = args.rounds or (2 if args.smoke else 15)
    args.block_s = 0.01 if args.smoke else 0.2
    print(f"# Parts of a training step\n\n{environment(device)}\n")
    rows = bench_draw(args, device) + bench_batch(args, device)
    for k in (1, 5):
        rows += bench_likelihood(args, device, k)
    rows += bench_value(args, device)
    header = ["piece", "implementation", "ms per call (median)", "reference / this"]
    print(markdown_table(header, rows))
    return rows


if __name__ == "__main__":
    main()
