"""Training throughput of pyro_vae against a hand-written PyTorch reference, interleaved.

For each estimator (trace, meanfield, iwae K=5 and K=50, stl K=1 and K=5, dreg K=1 and K=5) it
times whole training steps (pick the batch from the device-resident data and binarize it:
``torch.bernoulli(x[index])`` in the references, train()'s ``minibatch`` in the library unless
``--draw shared``; zero_grad, loss, backward, Adam step), the library's step and the
reference's (``_common.RefVAE``, each estimator written by hand in plain PyTorch), interleaved
over rounds, and reports the paired per-round ratio  images/s (Pyro) / images/s (reference)  as
median [q1, q3]. A third candidate runs only the step's matrix products (same shapes, same
threads): the ceiling of any implementation that keeps them. The library's candidates run in a
process of their own that keeps freed memory as train() does (``LibraryProcess``), the
references in one that runs under glibc's defaults, as a hand-written loop does.

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
import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    CLOCK,
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
    minor_faults,
    now,
    quartiles,
    reference_batch,
    set_clock,
    setup_clock,
    sync,
    timed_calls,
)

import pyro_vae  # noqa: E402
from pyro_vae import VAE, TrainConfig, make_elbo  # noqa: E402
from pyro_vae._malloc import retain_freed_memory  # noqa: E402
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


def reference_trainer(label: str, optimizer: str, template, x_train, batch_size: int, batch):
    """A hand-written loop for estimator ``label``: a RefVAE with ``template``'s weights and the
    optimizer ``REFERENCES[optimizer]``."""
    ref = RefVAE.from_pyro(template)
    step = ref_step_fn(ref, ESTIMATORS[label][2])
    return Trainer(
        ref.parameters(), step, x_train, batch_size, optimizer=REFERENCES[optimizer], batch=batch
    )


def library_epoch(cfg, template, x_train, device, config) -> float:
    """Seconds (on the benchmark's clock) of the second of ``config.epochs`` = 2 epochs of
    ``pyro_vae.train``, from the first epoch's callback to the second's."""
    vae = new_vae(cfg, template, device)
    stamps = []

    def stamp(record):
        sync(device)
        stamps.append(now())

    pyro_vae.train(vae, x_train, config=config, callbacks=[stamp])
    return stamps[1] - stamps[0]


# -- the library's process -----------------------------------------------------------------------
#: the candidates the library's process builds, by kind: (data, device, **params) -> candidate or
#: None (a variant that does not apply); a candidate with ``uses_model_log_weights`` reports it
_BUILDERS = {
    "variant": lambda d, device, variant, est, k, batch_size, batch: _variant_trainer(
        d, device, variant, est, k, batch_size, batch
    ),
    "reference": lambda d, device, label, optimizer, batch_size, batch: reference_trainer(
        label, optimizer, d["template"], d["x_train"], batch_size, BATCHES[batch]
    ),
    "matrix products": lambda d, device, k, batch_size: matrix_products(
        d["cfg"], k, batch_size, device
    ),
    "epoch": lambda d, device, config: (
        lambda: library_epoch(d["cfg"], d["template"], d["x_train"], device, TrainConfig(**config))
    ),
}


def _variant_trainer(d, device, variant, est, k, batch_size, batch):
    made = make_variant(variant, est, k, d["cfg"], d["template"], device)
    if made is None:
        return None
    vae, step = made
    trainer = Trainer(vae.parameters(), step, d["x_train"], batch_size, batch=BATCHES[batch])
    trainer.uses_model_log_weights = lambda: step.loss.uses_model_log_weights
    return trainer


def _library_worker(conn, settings: dict) -> None:
    """The library's process: build candidates on request, run timed blocks of them on this
    process's clock, and answer ``(True, value)`` or ``(False, traceback)``."""
    if settings["mallopt"] is None:
        os.environ.pop("PYRO_VAE_MALLOPT", None)
    else:
        os.environ["PYRO_VAE_MALLOPT"] = settings["mallopt"]
    torch.set_num_threads(settings["threads"])
    set_clock(settings["clock"])
    device = torch.device(settings["device"])
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    # what train() does before its first CPU step
    keeps_freed_memory = device.type == "cpu" and retain_freed_memory()
    data, cands = {}, {}
    while True:
        op, *rest = conn.recv()
        if op == "close":
            return
        try:
            if op == "load":
                name, path, cfg = rest
                saved = torch.load(path, weights_only=True)
                template = VAE(**cfg).to(device)
                template.load_state_dict(saved["state"])
                data[name] = {"cfg": cfg, "template": template, "x_train": saved["x"].to(device)}
                out = None
            elif op == "build":
                name, kind, data_name, params = rest
                cands[name] = _BUILDERS[kind](data[data_name], device, **params)
                out = cands[name] is not None
            elif op == "block":
                name, calls = rest
                out = timed_calls(cands[name], calls, device)
            elif op == "faults":
                name, calls = rest
                out = minor_faults(cands[name], calls)
            elif op == "call":  # an epoch's seconds come back; a step's loss tensor does not
                out = cands[rest[0]]()
                out = out if isinstance(out, float) else None
            elif op == "uses_model_log_weights":
                report = getattr(cands[rest[0]], "uses_model_log_weights", None)
                out = None if report is None else bool(report())
            elif op == "drop":
                cands.clear()
                out = None
            elif op == "keeps_freed_memory":
                out = keeps_freed_memory
            else:
                raise ValueError(f"unknown request {op!r}")
            conn.send((True, out))
        except Exception:
            conn.send((False, traceback.format_exc()))


class RemoteCandidate:
    """A candidate that lives in the library's process: ``()`` runs one call there, and
    ``timed_block(calls)`` returns that process's clock reading for ``calls`` calls."""

    def __init__(self, process: LibraryProcess, name: str) -> None:
        self.process, self.name = process, name

    def __call__(self):
        return self.process.request("call", self.name)

    def timed_block(self, calls: int) -> float:
        return self.process.request("block", self.name, calls)

    def faults_block(self, calls: int) -> float:
        return self.process.request("faults", self.name, calls)

    def uses_model_log_weights(self) -> bool | None:
        return self.process.request("uses_model_log_weights", self.name)


class LibraryProcess:
    """The library's candidates in a spawned process of their own.

    train() sets glibc's allocator thresholds for its whole process (pyro_vae/_malloc.py: freed
    2-20 MB tensors stay in the heap instead of being faulted in again on every step, 9-14% of
    an iwae step on a CPU where they would fault). A hand-written loop runs under glibc's
    defaults; in one process the references would inherit the library's setting, or the library
    would lose it. So the library's candidates run here, in a child that sets the thresholds as
    train() does, and the references in the benchmark's process, which never does. Each timed
    block is timed by the process that runs it, on the benchmark's clock, while the other waits
    idle on a pipe.
    Weights and data travel through a file that the child loads with ``weights_only=True``;
    requests carry plain picklable data only (hence ``dataclasses.asdict`` of a TrainConfig).
    """

    def __init__(self, device: torch.device, mallopt: str | None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        settings = {
            "threads": torch.get_num_threads(),
            "clock": CLOCK["name"],
            "device": str(device),
            "mallopt": mallopt,
        }
        self.proc = ctx.Process(target=_library_worker, args=(child, settings), daemon=True)
        self.proc.start()
        child.close()
        self.tmp = tempfile.TemporaryDirectory(prefix="bench_train_")

    def request(self, *msg):
        self.conn.send(msg)
        try:
            ok, value = self.conn.recv()
        except EOFError:
            raise RuntimeError(
                f"the library's process ended (exit code {self.proc.exitcode}) during {msg[0]!r}"
            ) from None
        if not ok:
            raise RuntimeError(f"the library's process failed during {msg!r}:\n{value}")
        return value

    def load(self, name: str, cfg: dict, template, x_train: torch.Tensor) -> None:
        """Send ``template``'s weights and the data, as ``name``."""
        path = Path(self.tmp.name) / f"{name}.pt"
        torch.save({"state": template.state_dict(), "x": x_train.cpu()}, path)
        self.request("load", name, str(path), cfg)

    def candidate(self, name: str, kind: str, data: str, **params) -> RemoteCandidate | None:
        """Build a candidate (see ``_BUILDERS``) there; None where it does not apply."""
        built = self.request("build", name, kind, data, params)
        return RemoteCandidate(self, name) if built else None

    def close(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send(("close",))
        self.proc.join(timeout=30)
        if self.proc.is_alive():
            self.proc.kill()
        self.conn.close()
        self.tmp.cleanup()


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


#: the fused reference again, in the library's process: what the allocator setting alone gives
#: a hand-written loop (a row for transparency; the ratios are to the references above)
FUSED_THERE = "reference, fused Adam, in the library's process"


def bench_steps(args, device, x_train, cfg, template, lib: LibraryProcess):
    rows, raw = [], {}
    lib.load("steps", cfg, template, x_train)
    batch = "reference" if args.lib_batch is BATCHES["reference"] else "library"
    for label in args.estimators:
        est, k, ref_loss = ESTIMATORS[label]
        k = min(k, args.max_k) if args.max_k else k
        cands = {
            name: reference_trainer(label, name, template, x_train, args.batch_size, args.ref_batch)
            for name in REFERENCES
        }
        # the ceiling runs where the allocator keeps freed memory, the better case for it
        cands[MATRIX_PRODUCTS] = lib.candidate(
            MATRIX_PRODUCTS, "matrix products", "steps", k=k, batch_size=args.batch_size
        )
        if args.fused_there:
            cands[FUSED_THERE] = lib.candidate(
                FUSED_THERE,
                "reference",
                "steps",
                label=label,
                optimizer="reference, fused Adam",
                batch_size=args.batch_size,
                batch="reference",
            )
        variants = []
        for variant in args.variants:
            params = dict(variant=variant, est=est, k=k, batch_size=args.batch_size, batch=batch)
            made = lib.candidate(variant, "variant", "steps", **params)
            if made is not None:
                cands[variant] = made
                variants.append(variant)
        for c in cands.values():  # warm-up (JIT compiles here)
            for _ in range(args.warmup):
                c()
        reps = {name: calibrate(c, device, args.block_s) for name, c in cands.items()}
        times = interleaved(cands, args.rounds, device, reps)
        faults = {name: minor_faults(c, reps[name]) for name, c in cands.items()}
        check = loss_check(
            template, est, k, ref_loss, torch.bernoulli(x_train[: args.batch_size]), len(x_train), 4
        )
        ref_t, tuned_t = times["reference"], times["reference, fused Adam"]
        # stock must have run the VAE's own log weights between validated steps all along (a
        # mismatch on a validated step would have switched it to the Pyro program, with a warning)
        own = {name: cands[name].uses_model_log_weights() for name in variants}
        lib.request("drop")
        if "stock" in own and not own["stock"]:
            print(f"  WARNING: {label}: stock fell back to the Pyro program", file=sys.stderr)
        raw[label] = {
            "K": k,
            "seconds_per_step": times,
            "steps_per_block": reps,
            "page_faults_per_step": faults,
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
            rows.append([label, name, fmt_num(ips), plain, fused, fmt_num(faults[name]), ""])
        rows[-len(times)][-1] = f"{check:.4f}"  # once per estimator
        print(f"  {label}: done", file=sys.stderr, flush=True)
    table = markdown_table(
        [
            "estimator",
            "implementation",
            "images/s (median)",
            "ratio to the reference (default Adam): median [q1, q3]",
            "ratio to the reference with fused Adam",
            "page faults a step",
            "loss pyro/ref at init",
        ],
        rows,
    )
    return table, raw


def bench_epoch(args, device, x_train, cfg, template, lib: LibraryProcess):
    """Seconds per epoch: ``pyro_vae.train`` (trace, dynamic binarization, 2 epochs; the second
    is timed, from the first epoch's callback to the second's, on the benchmark's clock, in the
    library's process) against the reference's epoch loop (also the second of two), interleaved;
    with ``--slow-epoch`` also ``train`` with ``TrainConfig(fast_path=False)`` (the Pyro program,
    validated, every step)."""
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
    lib.load("epoch", cfg, template, x_train)

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
        "pyro_vae.train": lib.candidate(
            "pyro_vae.train", "epoch", "epoch", config=dataclasses.asdict(config)
        ),
    }
    if args.slow_epoch:
        slow = dataclasses.asdict(dataclasses.replace(config, fast_path=False))
        name = "pyro_vae.train, fast_path=False"
        cands[name] = lib.candidate(name, "epoch", "epoch", config=slow)
    secs = {name: [] for name in cands}
    for r in range(args.epoch_rounds):
        for name in cands if r % 2 == 0 else reversed(list(cands)):
            secs[name].append(cands[name]())
    lib.request("drop")
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


def bench_overhead(args, device, lib: LibraryProcess):
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
    lib.load("overhead", cfg, template, x_train)
    for variant in args.variants:
        params = dict(variant=variant, est="trace", k=1, batch_size=8, batch="library")
        made = lib.candidate(variant, "variant", "overhead", **params)
        if made is not None:
            cands[variant] = made
    for c in cands.values():
        for _ in range(10):
            c()
    reps = {name: calibrate(c, device, args.block_s / 2) for name, c in cands.items()}
    times = interleaved(cands, args.rounds, device, reps)
    lib.request("drop")
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
    p.add_argument(
        "--no-fused-in-library-process",
        dest="fused_there",
        action="store_false",
        help=f"skip the row {FUSED_THERE!r} (the fused reference under the library's allocator "
        "setting)",
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

    # The references' process never sets glibc's thresholds (train() would, process-wide); the
    # library's process gets the user's PYRO_VAE_MALLOPT, if any.
    from pyro_vae import _malloc

    if _malloc._done and _malloc._done[0]:
        raise RuntimeError("this process already keeps freed memory; run the benchmark afresh")
    user_mallopt = os.environ.get("PYRO_VAE_MALLOPT")
    os.environ["PYRO_VAE_MALLOPT"] = "0"
    lib = LibraryProcess(device, user_mallopt)
    try:
        return _run(args, device, cfg, x_train, template, lib)
    finally:
        lib.close()
        if user_mallopt is None:
            os.environ.pop("PYRO_VAE_MALLOPT", None)
        else:
            os.environ["PYRO_VAE_MALLOPT"] = user_mallopt


def _run(args, device, cfg, x_train, template, lib: LibraryProcess):
    t0 = time.perf_counter()
    print(f"# Training benchmark\n\n{environment(device)}\n")
    print(
        f"Model {cfg['x_dim']}-{list(cfg['hidden_dims'])}-{cfg['z_dim']} ReLU, Bernoulli "
        f"likelihood, N(0, I) prior; batch {args.batch_size}; N = {len(x_train)}; "
        f"{args.rounds} interleaved rounds of about {args.block_s} s per candidate. The "
        "library's candidates (and the step's matrix products, and the fused reference's "
        "second row) run in a process of their own, which calls train()'s "
        "retain_freed_memory() (pyro_vae/_malloc.py; set there: "
        f"{lib.request('keeps_freed_memory')}), the references in one that never does. Page "
        "faults are counted after the timed rounds, in the process that ran the step: they "
        "depend on what that process ran before (glibc's thresholds adapt).\n"
    )
    step_table, raw = bench_steps(args, device, x_train, cfg, template, lib)
    print("## Training steps\n\n" + step_table + "\n")
    overhead_raw = None
    if args.overhead:
        overhead_table, overhead_raw = bench_overhead(args, device, lib)
        print(
            "## Fixed per-step overhead (784-[8]-2, batch 8: negligible tensor work)\n\n"
            + overhead_table
            + "\n"
        )
    epoch_raw = None
    if args.epoch_rounds > 0:
        epoch_table, epoch_raw = bench_epoch(args, device, x_train, cfg, template, lib)
        print(f"## Seconds per epoch (trace, batch {args.batch_size})\n\n{epoch_table}\n")
    print(f"total benchmark time: {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "steps": raw,
                    "overhead": overhead_raw,
                    "epoch": epoch_raw,
                    "library_process_keeps_freed_memory": lib.request("keeps_freed_memory"),
                },
                indent=1,
            )
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
