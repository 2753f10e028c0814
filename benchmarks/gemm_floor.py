"""This machine's float32 matrix-product rate, and the floors it puts under issue 13's targets.

    python benchmarks/gemm_floor.py            # the rates, the floors, the in-step A/B (~50 s)
    python benchmarks/gemm_floor.py --no-step  # the rates and the floors only (~25 s)
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
  tile: the seconds of the products alone, against target 2's 300 s (the small 20 -> 400
  layer, 2.5% of the FLOP, is counted at the large layer's rate, which it does not beat: a
  lower bound); and the K = 5 step's three products of the last layer in milliseconds.
* ``step`` (not with ``--no-step``): the library's training step (iwae, K = 5, batch 128, as
  ``bench_train.py`` builds it) against the same step with its ``nn.Linear`` layers routed
  through oneDNN (forward and input gradient; the weight gradient stays in aten, where oneDNN's
  transposed operands were slower), interleaved in one process, and the plain hand-written
  loop for scale. The layer is first checked against ``nn.Linear`` (output and gradients).
  This measures a change that the library does not make (RESULTS.md says why). Unlike
  ``bench_train.py`` every candidate here shares one process, in which train()'s allocator
  setting holds for the plain loop too: read ``stock / this``, not ``plain / this``, against
  target 1.

CPU time on one thread by default (``--clock wall --threads 2`` for what a user sees).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
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


#: a linear layer's three products, ``y = x @ w.T + b`` (``x [N, in]``, ``w [out, in]``) and, with
#: ``g [N, out]`` the gradient in y, those in x and w: each as aten computes it and through the
#: oneDNN op ``lin`` (from :func:`onednn_linear`). The probe, the rates and the A/B's layer use
#: these, so the layouts measured are the layouts checked and run.
PRODUCTS = {
    "fwd": (lambda x, w, b, g: torch.addmm(b, x, w.t()), lambda lin, x, w, b, g: lin(x, w, b)),
    "dx": (lambda x, w, b, g: g.mm(w), lambda lin, x, w, b, g: lin(g, w.t())),
    "dw": (lambda x, w, b, g: g.t().mm(x), lambda lin, x, w, b, g: lin(g.t(), x.t())),
}


def onednn_linear():
    """``torch.ops.mkldnn._linear_pointwise`` as ``f(x, w, b=None) = x @ w.T + b``, or None
    where this torch has no oneDNN, lacks the op, or the op fails or disagrees with aten on a
    probe of each layout used here (contiguous, a transposed weight, both operands transposed)."""
    if not torch.backends.mkldnn.is_available():
        return None
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if op is None:
        return None

    def f(x, w, b=None):
        return op(x, w, b, "none", [], "")

    gen = torch.Generator().manual_seed(0)
    args = [torch.randn(*s, generator=gen) for s in ((8, 16), (4, 16), (4,), (8, 4))]
    try:
        ok = all(
            torch.allclose(onednn(f, *args), aten(*args), rtol=1e-5, atol=1e-5)
            for aten, onednn in PRODUCTS.values()
        )
    except RuntimeError:
        return None
    return f if ok else None


def bench_rates(args, lin) -> tuple[list[list[str]], dict[tuple[str, str, str], float]]:
    """Rows of the rates table, and the median rates ``{(shape, product, implementation):
    GFLOP/s}``, ``shape`` being "step" or "tile"."""
    gen = torch.Generator().manual_seed(0)
    hid, out = args.hidden, args.pixels
    w, b = torch.randn(out, hid, generator=gen), torch.randn(out, generator=gen)
    shapes = {  # shape -> (its label, rows, which products)
        "step": (f"step, K = 5: [{args.step_rows}, {hid}] -> {out}", args.step_rows, PRODUCTS),
        "tile": (f"evaluation tile: [{args.tile_rows}, {hid}] -> {out}", args.tile_rows, ["fwd"]),
    }
    rows, rates = [], {}
    for shape, (label, n, products) in shapes.items():
        x, g = torch.randn(n, hid, generator=gen), torch.randn(n, out, generator=gen)
        flop = 2.0 * n * hid * out
        for product in products:
            aten, onednn = PRODUCTS[product]
            cands = {"aten": lambda aten=aten, x=x, g=g: aten(x, w, b, g)}
            if lin is not None:
                cands["oneDNN"] = lambda onednn=onednn, x=x, g=g: onednn(lin, x, w, b, g)
                got, want = cands["oneDNN"](), cands["aten"]()
                err = (got - want).abs().max().item() / want.abs().max().item()
                if err > 1e-5:
                    raise AssertionError(f"oneDNN's {product} differs from aten's: {err:.2e}")
            reps = {k: calibrate(f, args.device, args.block_s) for k, f in cands.items()}
            times = interleaved(cands, args.rounds, args.device, reps)
            for impl, ts in times.items():
                paired = [a / t for a, t in zip(times["aten"], ts, strict=True)]
                rate = flop / quartiles(ts)[1] / 1e9
                rates[shape, product, impl] = rate
                ms = f"{quartiles(ts)[1] * 1e3:.3f}"
                ratio = "1" if impl == "aten" else fmt_ratio(paired)
                rows.append([label, product, impl, ms, f"{rate:.1f}", ratio])
    return rows, rates


def floors(args, rates: dict[tuple[str, str, str], float]) -> list[str]:
    """The floors' lines, from :func:`bench_rates`' median rates."""
    flop_sample = 2.0 * (args.z_dim * args.hidden + args.hidden * args.pixels)
    lines = []
    for (shape, _, impl), rate in rates.items():
        if shape == "tile":
            seconds = TEST_SAMPLES * flop_sample / (rate * 1e9)
            side = "within" if seconds <= TARGET_2_S else "over"
            lines.append(
                f"- The whole test set at K = 5000 through {impl}: {TEST_SAMPLES:,} samples x "
                f"{flop_sample / 1e3:.0f} kFLOP at {rate:.1f} GFLOP/s = **{seconds:.0f} s of "
                f"matrix products alone**, {side} target 2's {TARGET_2_S:.0f} s before any other "
                f"work."
            )
    flop_ms = 2e-6 * args.step_rows * args.hidden * args.pixels  # ms at 1 GFLOP/s
    impls = sorted({impl for _, _, impl in rates})
    mixes = {impl: dict.fromkeys(PRODUCTS, impl) for impl in impls}
    if "oneDNN" in impls:  # what the step's A/B runs
        mixes["oneDNN for the forward and input gradient, aten for the weight gradient"] = {
            "fwd": "oneDNN",
            "dx": "oneDNN",
            "dw": "aten",
        }
    for label, mix in mixes.items():
        ms = sum(flop_ms / rates["step", p, i] for p, i in mix.items())
        lines.append(
            f"- The K = 5 step's last-layer products (forward, input and weight gradients) "
            f"through {label}: **{ms:.2f} ms** a step."
        )
    return lines


def onednn_linear_layer(lin):
    """A subclass of ``nn.Linear`` whose forward and input gradient run through ``lin`` (from
    :func:`onednn_linear`); the weight gradient stays in aten. ``x [..., in] -> [..., out]``."""

    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, b):  # x [N, in], w [out, in], b [out] or None
            ctx.save_for_backward(x, w)
            ctx.has_bias = b is not None
            return PRODUCTS["fwd"][1](lin, x, w, b, None)

        @staticmethod
        def backward(ctx, g):  # g [N, out]
            x, w = ctx.saved_tensors
            need_x, need_w, need_b = ctx.needs_input_grad
            return (
                PRODUCTS["dx"][1](lin, x, w, None, g) if need_x else None,
                PRODUCTS["dw"][0](x, w, None, g) if need_w else None,
                g.sum(0) if need_b and ctx.has_bias else None,
            )

    class OneDNNLinear(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            flat = x.reshape(-1, x.shape[-1])
            return Fn.apply(flat, self.weight, self.bias).reshape(*x.shape[:-1], -1)

    return OneDNNLinear


def check_layer(layer_cls) -> None:
    """The oneDNN layer gives nn.Linear's output and gradients (float32 rounding), on a 3-D
    input, with and without a bias; raises AssertionError otherwise."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 16, generator=g)
    for bias in (True, False):
        ref = nn.Linear(16, 8, bias=bias)
        new = layer_cls(16, 8, bias=bias)
        new.load_state_dict(ref.state_dict())
        outs, grads = [], []
        for m in (ref, new):
            xi = x.clone().requires_grad_()
            y = m(xi)
            (y * torch.arange(8.0)).sum().backward()
            outs.append(y.detach())
            grads.append([xi.grad, *(p.grad for p in m.parameters())])
        assert torch.allclose(outs[0], outs[1], rtol=1e-5, atol=1e-5), "oneDNN layer's output"
        for a, b in zip(grads[0], grads[1], strict=True):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), "oneDNN layer's gradient"


