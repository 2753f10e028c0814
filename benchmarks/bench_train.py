"""Training throughput of pyro_vae against a hand-written PyTorch reference, in one process.

For each estimator (trace, meanfield, iwae K=5, iwae K=50) it times whole training steps (pick
the batch from the device-resident data, dynamic binarization, zero_grad, loss, backward, Adam
step), the library's step first and the reference's next, interleaved over rounds, and reports the
paired per-round ratio  images/s (Pyro) / images/s (reference)  as median [q1, q3].

Variants of the library path (monkeypatched here, the library is not edited) show where Pyro's
time goes; see RESULTS.md. Then seconds per MNIST epoch: ``pyro_vae.train`` (1 epoch) against
the reference's epoch loop, interleaved.

    python benchmarks/bench_train.py            # full (about 4 min on a 2-core CPU)
    python benchmarks/bench_train.py --smoke    # seconds, for CI
    python benchmarks/bench_train.py --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import sys
import time
from pathlib import Path

import pyro
import pyro.poutine as poutine
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RefVAE,
    calibrate,
    environment,
    fmt_num,
    fmt_ratio,
    interleaved,
    load_images,
    markdown_table,
    now,
    quartiles,
    setup_clock,
    sync,
)
from _proposed import load_proposed  # noqa: E402

import pyro_vae  # noqa: E402
from pyro_vae import VAE, make_elbo  # noqa: E402

ESTIMATORS = {  # label -> (make_elbo name, K, reference loss)
    "trace": ("trace", 1, lambda ref, x, n: ref.loss_trace(x, n)),
    "meanfield": ("meanfield", 1, lambda ref, x, n: ref.loss_meanfield(x, n)),
    "iwae K=5": ("iwae", 5, lambda ref, x, n: ref.loss_iwae(x, n, 5)),
    "iwae K=50": ("iwae", 50, lambda ref, x, n: ref.loss_iwae(x, n, 50)),
}


# -- the library's step, and monkeypatched variants of it ----------------------------------------
def library_loss_fn(elbo):
    """``pyro_vae.train._loss_fn`` (the step train() runs), or its documented equivalent."""
    try:
        from pyro_vae.train import _loss_fn

        return _loss_fn(elbo)
    except ImportError:  # pragma: no cover - the helper was renamed

        def step(model, guide, x, num_data):
            loss = elbo.differentiable_loss(model, guide, x, num_data=num_data)
            loss.backward()
            return loss.detach()

        return step


@contextlib.contextmanager
def no_pyro_module():
    """``pyro.module(name, m)`` returns ``m`` without touching the param store (the training loop
    optimizes ``vae.parameters()`` with a torch optimizer; the store is not read)."""
    original = pyro.module
    pyro.module = lambda name, nn_module, update_module_params=False: nn_module
    try:
        yield
    finally:
        pyro.module = original


def fast_trace_loss(model, guide, x, num_data):
    """Trace_ELBO's loss for a fully reparameterized guide, built on poutine traces directly:
    no score parts, no per-site ``.item()``, no model/guide match check."""
    guide_trace = poutine.trace(guide).get_trace(x, num_data)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, num_data)
    elbo = 0.0
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for site in trace.nodes.values():
            if site["type"] != "sample" or type(site["fn"]).__name__ == "_Subsample":
                continue
            lp = site["fn"].log_prob(site["value"]).sum()
            elbo = elbo + sign * site["scale"] * lp
    loss = -elbo
    loss.backward()
    return loss.detach()


VARIANTS = {
    # name: (description, factory(elbo_name, K, vae) -> step(x, num_data) or None if n/a)
    "stock": "the library path: make_elbo + train._loss_fn (differentiable_loss + backward)",
    "no-validate": "stock inside pyro.validation_enabled(False) except every 50th step",
    "no-module": "stock with pyro.module a no-op (no param-store registration per call)",
    "no-validate+no-module": "both of the above",
    "direct-loss": "our own Trace_ELBO loss on poutine traces + no-validate + no-module "
    "(trace only)",
    "jit": "make_elbo(..., jit=True): Pyro's JitTrace(MeanField)_ELBO (trace, meanfield only)",
    "compile": "torch.compile(elbo.differentiable_loss) + no-validate (trace only; opt-in: "
    "about 30 s of compilation)",
    "proposed": "the library with benchmarks/proposed.patch applied (a patched copy)",
}
DEFAULT_VARIANTS = [v for v in VARIANTS if v != "compile"]


def make_variant(variant: str, est: str, k: int, vae):
    if variant == "proposed":
        proposed = load_proposed()
        if proposed is None:
            return None
        return _proposed_step(proposed, est, k, vae)
    if variant == "compile":
        if est != "trace":
            return None
        elbo = make_elbo(est, k)
        compiled = torch.compile(
            lambda x, n: elbo.differentiable_loss(vae.model, vae.guide, x, num_data=n)
        )

        def compiled_step(x, num_data):
            with pyro.validation_enabled(False):
                loss = compiled(x, num_data)
                loss.backward()
            return loss.detach()

        return compiled_step
    if variant == "jit":
        if est not in ("trace", "meanfield"):
            return None
        base = library_loss_fn(make_elbo(est, k, jit=True))
    elif variant == "direct-loss":
        if est != "trace":
            return None
        base = fast_trace_loss
    else:
        base = library_loss_fn(make_elbo(est, k))
    validate = variant in ("stock", "no-module", "jit")
    module = variant in ("stock", "no-validate", "jit")
    counter = itertools.count()

    def step(x, num_data):
        with contextlib.ExitStack() as stack:
            if not validate and next(counter) % 50 != 0:
                stack.enter_context(pyro.validation_enabled(False))
            if not module:
                stack.enter_context(no_pyro_module())
            return base(vae.model, vae.guide, x, num_data)

    return step


def _proposed_step(proposed, est, k, vae):
    """The patched library's own step: ``train._loss_fn(elbo, vae)`` on a patched VAE."""
    loss_fn = sys.modules["pyro_vae_proposed.train"]._loss_fn(proposed.make_elbo(est, k), vae)

    def step(x, num_data):
        return loss_fn(vae.model, vae.guide, x, num_data)

    return step


