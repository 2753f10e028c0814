"""Where the time goes: cProfile of the library's training steps, torch.profiler of evaluation.

    python benchmarks/profile_step.py            # everything (about 4 min on a 2-core CPU)
    python benchmarks/profile_step.py --smoke    # tiny sizes, seconds
    python benchmarks/profile_step.py --only stock what-if --what-if "stl K=1" "dreg K=5"

Sections (``--only`` picks some):

* ``program``: the Pyro program's ``trace`` step (``TrainConfig(fast_path=False)``; 784-400-20,
  batch 128, one torch thread) under cProfile: the cumulative time of Pyro's pieces per step.
* ``stock``: the stock step between validated steps (``TrainingLoss``'s fast path: the VAE's own
  log weights) under cProfile, on the 784-[8]-2 network at batch 8 where the tensor work is
  negligible, so what is left is the per-step Python cost that a full-size step pays as well.
* ``what-if``: measured, interleaved (as bench_train): the reference, the stock step, and the
  stock step with library changes simulated here by subclasses (no library file is changed):
  ``lean log_weights`` (``VAE.log_weights`` for the default VAE written in closed form, without
  distribution objects) and ``no validated steps`` (TrainingLoss without the validated Pyro
  step every ``VALIDATE_EVERY``-th: the most that validating less often can save).
* ``eval``: the aten operators of ``log_likelihood`` (K = 1000 on 50 images) and of the
  reference on the same shapes, under torch.profiler.

cProfile adds a cost per Python call, so Python-heavy parts look larger than they are; the
benchmark's interleaved rows (bench_train, the what-if table) are the unbiased measure.
"""

from __future__ import annotations

import argparse
import cProfile
import math
import pstats
import sys
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_train as bt  # noqa: E402
from _common import (  # noqa: E402
    RefVAE,
    calibrate,
    fmt_ratio,
    interleaved,
    load_images,
    markdown_table,
    quartiles,
    set_clock,
)

from pyro_vae import VAE, log_likelihood  # noqa: E402
from pyro_vae.model.guides import NormalGuide  # noqa: E402
from pyro_vae.model.likelihoods import BernoulliLikelihood  # noqa: E402
from pyro_vae.model.priors import StandardNormalPrior  # noqa: E402
from pyro_vae.model.protocol import LogWeights  # noqa: E402
from pyro_vae.training.loss import VALIDATE_EVERY, TrainingLoss  # noqa: E402

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

STEP = (
    "the whole step (batch, bernoulli, zero_grad, loss, backward, Adam)",
    "bench_train.py",
    "__call__",
)
PROGRAM_PIECES = [  # label, file, function name (cumulative time of the slowest match)
    STEP,
    ("TrainingLoss.forward", "training/loss.py", "forward"),
    ("- LogWeightsELBO.differentiable_loss", "estimators.py", "differentiable_loss"),
    ("-- pyro_vae.log_weights (trace guide, replay model, score)", "log_weights.py", "log_weights"),
    (
        "--- poutine get_trace (guide + model, incl. the networks)",
        "trace_messenger.py",
        "get_trace",
    ),
    ("---- VAE.model", "model/vae.py", "model"),
    ("---- VAE.guide", "model/vae.py", "guide"),
    ("---- pyro.module (model + guide)", "primitives.py", "module"),
    ("---- poutine apply_stack (every message)", "runtime.py", "apply_stack"),
    ("--- _check_per_datapoint", "log_weights.py", "_check_per_datapoint"),
    ("--- _reduce (per-site sums)", "log_weights.py", "_reduce"),
    (
        "Distribution construction (pyro.distributions __call__)",
        "pyro/distributions/distribution.py",
        "__call__",
    ),
    ("Distribution._validate_sample (validation)", "distribution.py", "_validate_sample"),
    ("backward", "autograd/__init__.py", "backward"),
    ("Adam.step", "adam.py", "step"),
]
STOCK_PIECES = [
    STEP,
    ("TrainingLoss.forward", "training/loss.py", "forward"),
    ("- VAE.log_weights", "model/vae.py", "log_weights"),
    (
        "-- guide: NormalGuide.gaussian (encoder MLP + Normal(loc, scale).to_event(1))",
        "guides.py",
        "gaussian",
    ),
    ("--- encoder MLP", "networks.py", "features"),
    ("-- prior(): Normal(0, 1).to_event(1)", "priors.py", "forward"),
    ("-- likelihood(): Bernoulli(logits).to_event(1)", "likelihoods.py", "forward"),
    ("-- decoder MLP", "networks.py", "forward"),
    ("-- prior log_prob: torch Normal.log_prob", "distributions/normal.py", "log_prob"),
    ("-- likelihood log_prob (_bernoulli_log_prob: own backward)", "likelihoods.py", "log_prob"),
    ("-- kl_divergence (meanfield)", "distributions/kl.py", "kl_divergence"),
    ("-- _log_q (closed form)", "model/vae.py", "_log_q"),
    ("- estimator objective", "estimators.py", "objective"),
    ("- pyro.validation_enabled(False)", "pyro/primitives.py", "validation_enabled"),
    (
        "all distribution constructions (pyro.distributions __call__)",
        "pyro/distributions/distribution.py",
        "__call__",
    ),
    ("backward", "autograd/__init__.py", "backward"),
    ("Adam.step", "adam.py", "step"),
]