def bench_step(args, lin) -> list[list[str]]:
    import bench_train as bt
    from _common import load_images

    from pyro_vae import VAE
    from pyro_vae._malloc import retain_freed_memory

    retain_freed_memory()  # as train() does; the plain reference, in this process, gets it too
    layer_cls = onednn_linear_layer(lin)
    check_layer(layer_cls)
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
                    m.__class__ = layer_cls
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


def gemm_libraries() -> str:
    """The MKL and oneDNN versions torch was built with, from ``torch.__config__.show()``."""
    found = re.findall(
        r"(Math Kernel Library Version [\w.-]+|MKL-DNN v[\w.]+)", torch.__config__.show()
    )
    return "; ".join(found) or "no MKL or oneDNN named in torch.__config__.show()"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 2 rounds (CI)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--no-step", action="store_true", help="skip the in-step A/B")
    p.add_argument("--json", type=Path, default=None, help="write the tables' rows here")
    add_timing_args(p)
    args = p.parse_args(argv)
    args.device = pyro_vae.resolve_device("cpu")
    setup_clock(args, args.device)
    args.pixels = 784  # load_images gives 784-pixel rows in smoke mode too
    args.hidden, args.z_dim = (32, 8) if args.smoke else (400, 20)
    args.batch = 16 if args.smoke else 128
    args.step_rows = 5 * args.batch
    args.tile_rows = CPU_TILE_ELEMENTS // args.pixels
    args.rounds = args.rounds or (2 if args.smoke else 9)
    args.block_s = 0.01 if args.smoke else 0.3
    start = time.perf_counter()
    lin = onednn_linear()
    print(f"# The float32 matrix products' rate on this machine\n\n{environment(args.device)}\n")
    print(
        f"{gemm_libraries()}; oneDNN's linear op: "
        f"{'available' if lin else 'not available: aten rows only'}\n"
    )
    rows, rates = bench_rates(args, lin)
    header = ["shape", "product", "implementation", "ms (median)", "GFLOP/s", "aten / this"]
    print("## Rates\n\n" + markdown_table(header, rows) + "\n")
    out = {"rates": rows, "floors": floors(args, rates), "step": []}
    print("## Floors\n\n" + "\n".join(out["floors"]) + "\n")
    if not args.no_step and lin is not None:
        out["step"] = bench_step(args, lin)
        header = ["iwae K = 5 step", "ms (median)", "plain / this", "stock / this"]
        print("## The step, in one process\n\n" + markdown_table(header, out["step"]) + "\n")
    print(f"total benchmark time: {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
