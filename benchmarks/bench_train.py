"""Training throughput of pyro_vae against a hand-written PyTorch reference, in one process.

For each estimator (trace, meanfield, iwae K=5 and K=50, stl K=1 and K=5, dreg K=1 and K=5) it
times whole training steps (pick the batch from the device-resident data and binarize it:
``torch.bernoulli(x[index])`` in the references, train()'s ``minibatch`` in the library unless
``--draw shared``; zero_grad, loss, backward, Adam step), the library's step and the
reference's (``_common.RefVAE``, each estimator written by hand in plain PyTorch), interleaved
over rounds, and reports the paired per-round ratio  images/s (Pyro) / images/s (reference)  as
median [q1, q3]. A third candidate runs only the step's matrix products (same shapes, same
threads): the ceiling of any implementation that keeps them.

The library's step is ``pyro_vae.training.loss.TrainingLoss`` followed by ``backward()``, what
``train()`` runs. Variants of it show what the fast path (the VAE's own plain-torch log weights
between validated Pyro steps) saves and where Pyro's time goes; see RESULTS.md. Then seconds per
MNIST epoch: ``pyro_vae.train`` against the reference's epoch loop, interleaved.

    python benchmarks/bench_train.py            # full (about 8 min on a 2-core CPU)
    python benchmarks/bench_train.py --smoke    # seconds, for CI
    python benchmarks/bench_train.py --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RefVAE,
    add_timing_args,
    calibrate,
    environment,
    fmt_num,
    fmt_ratio,
    interleaved,
    library_batch,
    load_images,
    markdown_table,
    now,
    quartiles,
    reference_batch,
    setup_clock,
    sync,
)

import pyro_vae  # noqa: E402
from pyro_vae import VAE, TrainConfig, make_elbo  # noqa: E402
from pyro_vae.training.loss import TrainingLoss  # noqa: E402
from pyro_vae.training.optimizer import make_optimizer  # noqa: E402

ESTIMATORS = {  # label -> (make_elbo name, K, reference loss)
    "trace": ("trace", 1, lambda ref, x, n: ref.loss_trace(x, n)),
    "meanfield": ("meanfield", 1, lambda ref, x, n: ref.loss_meanfield(x, n)),
    "iwae K=5": ("iwae", 5, lambda ref, x, n: ref.loss_iwae(x, n, 5)),
    "iwae K=50": ("iwae", 50, lambda ref, x, n: ref.loss_iwae(x, n, 50)),
    "stl K=1": ("stl", 1, lambda ref, x, n: ref.loss_stl(x, n, 1)),
    "stl K=5": ("stl", 5, lambda ref, x, n: ref.loss_stl(x, n, 5)),
    # With K = 1, w~ = 1: DReG's gradient is STL's (a check of the overhead of the hook).
    "dreg K=1": ("dreg", 1, lambda ref, x, n: ref.loss_dreg(x, n, 1)),
    "dreg K=5": ("dreg", 5, lambda ref, x, n: ref.loss_dreg(x, n, 5)),
}


# -- the library's step, and variants of it -------------------------------------------------------
class ProgramVAE(VAE):
    """The VAE without its own log weights: TrainingLoss then runs the Pyro program on every step
    (with Pyro's validation on every 200th step only), as for a user's subclass that changes
    model or guide."""

    log_weights = None


def library_step(vae, elbo, **kwargs):
    """``TrainingLoss(vae, elbo, **kwargs)`` and ``backward()``: the step ``train()`` runs (one
    process), as ``step(x, n)``; ``step.loss`` is the TrainingLoss."""
    loss = TrainingLoss(vae, elbo, **kwargs)

    def step(x, num_data):
        value = loss(x, num_data)
        value.backward()
        return value.detach()

    step.loss = loss
    return step


VARIANTS = {
    # name: description; make_variant builds each (None where it does not apply)
    "stock": "the library as train() runs it: TrainingLoss(vae, elbo), i.e. the Pyro program, "
    "validated, on every 200th step and the VAE's own plain-torch log weights in between",
    "pyro-program": "the Pyro program (elbo.differentiable_loss) on every step, validated every "
    "200th: a VAE subclass with log_weights = None",
    "pyro-validated": "TrainingLoss(..., fast_path=False), i.e. TrainConfig(fast_path=False): "
    "the Pyro program, validated, on every step",
    "jit": "make_elbo(..., jit=True): Pyro's JitTrace(MeanField)_ELBO, the program on every step "
    "(trace, meanfield only; opt-in: 4x slower on CPU)",
}
DEFAULT_VARIANTS = ["stock", "pyro-program", "pyro-validated"]


def make_variant(variant: str, est: str, k: int, cfg: dict, template, device):
    """``(vae, step)`` for one variant, or None where it does not apply."""
    if variant == "jit":
        if est not in ("trace", "meanfield"):
            return None
        vae = new_vae(cfg, template, device)
        return vae, library_step(vae, make_elbo(est, k, jit=True))
    if variant == "pyro-program":
        vae = new_vae(cfg, template, device, ProgramVAE)
        return vae, library_step(vae, make_elbo(est, k))
    vae = new_vae(cfg, template, device)
    if variant == "pyro-validated":
        return vae, library_step(vae, make_elbo(est, k), fast_path=False)
    if variant == "stock":
        return vae, library_step(vae, make_elbo(est, k))
    raise ValueError(f"unknown variant {variant!r}")


# -- harness -------------------------------------------------------------------------------------
#: the hand-written references' optimizers: Adam as everyone writes it (torch's default: a
#: for-loop over the tensors on a CPU) and a tuned loop's (torch's fused kernel)
REFERENCES = {
    "reference": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "reference, fused Adam": lambda params, lr: torch.optim.Adam(params, lr=lr, fused=True),
}


def library_optimizer(params, lr):
    """The optimizer ``train()`` builds (TrainConfig's default ``adam_impl``)."""
    return make_optimizer(params, lr, TrainConfig().adam_impl)


#: how each loop makes its batch from the data and the batch's indices: a hand-written loop
#: gathers ``x[index]`` and binarizes with torch.bernoulli, the library as train() does
#: (``index_select``, its own draw); ``--draw shared`` gives every candidate the hand-written
#: batch (the model step alone). On a CPU torch.bernoulli is about 1.0 ms for a 128 x 784
#: batch, train()'s draw 0.24 ms; the gather 72-131 us, index_select 14-57 us.
BATCHES = {"reference": reference_batch, "library": library_batch}


class Trainer:
    """One candidate: its own copy of the network and its own Adam, walking a shared batch order
    and making each batch with ``batch(x_train, index)`` (default: train()'s)."""

    def __init__(self, params, loss_step, x_train, batch_size, lr=1e-3, optimizer=None, batch=None):
        self.opt = (optimizer or library_optimizer)(list(params), lr)
        self.batch = batch or BATCHES["library"]
        self.loss_step = loss_step
        self.x = x_train
        self.n, self.bs = len(x_train), batch_size
        g = torch.Generator().manual_seed(0)
        self.order = torch.randperm(self.n, generator=g).to(x_train.device)
        self.pos = 0
        self.losses = []

    def __call__(self):
        if self.pos + self.bs > self.n:
            self.pos = 0
        x = self.batch(self.x, self.order[self.pos : self.pos + self.bs])
        self.pos += self.bs
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_step(x, self.n)
        self.opt.step()
        return loss


#: the candidate that runs only the step's matrix products: the ceiling of any loop that keeps them
MATRIX_PRODUCTS = "the step's matrix products alone"


def matrix_products(cfg: dict, k: int, batch: int, device):
    """The matrix products of one training step of the MLP VAE, alone, with the step's shapes
    and layouts: every Linear layer's forward (``addmm``), its weight gradient and, but for the
    encoder's first layer (the data needs no gradient), its input gradient; the encoder on the
    ``batch`` rows, the decoder on ``k * batch``. On a CPU they are most of a step, so
    reference / this is the most any implementation that keeps them can reach against the
    reference."""
    enc = [cfg["x_dim"], *cfg["hidden_dims"], 2 * cfg["z_dim"]]
    dec = [cfg["z_dim"], *reversed(cfg["hidden_dims"]), cfg["x_dim"]]
    ops = []
    for dims, rows, first_needs_grad in ((enc, batch, False), (dec, k * batch, True)):
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            inp, w, grad_out = (
                torch.randn(s, device=device) for s in ((rows, a), (b, a), (rows, b))
            )
            bias = torch.randn(b, device=device)
            ops.append(lambda bias=bias, inp=inp, w=w: torch.addmm(bias, inp, w.t()))
            ops.append(lambda g=grad_out, inp=inp: g.t().mm(inp))  # d weight [b, a]
            if i > 0 or first_needs_grad:
                ops.append(lambda g=grad_out, w=w: g.mm(w))  # d input [rows, a]

    def step():
        for op in ops:
            op()

    return step


def new_vae(cfg, template, device, cls=VAE):
    vae = cls(**cfg).to(device)
    vae.load_state_dict(template.state_dict())
    return vae


def ref_step_fn(ref, loss):
    def step(x, n):
        out = loss(ref, x, n)
        out.backward()
        return out.detach()

    return step


@torch.no_grad()
def loss_check(template, est, k, ref_loss, x, n, reps):
    """Mean loss at the initial weights over ``reps`` seeds, library (the Pyro program) /
    reference. Both draw the same noise for the same seed, so this is 1 up to rounding."""
    elbo, ref = make_elbo(est, k), RefVAE.from_pyro(template)
    a, b = [], []
    for seed in range(reps):
        torch.manual_seed(seed)
        a.append(elbo.differentiable_loss(template.model, template.guide, x, num_data=n))
        torch.manual_seed(seed)
        b.append(ref_loss(ref, x, n))
    return float(torch.stack(a).mean() / torch.stack(b).mean())


def bench_steps(args, device, x_train, cfg, template):
    rows, raw = [], {}
    for label in args.estimators:
        est, k, ref_loss = ESTIMATORS[label]
        k = min(k, args.max_k) if args.max_k else k
        cands = {}
        for name, opt in REFERENCES.items():
            ref = RefVAE.from_pyro(template)
            step = ref_step_fn(ref, ref_loss)
            cands[name] = Trainer(
                ref.parameters(),
                step,
                x_train,
                args.batch_size,
                optimizer=opt,
                batch=args.ref_batch,
            )
        cands[MATRIX_PRODUCTS] = matrix_products(cfg, k, args.batch_size, device)
        steps = {}
        for variant in args.variants:
            made = make_variant(variant, est, k, cfg, template, device)
            if made is not None:
                vae, steps[variant] = made
                cands[variant] = Trainer(
                    vae.parameters(), steps[variant], x_train, args.batch_size, batch=args.lib_batch
                )
        for c in cands.values():  # warm-up (JIT compiles here)
            for _ in range(args.warmup):
                c()
        reps = {name: calibrate(c, device, args.block_s) for name, c in cands.items()}
        times = interleaved(cands, args.rounds, device, reps)
        check = loss_check(
            template, est, k, ref_loss, torch.bernoulli(x_train[: args.batch_size]), len(x_train), 4
        )
        ref_t, tuned_t = times["reference"], times["reference, fused Adam"]
        # stock must have run the VAE's own log weights between validated steps all along (a
        # mismatch on a validated step would have switched it to the Pyro program, with a warning)
        own = {name: s.loss.uses_model_log_weights for name, s in steps.items()}
        if "stock" in own and not own["stock"]:
            print(f"  WARNING: {label}: stock fell back to the Pyro program", file=sys.stderr)
        raw[label] = {
            "K": k,
            "seconds_per_step": times,
            "steps_per_block": reps,
            "loss_ratio_at_init": check,
            "uses_model_log_weights": own,
        }
        for name, ts in times.items():
            ratios = [r / t for r, t in zip(ref_t, ts, strict=True)]
            tuned = [r / t for r, t in zip(tuned_t, ts, strict=True)]
            ips = quartiles([args.batch_size / t for t in ts])[1]
            if name not in REFERENCES:
                raw[label].setdefault("ratios", {})[name] = ratios
                raw[label].setdefault("ratios_to_fused_reference", {})[name] = tuned
            plain = "1" if name == "reference" else fmt_ratio(ratios)
            fused = "1" if name == "reference, fused Adam" else fmt_ratio(tuned)
            rows.append([label, name, fmt_num(ips), plain, fused, ""])
        rows[-len(times)][-1] = f"{check:.4f}"  # once per estimator
        print(f"  {label}: done", file=sys.stderr, flush=True)
    table = markdown_table(
        [
            "estimator",
            "implementation",
            "images/s (median)",
            "ratio to the reference (default Adam): median [q1, q3]",
            "ratio to the reference with fused Adam",
            "loss pyro/ref at init",
        ],
        rows,
    )
    return table, raw


def bench_epoch(args, device, x_train, cfg, template):
    """Seconds per epoch: ``pyro_vae.train`` (trace, dynamic binarization, 2 epochs; the second
    is timed, from the first epoch's callback to the second's, on the benchmark's clock) against
    the reference's epoch loop (also the second of two), interleaved; with ``--slow-epoch`` also
    ``train`` with ``TrainConfig(fast_path=False)`` (the Pyro program, validated, every step)."""
    n, bs = len(x_train), args.batch_size
    config = TrainConfig(
        epochs=2,
        batch_size=bs,
        lr=1e-3,
        elbo="trace",
        binarize="dynamic",
        progress=False,
        eval_every=0,
        device=str(device),
    )

    def library_epoch(config=config):
        vae = new_vae(cfg, template, device)
        stamps = []

        def stamp(record):
            sync(device)
            stamps.append(now())

        pyro_vae.train(vae, x_train, config=config, callbacks=[stamp])
        return stamps[1] - stamps[0]

    def reference_epoch(make_opt=REFERENCES["reference"]):
        ref = RefVAE.from_pyro(template)
        opt = make_opt(ref.parameters(), 1e-3)
        stamps = []
        for epoch in (1, 2):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch)).to(device)
            total = torch.zeros((), device=device)
            for i, start in enumerate(range(0, n, bs)):
                x = torch.bernoulli(x_train[order[start : start + bs]])
                opt.zero_grad(set_to_none=True)
                loss = ref.loss_trace(x, n)
                loss.backward()
                loss = loss.detach()
                total = total + loss * (len(x) / n)
                if i % 50 == 0 or start + bs >= n:
                    if not math.isfinite(float(loss)):
                        raise FloatingPointError("reference diverged")
                opt.step()
            float(total)
            sync(device)
            stamps.append(now())
        return stamps[1] - stamps[0]

    cands = {
        "reference": reference_epoch,
        "reference, fused Adam": lambda: reference_epoch(REFERENCES["reference, fused Adam"]),
        "pyro_vae.train": library_epoch,
    }
    if args.slow_epoch:
        slow = dataclasses.replace(config, fast_path=False)
        cands["pyro_vae.train, fast_path=False"] = lambda: library_epoch(slow)
    secs = {name: [] for name in cands}
    for r in range(args.epoch_rounds):
        for name in cands if r % 2 == 0 else reversed(list(cands)):
            secs[name].append(cands[name]())
    rows = []
    for name, s in secs.items():
        q1, med, q3 = quartiles(s)
        ratios = [
            "1" if name == ref else fmt_ratio([a / b for a, b in zip(secs[ref], s, strict=True)])
            for ref in REFERENCES
        ]
        rows.append([name, f"{med:.2f} [{q1:.2f}, {q3:.2f}]", *ratios])
    table = markdown_table(
        [
            "implementation",
            f"seconds per epoch ({n} images, batch {bs}): median [q1, q3]",
            "ratio to the reference (default Adam), seconds / seconds",
            "ratio to the reference with fused Adam",
        ],
        rows,
    )
    return table, secs