# -- harness -------------------------------------------------------------------------------------
class Trainer:
    """One candidate: its own copy of the network and its own Adam, walking a shared batch order."""

    def __init__(self, params, loss_step, x_train, batch_size, lr=1e-3):
        self.opt = torch.optim.Adam(params, lr=lr)
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
        x = torch.bernoulli(self.x[self.order[self.pos : self.pos + self.bs]])
        self.pos += self.bs
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_step(x, self.n)
        self.opt.step()
        return loss


def new_vae(cfg, template, device, proposed=False):
    cls = VAE
    if proposed:
        patched = load_proposed()
        if patched is None:
            return None
        cls = patched.VAE
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
    """Mean loss at the initial weights over ``reps`` draws, library / reference (about 1)."""
    a = torch.stack(
        [
            make_elbo(est, k).differentiable_loss(template.model, template.guide, x, num_data=n)
            for _ in range(reps)
        ]
    ).mean()
    ref = RefVAE.from_pyro(template)
    b = torch.stack([ref_loss(ref, x, n) for _ in range(reps)]).mean()
    return float(a / b)


def bench_steps(args, device, x_train, cfg, template):
    rows, raw = [], {}
    for label in args.estimators:
        est, k, ref_loss = ESTIMATORS[label]
        k = min(k, args.max_k) if args.max_k else k
        cands = {
            "reference": Trainer(
                (ref := RefVAE.from_pyro(template)).parameters(),
                ref_step_fn(ref, ref_loss),
                x_train,
                args.batch_size,
            )
        }
        for variant in args.variants:
            vae = new_vae(cfg, template, device, proposed=variant == "proposed")
            step = None if vae is None else make_variant(variant, est, k, vae)
            if step is not None:
                cands[variant] = Trainer(vae.parameters(), step, x_train, args.batch_size)
        for c in cands.values():  # warm-up (JIT compiles here)
            for _ in range(args.warmup):
                c()
        reps = {name: calibrate(c, device, args.block_s) for name, c in cands.items()}
        times = interleaved(cands, args.rounds, device, reps)
        check = loss_check(
            template, est, k, ref_loss, torch.bernoulli(x_train[: args.batch_size]), len(x_train), 4
        )
        ref_t = times["reference"]
        raw[label] = {
            "K": k,
            "seconds_per_step": times,
            "steps_per_block": reps,
            "loss_ratio_at_init": check,
        }
        q1, med, q3 = quartiles([args.batch_size / t for t in ref_t])
        rows.append([label, "reference", fmt_num(med), "1", f"{check:.4f}"])
        for name, ts in times.items():
            if name == "reference":
                continue
            ratios = [r / t for r, t in zip(ref_t, ts, strict=True)]
            ips = quartiles([args.batch_size / t for t in ts])[1]
            raw[label].setdefault("ratios", {})[name] = ratios
            rows.append([label, name, fmt_num(ips), fmt_ratio(ratios), ""])
        print(f"  {label}: done", file=sys.stderr, flush=True)
    table = markdown_table(
        [
            "estimator",
            "implementation",
            "images/s (median)",
            "ratio pyro/ref: median [q1, q3]",
            "loss pyro/ref at init",
        ],
        rows,
    )
    return table, raw


