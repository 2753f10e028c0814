"""This machine's float32 matrix-product rate, and the floors it puts under issue 13's targets.

    python benchmarks/gemm_floor.py            # the rates, the floors, the in-step A/B (~2 min)
    python benchmarks/gemm_floor.py --no-step  # the rates and the floors only (~40 s)
    python benchmarks/gemm_floor.py --smoke    # tiny sizes, seconds (CI)

Most of a K = 5 training step and of the K-sample evaluation is the decoder's last layer,
``[rows, 400] -> [rows, 784]``. How fast a machine runs it bounds what any loop that keeps
those products in float32 can reach, library or hand-written:

* ``rates``: GFLOP/s of that layer's three products (the forward ``addmm``, the input
  gradient ``g @ W``, the weight gradient ``g.t() @ h``) at the K = 5 step's 640 rows, and of
  the forward at the evaluation tile's rows (``pyro_vae.infer.batching.CPU_TILE_ELEMENTS`` /
  784), through aten (MKL in torch's x86 wheels) and, where torch has it, oneDNN
  (``torch.ops.mkldnn._linear_pointwise``, the op inductor uses for CPU linear layers; its
  result is checked against aten's). Interleaved rounds, medians.
* ``floors``: the whole test set at K = 5000 (10,000 x 5000 samples, each the decoder's two
  layers' forward, 2 * (20 * 400 + 400 * 784) FLOP) at each implementation's rate for the
  tile: the seconds of the products alone, against target 2's 300 s; and the K = 5 step's
  three products of the last layer in milliseconds.
* ``step`` (not with ``--no-step``): the library's training step (iwae, K = 5, batch 128, as
  ``bench_train.py`` builds it) against the same step with its ``nn.Linear`` layers routed
  through oneDNN (forward and input gradient; the weight gradient stays in aten, where oneDNN's
  transposed operands were slower), interleaved in one process, and the plain hand-written
  loop for scale. This measures a change that the library does not make (RESULTS.md says why).

CPU time on one thread by default (``--clock wall --threads 2`` for what a user sees).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_timing_args,
    calibrate,
    environment,
    fmt_ratio,
    interleaved,
    markdown_table,
    quartiles,
    setup_clock,
)

import pyro_vae  # noqa: E402
from pyro_vae.infer.batching import CPU_TILE_ELEMENTS  # noqa: E402

#: the whole MNIST test set at K = 5000: target 2 of issue 13, and its bound in seconds
TEST_SAMPLES, TARGET_2_S = 10_000 * 5000, 300.0


def onednn_linear():
    """``torch.ops.mkldnn._linear_pointwise`` as ``f(x, w, b) = x @ w.T + b``, or None where
    this torch has no oneDNN or the op is missing or disagrees with aten on a probe."""
    if not torch.backends.mkldnn.is_available():
        return None
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if op is None:
        return None

    def f(x, w, b=None):
        return op(x, w, b, "none", [], "")

    try:
        x, w, b = torch.randn(8, 16), torch.randn(4, 16), torch.randn(4)
        ok = torch.allclose(f(x, w, b), torch.addmm(b, x, w.t()), rtol=1e-5, atol=1e-5)
    except RuntimeError:
        return None
    return f if ok else None


def _gflops(flop: float, seconds: list[float]) -> str:
    return f"{flop / quartiles(seconds)[1] / 1e9:.1f}"


def bench_rates(args, lin) -> tuple[list[list[str]], dict[tuple[str, str], float]]:
    """Rows of the rates table, and the median rates ``{(shape/product, implementation):
    GFLOP/s}``."""
    g0 = torch.Generator().manual_seed(0)
    hid, out = args.hidden, args.pixels
    w, b = torch.randn(out, hid, generator=g0), torch.randn(out, generator=g0)
    shapes = {  # label -> (rows, which products)
        f"step, K = 5: [{args.step_rows}, {hid}] -> {out}": (args.step_rows, ("fwd", "dx", "dw")),
        f"evaluation tile: [{args.tile_rows}, {hid}] -> {out}": (args.tile_rows, ("fwd",)),
    }
    rows, rates = [], {}
    for label, (n, products) in shapes.items():
        h, g = torch.randn(n, hid, generator=g0), torch.randn(n, out, generator=g0)
        flop = 2.0 * n * hid * out
        for product in products:
            cands = {
                "fwd": {"aten": lambda h=h: torch.addmm(b, h, w.t())},
                "dx": {"aten": lambda g=g: g.mm(w)},
                "dw": {"aten": lambda g=g, h=h: g.t().mm(h)},
            }[product]
            if lin is not None:
                cands["oneDNN"] = {
                    "fwd": lambda h=h: lin(h, w, b),
                    "dx": lambda g=g: lin(g, w.t()),
                    "dw": lambda g=g, h=h: lin(g.t(), h.t()),
                }[product]
                got, want = cands["oneDNN"](), cands["aten"]()
                err = (got - want).abs().max().item() / want.abs().max().item()
                if err > 1e-5:
                    raise AssertionError(f"oneDNN's {product} differs from aten's: {err:.2e}")
            reps = {k: calibrate(f, args.device, args.block_s) for k, f in cands.items()}
            times = interleaved(cands, args.rounds, args.device, reps)
            for impl, ts in times.items():
                ratio = (
                    "1"
                    if impl == "aten"
                    else fmt_ratio([a / t for a, t in zip(times["aten"], ts, strict=True)])
                )
                rows.append(
                    [
                        label,
                        product,
                        impl,
                        f"{quartiles(ts)[1] * 1e3:.3f}",
                        _gflops(flop, ts),
                        ratio,
                    ]
                )
                rates[f"{label}/{product}", impl] = flop / quartiles(ts)[1] / 1e9
    return rows, rates


def floors(args, rates: dict[tuple[str, str], float]) -> list[str]:
    """The floors' lines, from the median rates ``{(shape/product, implementation): GFLOP/s}``."""
    flop_sample = 2.0 * (args.z_dim * args.hidden + args.hidden * args.pixels)
    lines = []
    for (key, impl), rate in rates.items():
        if key.startswith("evaluation tile"):
            seconds = TEST_SAMPLES * flop_sample / (rate * 1e9)
            side = "within" if seconds <= TARGET_2_S else "over"
            lines.append(
                f"- The whole test set at K = 5000 through {impl}: {TEST_SAMPLES:,} samples x "
                f"{flop_sample / 1e3:.0f} kFLOP at {rate:.1f} GFLOP/s = **{seconds:.0f} s of "
                f"matrix products alone**, {side} target 2's {TARGET_2_S:.0f} s before any other "
                f"work."
            )
    for impl in dict.fromkeys(i for _, i in rates):
        step = [r for (k, i), r in rates.items() if i == impl and k.startswith("step")]
        ms = sum(2e-6 * args.step_rows * args.hidden * args.pixels / r for r in step)
        lines.append(
            f"- The K = 5 step's last-layer products (forward, input and weight gradients) "
            f"through {impl}: **{ms:.2f} ms** a step."
        )
    return lines