def _cprofile_table(step, n, pieces) -> str:
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        step()
    prof.disable()
    stats = pstats.Stats(prof).stats
    whole = None
    rows = []
    for label, file, name in pieces:
        cum = max(
            (ct for (f, _, fn), (*_, ct, _) in stats.items() if fn == name and file in f),
            default=0.0,
        )
        if whole is None:
            whole = cum
        rows.append([label, f"{cum / n * 1e6:,.0f}", f"{100 * cum / whole:.1f}%"])
    return markdown_table(["piece (cumulative, per step)", "us under cProfile", "share"], rows)


def profile_training(smoke: bool) -> str:
    """cProfile of the Pyro program's trace step (fast_path=False), 784-400-20, batch 128."""
    torch.manual_seed(0)
    cfg = dict(x_dim=784, z_dim=8 if smoke else 20, hidden_dims=(32,) if smoke else (400,))
    x_train, _ = load_images(smoke, torch.device("cpu"), n_train=4096)
    vae, loss_step = bt.make_variant("pyro-validated", "trace", 1, cfg, VAE(**cfg), "cpu")
    step = bt.Trainer(vae.parameters(), loss_step, x_train, 128)
    for _ in range(10):
        step()
    return _cprofile_table(step, 20 if smoke else 200, PROGRAM_PIECES)


def profile_stock(smoke: bool, label: str) -> str:
    """cProfile of the stock step between validated steps, 784-[8]-2, batch 8."""
    est, k, _ = bt.ESTIMATORS[label]
    torch.manual_seed(0)
    cfg = dict(x_dim=784, z_dim=2, hidden_dims=(8,))
    x_train = torch.rand(4096, 784)
    vae, loss_step = bt.make_variant("stock", est, k, cfg, VAE(**cfg), "cpu")
    trainer = bt.Trainer(vae.parameters(), loss_step, x_train, 8)
    loss = loss_step.loss

    def step():
        if loss.step % VALIDATE_EVERY == 0:
            loss.step += 1  # the steps between validated ones only
        trainer()

    for _ in range(10):
        step()
    return _cprofile_table(step, 100 if smoke else 2000, STOCK_PIECES)


