"""Where Pyro's time goes: cProfile of the library's training step, torch.profiler of evaluation.

    python benchmarks/profile_step.py            # both (about 30 s)
    python benchmarks/profile_step.py --smoke    # tiny sizes

Training: the Pyro program's ``trace`` step (``TrainConfig(fast_path=False)``, the step the
library's fast path replaces; 784-400-20, batch 128, one torch thread) run under cProfile;
the table gives the cumulative time of Pyro's pieces per step. cProfile adds a cost per Python
call, so Python-heavy parts look larger than they are; the benchmark's variant rows (bench_train)
are the unbiased measure of each piece.

Evaluation: the aten operators of ``log_likelihood`` (K = 1000 on 50 images) and of the reference
on the same shapes, under torch.profiler: operators the library runs on top of the reference's.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_train as bt  # noqa: E402
from _common import RefVAE, load_images, markdown_table  # noqa: E402

from pyro_vae import VAE, log_likelihood  # noqa: E402

PIECES = [  # label, predicate on (file, function name)
    ("the whole step (batch, bernoulli, loss, backward, Adam)", "bench_train.py", "__call__"),
    ("Trace_ELBO.differentiable_loss", "trace_elbo.py", "differentiable_loss"),
    ("- get_importance_trace (run guide, replay model, score)", "enum.py", "get_importance_trace"),
    (
        "-- model_trace.compute_log_prob (incl. the BCE itself)",
        "trace_struct.py",
        "compute_log_prob",
    ),
    ("-- guide_trace.compute_score_parts", "trace_struct.py", "compute_score_parts"),
    ("-- check_model_guide_match (validation)", "util.py", "check_model_guide_match"),
    ("-- check_site_shape (validation)", "util.py", "check_site_shape"),
    ("-- prune_subsample_sites", "util.py", "prune_subsample_sites"),
    ("- per-site torch_item (.item())", "util.py", "torch_item"),
    ("pyro.module (model + guide)", "primitives.py", "module"),
    ("Distribution.__init__ (argument validation inside)", "distribution.py", "__init__"),
    ("Distribution._validate_sample (validation)", "distribution.py", "_validate_sample"),
    ("poutine apply_stack (every message)", "runtime.py", "apply_stack"),
    ("backward", "autograd/__init__.py", "backward"),
    ("Adam.step", "adam.py", "step"),
]


def profile_training(smoke: bool) -> str:
    torch.manual_seed(0)
    cfg = dict(x_dim=784, z_dim=8 if smoke else 20, hidden_dims=(32,) if smoke else (400,))
    x_train, _ = load_images(smoke, torch.device("cpu"), n_train=4096)
    vae = VAE(**cfg)
    step = bt.Trainer(
        vae.parameters(), bt.make_variant("pyro-validated", "trace", 1, vae), x_train, 128
    )
    for _ in range(10):
        step()
    n = 20 if smoke else 200
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        step()
    prof.disable()
    stats = pstats.Stats(prof).stats
    whole = None
    rows = []
    for label, file, name in PIECES:
        cum = max(
            (ct for (f, _, fn), (*_, ct, _) in stats.items() if fn == name and file in f),
            default=0.0,
        )
        if whole is None:
            whole = cum
        rows.append([label, f"{cum / n * 1e6:,.0f}", f"{100 * cum / whole:.1f}%"])
    return markdown_table(["piece (cumulative, per step)", "us under cProfile", "share"], rows)


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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("## cProfile of the Pyro program's trace training step (fast_path=False)\n")
    print(profile_training(args.smoke) + "\n")
    print("## torch.profiler of log_likelihood (K = 1000, 50 images) against the reference\n")
    print(profile_evaluation(args.smoke) + "\n")


if __name__ == "__main__":
    main()