class _OneDNNLinearFn(torch.autograd.Function):
    lin = None

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return _OneDNNLinearFn.lin(x, w, b)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx = _OneDNNLinearFn.lin(g, w.t()) if ctx.needs_input_grad[0] else None
        return gx, g.t().mm(x), g.sum(0)


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` whose forward and input gradient run through oneDNN (the A/B's variant)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        return _OneDNNLinearFn.apply(flat, self.weight, self.bias).reshape(*x.shape[:-1], -1)


def bench_step(args, lin) -> list[list[str]]:
    import bench_train as bt
    from _common import load_images

    from pyro_vae import VAE
    from pyro_vae._malloc import retain_freed_memory

    retain_freed_memory()  # as train() does; the plain reference, in this process, gets it too
    _OneDNNLinearFn.lin = lin
    x_train, _ = load_images(args.smoke, args.device)
    cfg = dict(x_dim=args.pixels, z_dim=args.z_dim, hidden_dims=(args.hidden,))
    torch.manual_seed(0)
    template = VAE(**cfg)
    est = "iwae K=5"
    name, k, _ = bt.ESTIMATORS[est]
    cands = {
        "plain hand-written loop": bt.reference_trainer(
            est, "reference", template, x_train, args.batch, bt.BATCHES["reference"]
        )
    }
    for label in ("stock", "stock, Linear layers through oneDNN"):
        vae, step = bt.make_variant("stock", name, k, cfg, template, args.device)
        if label != "stock":
            for m in vae.modules():
                if type(m) is nn.Linear:
                    m.__class__ = OneDNNLinear
        cands[label] = bt.Trainer(vae.parameters(), step, x_train, args.batch)
    for c in cands.values():
        for _ in range(3):
            c()
    reps = {n: calibrate(f, args.device, args.block_s) for n, f in cands.items()}
    times = interleaved(cands, args.rounds, args.device, reps)
    plain, stock = times["plain hand-written loop"], times["stock"]

    def ratio(ref, ts):
        return "1" if ts is ref else fmt_ratio([r / t for r, t in zip(ref, ts, strict=True)])

    return [
        [n, f"{quartiles(ts)[1] * 1e3:.2f}", ratio(plain, ts), ratio(stock, ts)]
        for n, ts in times.items()
    ]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 2 rounds (CI)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--no-step", action="store_true", help="skip the in-step A/B")
    add_timing_args(p)
    args = p.parse_args(argv)
    args.device = pyro_vae.resolve_device("cpu")
    setup_clock(args, args.device)
    args.pixels = 784  # load_images gives 784-pixel rows in smoke mode too
    args.hidden, args.z_dim = (32, 8) if args.smoke else (400, 20)
    args.batch = 16 if args.smoke else 128
    args.step_rows = 5 * args.batch
    args.tile_rows = CPU_TILE_ELEMENTS // 784
    args.rounds = args.rounds or (2 if args.smoke else 9)
    args.block_s = 0.01 if args.smoke else 0.3
    lin = onednn_linear()
    print(f"# The float32 matrix products' rate on this machine\n\n{environment(args.device)}\n")
    print(f"oneDNN's linear op: {'available' if lin else 'not available: aten rows only'}\n")
    rows, rates = bench_rates(args, lin)
    header = ["shape", "product", "implementation", "ms (median)", "GFLOP/s", "aten / this"]
    print("## Rates\n\n" + markdown_table(header, rows) + "\n")
    print("## Floors\n\n" + "\n".join(floors(args, rates)) + "\n")
    if not args.no_step and lin is not None:
        header = ["iwae K = 5 step", "ms (median)", "plain / this", "stock / this"]
        print("## The step, in one process\n\n" + markdown_table(header, bench_step(args, lin)))


if __name__ == "__main__":
    main()