def bench_epoch(args, device, x_train, cfg, template):
    """Seconds per epoch: ``pyro_vae.train`` (trace, dynamic binarization, 2 epochs; the second
    is timed, from the first epoch's callback to the second's, on the benchmark's clock) against
    the reference's epoch loop (also the second of two), interleaved; optionally with the
    patched copy of the library (benchmarks/proposed.patch)."""
    from pyro_vae import TrainConfig

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

    def library_epoch(package=pyro_vae):
        vae = new_vae(cfg, template, device, proposed=package is not pyro_vae)
        stamps = []

        def stamp(record):
            sync(device)
            stamps.append(now())

        package.train(vae, x_train, config=config, callbacks=[stamp])
        return stamps[1] - stamps[0]

    proposed = load_proposed() if args.patched_epoch else None

    def reference_epoch():
        ref = RefVAE.from_pyro(template)
        opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
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

    cands = {"reference": reference_epoch, "pyro_vae.train": library_epoch}
    if proposed is not None:
        cands["proposed (patched pyro_vae.train)"] = lambda: library_epoch(proposed)
    secs = {name: [] for name in cands}
    for r in range(args.epoch_rounds):
        for name in cands if r % 2 == 0 else reversed(list(cands)):
            secs[name].append(cands[name]())
    rows = []
    for name, s in secs.items():
        q1, med, q3 = quartiles(s)
        ratio = (
            "1"
            if name == "reference"
            else fmt_ratio([a / b for a, b in zip(secs["reference"], s, strict=True)])
        )
        rows.append([name, f"{med:.2f} [{q1:.2f}, {q3:.2f}]", ratio])
    table = markdown_table(
        [
            "implementation",
            f"seconds per epoch ({n} images, batch {bs}): median [q1, q3]",
            "ratio ref-seconds / seconds: median [q1, q3]",
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
    cands = {"reference": Trainer(ref.parameters(), ref_step_fn(ref, loss), x_train, 8)}
    for variant in args.variants:
        vae = new_vae(cfg, template, device, proposed=variant == "proposed")
        step = None if vae is None else make_variant(variant, "trace", 1, vae)
        if step is not None:
            cands[variant] = Trainer(vae.parameters(), step, x_train, 8)
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
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads (default: 1 with --clock cpu, else torch's)",
    )
    p.add_argument(
        "--clock",
        choices=["cpu", "wall"],
        default=None,
        help="cpu: process CPU seconds (default on CPU: robust on a shared machine); "
        "wall: perf_counter (default on CUDA, with synchronize)",
    )
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--block-s", type=float, default=None, help="seconds per timed block")
    p.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), choices=list(ESTIMATORS))
    p.add_argument(
        "--variants",
        nargs="+",
        default=None,
        choices=list(VARIANTS),
        help="default: all but compile (smoke: stock)",
    )
    p.add_argument("--epoch-rounds", type=int, default=None, help="0 skips the epoch benchmark")
    p.add_argument("--no-patched-epoch", dest="patched_epoch", action="store_false")
    p.add_argument(
        "--no-overhead",
        dest="overhead",
        action="store_false",
        help="skip the fixed per-step overhead table",
    )
    p.add_argument("--json", type=Path, default=None, help="write raw timings here")
    args = p.parse_args(argv)

    device = pyro_vae.resolve_device(args.device)
    setup_clock(args, device)
    smoke = args.smoke
    args.batch_size = 32 if smoke else 128
    args.rounds = args.rounds or (2 if smoke else 9)
    args.block_s = args.block_s or (0.02 if smoke else 0.4)
    args.warmup = 1 if smoke else 3
    args.max_k = 50
    if args.variants is None:
        args.variants = ["stock"] if smoke else DEFAULT_VARIANTS
    if args.epoch_rounds is None:
        args.epoch_rounds = 1 if smoke else 3
    if smoke:
        args.patched_epoch = False
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
    return raw


if __name__ == "__main__":
    main()