# -- what-if: library changes simulated by subclasses (no library file changes) ----------------
class LeanVAE(VAE):
    """``VAE.log_weights`` for the default VAE (NormalGuide, N(0, I) prior, Bernoulli likelihood)
    written in closed form, without building any distribution object: the same values, draws
    and gradients (checked in :func:`check_lean`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        kinds = (type(self.encoder), type(self.prior), type(self.likelihood))
        if kinds != (NormalGuide, StandardNormalPrior, BernoulliLikelihood):
            raise TypeError(f"LeanVAE covers the default VAE only, got {kinds}")

    def log_weights(
        self, x, num_data=None, *, num_samples=1, pathwise=False, analytic_kl=False
    ) -> LogWeights:
        batch = x.shape[0]
        scale = 1.0 if num_data is None or num_data == batch else num_data / batch
        enc = self.encoder
        loc, s = enc._loc_scale(enc.net.features(x))
        eps = torch.randn((num_samples, *loc.shape), dtype=loc.dtype, device=loc.device)
        z = loc + eps * s
        logits = self.decoder(z)
        log_lik = -F.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none"
        ).sum(-1)
        d = z.shape[-1]
        if analytic_kl:  # KL(N(loc, s) || N(0, I)) in closed form
            kl = 0.5 * (s.pow(2) + loc.pow(2) - 1.0 - 2.0 * s.log()).sum(-1)
            zero = log_lik.new_zeros(()).expand(log_lik.shape)
            return LogWeights(
                log_lik, zero, kl.expand(log_lik.shape), scale, (z,), None, log_lik, ("z",)
            )
        log_p = log_lik - 0.5 * z.pow(2).sum(-1) - d * _HALF_LOG_2PI
        if pathwise:
            loc, s = loc.detach(), s.detach()
            eps = (z - loc) / s
        log_q = -(0.5 * eps.pow(2) + s.log()).sum(-1) - d * _HALF_LOG_2PI
        return LogWeights(log_p, log_q, None, scale, (z,), None, log_lik, ())


class NeverValidated(TrainingLoss):
    """TrainingLoss without the validated Pyro step every VALIDATE_EVERY-th step."""

    def _validated(self, x, num_data):
        with pyro.validation_enabled(False):
            return self._own(x, num_data)


def check_lean(cfg) -> None:
    """LeanVAE's loss and gradients equal VAE's on the same draws, for every estimator."""
    torch.manual_seed(0)
    vae = VAE(**cfg).double()
    lean = bt.new_vae(cfg, vae, "cpu", LeanVAE).double()
    x = torch.bernoulli(torch.rand(16, cfg["x_dim"], dtype=torch.float64))
    for est, k, _ in bt.ESTIMATORS.values():
        elbo = bt.make_elbo(est, k)
        out = []
        for module in (vae, lean):
            module.zero_grad(set_to_none=True)
            torch.manual_seed(1)
            value = TrainingLoss(module, elbo, first_step=1)(x, 1000)
            value.backward()
            out.append([float(value.detach())] + [p.grad.clone() for p in module.parameters()])
        assert math.isclose(out[0][0], out[1][0], rel_tol=1e-12), (est, k)
        for a, b in zip(out[0][1:], out[1][1:], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)


def what_if(smoke: bool, labels, rounds: int, block_s: float) -> str:
    """Interleaved CPU-time ratios against the reference (as bench_train's table)."""
    cfg = dict(x_dim=784, z_dim=8 if smoke else 20, hidden_dims=(32,) if smoke else (400,))
    check_lean(cfg)
    bs = 32 if smoke else 128
    device = torch.device("cpu")
    set_clock("cpu")
    torch.manual_seed(0)
    x_train, _ = load_images(smoke, device, n_train=512)
    template = VAE(**cfg)
    builds = {
        "stock": (VAE, TrainingLoss),
        "lean log_weights": (LeanVAE, TrainingLoss),
        "no validated steps": (VAE, NeverValidated),
        "lean + no validated steps": (LeanVAE, NeverValidated),
    }
    rows = []
    for label in labels:
        est, k, ref_loss = bt.ESTIMATORS[label]
        ref = RefVAE.from_pyro(template)
        cands = {
            "reference": bt.Trainer(ref.parameters(), bt.ref_step_fn(ref, ref_loss), x_train, bs)
        }
        for name, (cls, loss_cls) in builds.items():
            vae = bt.new_vae(cfg, template, device, cls)
            loss = loss_cls(vae, bt.make_elbo(est, k))

            def step(x, n, loss=loss):
                value = loss(x, n)
                value.backward()
                return value.detach()

            cands[name] = bt.Trainer(vae.parameters(), step, x_train, bs)
        for c in cands.values():
            for _ in range(3):
                c()
        reps = {name: calibrate(c, device, block_s) for name, c in cands.items()}
        times = interleaved(cands, rounds, device, reps)
        ref_t = times["reference"]
        for name, ts in times.items():
            if name == "reference":
                continue
            us = (quartiles(ts)[1] - quartiles(ref_t)[1]) * 1e6
            ratios = [r / t for r, t in zip(ref_t, ts, strict=True)]
            rows.append(
                [label, name, f"{quartiles(ts)[1] * 1e3:.2f}", f"{us:+,.0f}", fmt_ratio(ratios)]
            )
        print(f"  what-if {label}: done", file=sys.stderr, flush=True)
    return markdown_table(
        [
            "estimator",
            "library step",
            "ms per step",
            "us over the reference",
            "ratio pyro/ref: median [q1, q3]",
        ],
        rows,
    )


def profile_evaluation(smoke: bool) -> str:
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    cfg = dict(x_dim=784, z_dim=8 if smoke else 20, hidden_dims=(32,) if smoke else (400,))
    vae = VAE(**cfg).eval()
    ref = RefVAE.from_pyro(vae).eval()
    _, test = load_images(smoke, torch.device("cpu"))
    x = torch.bernoulli(test[:50])
    k = 100 if smoke else 1000
    chunk = max(1, min(k, 2**24 // (len(x) * 784)))
    runs = {
        "library": lambda: log_likelihood(vae.model, vae.guide, x, k),
        "reference": lambda: ref.log_likelihood(x, k, len(x), chunk),
    }
    ops = {}
    for name, fn in runs.items():
        fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        ops[name] = {e.key: (e.self_cpu_time_total, e.count) for e in prof.key_averages()}
    total = {name: sum(t for t, _ in o.values()) for name, o in ops.items()}
    rows = []
    for key in sorted(ops["library"], key=lambda k_: -ops["library"][k_][0])[:12]:
        lib_t, lib_n = ops["library"][key]
        ref_t, ref_n = ops["reference"].get(key, (0.0, 0))
        rows.append(
            [
                f"`{key}`",
                f"{lib_t / 1e3:,.1f} ({lib_n})",
                f"{ref_t / 1e3:,.1f} ({ref_n})",
                f"{(lib_t - ref_t) / 1e3:+,.1f}",
            ]
        )
    rows.append(
        [
            "**all operators**",
            f"{total['library'] / 1e3:,.1f}",
            f"{total['reference'] / 1e3:,.1f}",
            f"{(total['library'] - total['reference']) / 1e3:+,.1f}",
        ]
    )
    return markdown_table(
        ["aten operator", "library ms (calls)", "reference ms (calls)", "difference ms"], rows
    )


SECTIONS = ("program", "stock", "what-if", "eval")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument(
        "--stock",
        nargs="+",
        default=["trace", "meanfield", "stl K=1", "dreg K=5"],
        choices=list(bt.ESTIMATORS),
        help="estimators of the stock-step cProfile",
    )
    p.add_argument(
        "--what-if",
        dest="what_if",
        nargs="+",
        default=["trace", "meanfield", "stl K=1", "stl K=5", "dreg K=5"],
        choices=list(bt.ESTIMATORS),
    )
    p.add_argument("--rounds", type=int, default=None, help="what-if rounds (default 15)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if "program" in args.only:
        print("## cProfile of the Pyro program's trace training step (fast_path=False)\n")
        print(profile_training(args.smoke) + "\n")
    if "stock" in args.only:
        for label in args.stock:
            print(
                f"## cProfile of the stock {label} step between validated steps "
                "(784-[8]-2, batch 8)\n"
            )
            print(profile_stock(args.smoke, label) + "\n")
    if "what-if" in args.only:
        rounds = args.rounds or (2 if args.smoke else 15)
        print(
            "## What-if: library changes simulated by subclasses (784-[400]-20, batch 128, "
            f"CPU time, one thread, {rounds} interleaved rounds)\n"
        )
        print(what_if(args.smoke, args.what_if, rounds, 0.02 if args.smoke else 0.4) + "\n")
    if "eval" in args.only:
        print("## torch.profiler of log_likelihood (K = 1000, 50 images) against the reference\n")
        print(profile_evaluation(args.smoke) + "\n")


if __name__ == "__main__":
    main()