def bench_overhead(args, device):
    """Fixed per-step cost of each variant: the same steps on a 784-[8]-2 network with batch 8,
    where the tensor work is negligible, so the time over the reference is the per-step
    overhead of Pyro's machinery (which a 784-400-20 step at batch 128 pays as well)."""
    cfg = dict(x_dim=784, z_dim=2, hidden_dims=(8,))
    torch.manual_seed(0)
    x_train = torch.rand(4096, 784, device=device)
    template = VAE(**cfg).to(device)
    ref = RefVAE.from_pyro(template)
    loss = ESTIMATORS["trace"][2]
    # The same optimizer on both sides (train()'s): the difference is the per-step machinery.
    cands = {"reference": Trainer(ref.parameters(), ref_step_fn(ref, loss), x_train, 8)}
    for variant in args.variants:
        made = make_variant(variant, "trace", 1, cfg, template, device)
        if made is not None:
            cands[variant] = Trainer(made[0].parameters(), made[1], x_train, 8)
    for c in cands.values():
        for _ in range(10):
            c()
    reps = {name: calibrate(c, device, args.block_s / 2) for name, c in cands.items()}
    times = interleaved(cands, args.rounds, device, reps)
    ref_us = quartiles(times["reference"])[1] * 1e6
    rows = []
    for name, ts in times.items():
        us = quartiles(ts)[1] * 1e6
        rows.append([name, f"{us:,.0f}", "" if name == "reference" else f"{us - ref_us:+,.0f}"])
    table = markdown_table(
        ["implementation (trace)", "us per step (median)", "us over the reference"], rows
    )
    return table, times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 2 rounds (CI, < 20 s)")
    add_timing_args(p)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--block-s", type=float, default=None, help="seconds per timed block")
    p.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), choices=list(ESTIMATORS))
    p.add_argument(
        "--variants",
        nargs="+",
        default=None,
        choices=list(VARIANTS),
        help=f"default: {' '.join(DEFAULT_VARIANTS)} (smoke: stock)",
    )
    p.add_argument("--epoch-rounds", type=int, default=None, help="0 skips the epoch benchmark")
    p.add_argument(
        "--no-slow-epoch",
        dest="slow_epoch",
        action="store_false",
        help="time only train()'s default in the epoch benchmark, not also fast_path=False",
    )
    p.add_argument(
        "--no-overhead",
        dest="overhead",
        action="store_false",
        help="skip the fixed per-step overhead table",
    )
    p.add_argument(
        "--draw",
        choices=["own", "shared"],
        default="own",
        help="own: the references gather x[index] and binarize with torch.bernoulli, the library "
        "makes its batch as train() does (each loop as written); shared: every candidate the "
        "references' way (the model step alone)",
    )
    p.add_argument("--json", type=Path, default=None, help="write raw timings here")
    args = p.parse_args(argv)
    args.ref_batch = BATCHES["reference"]
    args.lib_batch = BATCHES["reference" if args.draw == "shared" else "library"]

    device = pyro_vae.resolve_device(args.device)
    setup_clock(args, device)
    smoke = args.smoke
    args.batch_size = 32 if smoke else 128
    args.rounds = args.rounds or (2 if smoke else 15)
    args.block_s = args.block_s or (0.02 if smoke else 0.4)
    args.warmup = 1 if smoke else 3
    args.max_k = 50
    if args.variants is None:
        args.variants = ["stock"] if smoke else DEFAULT_VARIANTS
    if args.epoch_rounds is None:
        args.epoch_rounds = 1 if smoke else 3
    if smoke:
        args.slow_epoch = False
        args.overhead = False
    cfg = dict(x_dim=784, z_dim=8 if smoke else 20, hidden_dims=(32,) if smoke else (400,))
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    x_train, _ = load_images(smoke, device, n_train=512)
    template = VAE(**cfg).to(device)

    t0 = time.perf_counter()
    print(f"# Training benchmark\n\n{environment(device)}\n")
    print(
        f"Model {cfg['x_dim']}-{list(cfg['hidden_dims'])}-{cfg['z_dim']} ReLU, Bernoulli "
        f"likelihood, N(0, I) prior; batch {args.batch_size}; N = {len(x_train)}; "
        f"{args.rounds} interleaved rounds of about {args.block_s} s per candidate.\n"
    )
    step_table, raw = bench_steps(args, device, x_train, cfg, template)
    print("## Training steps\n\n" + step_table + "\n")
    overhead_raw = None
    if args.overhead:
        overhead_table, overhead_raw = bench_overhead(args, device)
        print(
            "## Fixed per-step overhead (784-[8]-2, batch 8: negligible tensor work)\n\n"
            + overhead_table
            + "\n"
        )
    epoch_raw = None
    if args.epoch_rounds > 0:
        epoch_table, epoch_raw = bench_epoch(args, device, x_train, cfg, template)
        print(f"## Seconds per epoch (trace, batch {args.batch_size})\n\n{epoch_table}\n")
    print(f"total benchmark time: {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps({"steps": raw, "overhead": overhead_raw, "epoch": epoch_raw}, indent=1)
        )
    # CI: every ratio was computed and is a finite positive number (no target asserted).
    for label, r in raw.items():
        for name, ratios in r.get("ratios", {}).items():
            assert ratios and all(math.isfinite(v) and v > 0 for v in ratios), (label, name)
        assert "stock" not in args.variants or "stock" in r["ratios"], label
        assert r["uses_model_log_weights"].get("stock", True), label
    return raw


if __name__ == "__main__":
    main()
