"""Annealed importance sampling: pyro_vae's cost per HMC leapfrog step against hand-written PyTorch.

``pyro_vae.ais_log_likelihood`` (the log joint and its gradient from ``VAE.log_joint``, the
model's own plain-torch log density, at every leapfrog step, after one check against the Pyro
trace) against a plain-torch AIS for the same 784-400-20 VAE (``_common.RefVAE``, weights
copied): the same sigmoid schedule, chains x datapoints, leapfrog steps and fixed step size, the
same Metropolis-corrected HMC that caches the gradients of log q and log p(x, z) separately (so
both make ``leapfrog_steps`` gradient evaluations per transition); the reference's log q and its
gradient are closed forms and its encoder runs once. Both run without the pilot
(``adapt_chains=0``) so that the ratio is the cost per step; a third row, ``stock + pilot``, is
the library's default run with its step-size pilot (``adapt_chains=4``), whose extra cost is
about ``adapt_chains / num_chains`` of the estimating run (more where the fixed per-step cost
dominates); ``program`` is the library on the Pyro trace at every leapfrog step (a VAE
subclass with ``log_joint = None``, as any model object without its own log joint runs).
Interleaved rounds, one thread, CPU time.

    python benchmarks/bench_ais.py            # full (about 1-2 min on a 2-core CPU)
    python benchmarks/bench_ais.py --smoke    # seconds, for CI
    python benchmarks/bench_ais.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    LOG_2PI,
    RefVAE,
    add_timing_args,
    environment,
    fmt_ratio,
    interleaved,
    load_images,
    markdown_table,
    quartiles,
    setup_clock,
)

import pyro_vae  # noqa: E402
from pyro_vae import VAE  # noqa: E402
from pyro_vae.infer.ais import ais_log_likelihood  # noqa: E402


# -- the hand-written reference ------------------------------------------------------------------
def sigmoid_schedule(num_steps: int, delta: float = 4.0) -> list[float]:
    s = torch.sigmoid(torch.linspace(-delta, delta, num_steps + 1, dtype=torch.float64))
    b = ((s - s[0]) / (s[-1] - s[0])).tolist()
    b[0], b[-1] = 0.0, 1.0
    return b


@torch.no_grad()
def reference_ais(
    ref: RefVAE, x, num_steps: int, num_chains: int, leapfrog_steps: int, step_size: float
):
    """Plain-torch AIS from q(z | x) to p(z | x): ``log p(x) [B]``."""
    loc, scale = ref.encode(x)
    d = loc.shape[-1]

    def evaluate(z):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            logits = ref.decode(z)
            log_px = -F.binary_cross_entropy_with_logits(
                logits, x.expand_as(logits), reduction="none"
            ).sum(-1)
            log_p = log_px - 0.5 * z.pow(2).sum(-1) - 0.5 * d * LOG_2PI
            (grad_p,) = torch.autograd.grad(log_p.sum(), z)
        eps = (z.detach() - loc) / scale
        log_q = -0.5 * eps.pow(2).sum(-1) - scale.log().sum(-1) - 0.5 * d * LOG_2PI
        return z.detach(), log_q, log_p.detach(), -eps / scale, grad_p

    betas = sigmoid_schedule(num_steps)
    state = evaluate(loc + scale * torch.randn(num_chains, *loc.shape, dtype=x.dtype))
    log_w = torch.zeros(num_chains, len(x), dtype=x.dtype, device=x.device)
    for t in range(1, num_steps + 1):
        b = betas[t]
        log_w += (b - betas[t - 1]) * (state[2] - state[1])
        if t == num_steps:
            break
        z0, q0, p0_, gq, gp = state
        mom0 = torch.randn_like(z0)
        mom = mom0 + 0.5 * step_size * ((1 - b) * gq + b * gp)
        z, new = z0, state
        for step in range(leapfrog_steps):
            z = z + step_size * mom
            new = evaluate(z)
            g = (1 - b) * new[3] + b * new[4]
            mom = mom + (step_size if step < leapfrog_steps - 1 else 0.5 * step_size) * g
        h_new = (1 - b) * new[1] + b * new[2] - 0.5 * mom.pow(2).sum(-1)
        h_old = (1 - b) * q0 + b * p0_ - 0.5 * mom0.pow(2).sum(-1)
        log_acc = torch.nan_to_num(h_new - h_old, nan=-math.inf)
        accept = torch.rand_like(log_acc).log() < log_acc
        m1, m3 = accept, accept.unsqueeze(-1)
        state = (
            torch.where(m3, new[0], z0),
            torch.where(m1, new[1], q0),
            torch.where(m1, new[2], p0_),
            torch.where(m3, new[3], gq),
            torch.where(m3, new[4], gp),
        )
    return log_w.logsumexp(0) - math.log(num_chains)


# -- the benchmark -------------------------------------------------------------------------------
class ProgramVAE(VAE):
    """The VAE without its own log joint: AIS takes the log joint from the Pyro trace at every
    leapfrog step, as for any model object that has none."""

    log_joint = None


def build(cfg, device, seed=0):
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)
    vae = VAE(**cfg).to(device).eval()
    program = ProgramVAE(**cfg).to(device).eval()
    program.load_state_dict(vae.state_dict())
    return vae, program, RefVAE.from_pyro(vae).eval()


def candidates(vae, program, ref, x, args):
    common = dict(leapfrog_steps=args.leapfrog, step_size=args.step_size, batch_size=len(x))

    def library(module, adapt_chains=0):
        return ais_log_likelihood(
            module.model,
            module.guide,
            x,
            args.steps,
            args.chains,
            adapt_chains=adapt_chains,
            **common,
        )

    out = {
        "reference": lambda: reference_ais(
            ref, x, args.steps, args.chains, args.leapfrog, args.step_size
        ),
        "stock": lambda: library(vae),
        "program": lambda: library(program),
    }
    if args.pilot:
        out["stock + pilot"] = lambda: library(vae, 4)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 1 round (CI, seconds)")
    add_timing_args(p)
    p.add_argument("--images", type=int, default=None, help="datapoints per run (default 32)")
    p.add_argument("--chains", type=int, default=None, help="chains per datapoint (default 16)")
    p.add_argument("--steps", type=int, default=None, help="annealing steps (default 20)")
    p.add_argument("--leapfrog", type=int, default=10)
    p.add_argument("--step-size", type=float, default=0.05)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--no-pilot", dest="pilot", action="store_false")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    device = pyro_vae.resolve_device(args.device)
    setup_clock(args, device)
    smoke = args.smoke
    args.images = args.images or (4 if smoke else 32)
    args.chains = args.chains or (4 if smoke else 16)
    args.steps = args.steps or (3 if smoke else 20)
    args.rounds = args.rounds or (1 if smoke else 5)
    if smoke:
        args.leapfrog = min(args.leapfrog, 2)
    cfg = dict(x_dim=784, z_dim=8 if smoke else 20, hidden_dims=(32,) if smoke else (400,))
    vae, program, ref = build(cfg, device)
    _, test = load_images(smoke, device)
    x = torch.bernoulli(test[: args.images], generator=torch.Generator().manual_seed(123))
    leapfrogs = (args.steps - 1) * args.leapfrog

    t0 = time.perf_counter()
    print(f"# AIS benchmark\n\n{environment(device)}\n")
    print(
        f"Model {cfg['x_dim']}-{list(cfg['hidden_dims'])}-{cfg['z_dim']} ReLU, Bernoulli, N(0, I) "
        f"prior, untrained weights (timing does not depend on them); "
        f"{'random stand-in' if smoke else 'MNIST test'} images binarized once; "
        f"{args.images} images x {args.chains} chains, {args.steps} sigmoid annealing steps "
        f"({args.steps - 1} HMC transitions) x {args.leapfrog} leapfrog steps = {leapfrogs} "
        f"gradient evaluations of a [{args.chains}, {args.images}, {cfg['x_dim']}] log joint per "
        f"run, step size {args.step_size}; {args.rounds} interleaved rounds.\n"
    )
    cands = candidates(vae, program, ref, x, args)
    if not smoke:
        for fn in cands.values():  # warm-up
            fn()
    times = interleaved(cands, args.rounds, device)
    # The same seed gives the same draws in the same order (q's draws, then per transition
    # the momenta and the accept/reject uniforms): the estimates agree up to float rounding
    # (which may flip a rare accept decision in float32).
    lls = {}
    for name in ("reference", "stock", "program"):
        torch.manual_seed(1)
        lls[name] = float(cands[name]().mean())
    ll_ref, ll_lib = lls["reference"], lls["stock"]
    rows = []
    for name, ts in times.items():
        med = quartiles(ts)[1]
        ratio = (
            "1"
            if name == "reference"
            else fmt_ratio([b / a for a, b in zip(times["reference"], ts, strict=True)])
        )
        ll = f"{lls[name]:.4f}" if name in lls else ""
        rows.append([name, f"{med:.3f}", f"{1e3 * med / leapfrogs:.2f}", ratio, ll])
    table = markdown_table(
        [
            "implementation",
            "seconds per run (median)",
            "ms per leapfrog step",
            "time ratio pyro/ref: median [q1, q3]",
            "mean log p(x)",
        ],
        rows,
    )
    print("## Cost per HMC leapfrog step\n\n" + table + "\n")
    print(
        "`stock`: the library as it is, the log joint from `VAE.log_joint` (plain torch, "
        "checked once against the Pyro trace) at every leapfrog step; `program`: the log "
        "joint from the model's Pyro trace at every leapfrog step (a model object without "
        "its own `log_joint`); `stock + pilot`: the default step-size "
        "pilot added (4 chains, adapt_warmup 20 + min(steps, 100) transitions whatever the "
        "number of steps: at these 20 steps it nearly doubles the run, at 1000 steps it adds "
        "a few per cent). The mean log p(x) come from one more run of each on the same "
        f"seed (the same draws in the same order): reference - stock = {ll_ref - ll_lib:.2e} "
        "nats (at so few steps both are far below log p(x)).\n"
    )
    print(f"total benchmark time: {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"seconds": times, "mean_log_likelihood": lls}, indent=1))
    ratios = [b / a for a, b in zip(times["reference"], times["stock"])]
    assert ratios and all(math.isfinite(v) and v > 0 for v in ratios)
    assert all(math.isfinite(v) for v in lls.values())
    return times


if __name__ == "__main__":
    main()
