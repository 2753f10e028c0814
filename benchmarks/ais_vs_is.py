"""AIS beside importance sampling for a trained model, on the first test images.

    python examples/mnist_svi.py                                  # trains runs/mnist
    python benchmarks/ais_vs_is.py --run runs/mnist --images 1000 \
        --json benchmarks/results/ais/ais_vs_is.json

For the flagship's default model: the K-sample importance-sampled log-likelihood (K = 5000) and
AIS (``pv.ais_log_likelihood``) at a few numbers of annealing steps, on the same images, with
seconds of each (the machine's threads). AIS's estimate rises towards log p(x) with steps; where
it passes IS, the guide's proposal was losing that much.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, markdown_table  # noqa: E402

import pyro_vae as pv  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, default=Path("runs/mnist"))
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--is-samples", type=int, default=5000)
    p.add_argument("--steps", type=int, nargs="+", default=[100, 500])
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    vae = pv.load_model(args.run).eval()
    x = pv.binarize_static(pv.load_dataset("mnist").test_x)[: args.images]
    print(f"# AIS and IS, {len(x)} test images, model {args.run}\n\n{environment(x.device)}\n")
    rows, raw = [], {}
    torch.manual_seed(0)
    t0 = time.perf_counter()
    ll = pv.log_likelihood(vae.model, vae.guide, x, args.is_samples, return_stats=True)
    sec = time.perf_counter() - t0
    is_mean = float(ll.log_likelihood.mean())
    raw["is"] = {"K": args.is_samples, "mean": is_mean, "seconds": sec}
    se = float(ll.log_likelihood.std()) / len(x) ** 0.5
    rows.append(
        [f"IS, K = {args.is_samples}", f"{is_mean:.2f} +/- {1.96 * se:.2f}", "", "", f"{sec:.0f}"]
    )
    for steps in args.steps:
        torch.manual_seed(0)
        t0 = time.perf_counter()
        r = pv.ais_log_likelihood(vae.model, vae.guide, x, steps, args.chains, return_stats=True)
        sec = time.perf_counter() - t0
        d = r.log_likelihood - ll.log_likelihood
        mean = float(r.log_likelihood.mean())
        dse = float(d.std()) / len(x) ** 0.5
        raw[f"ais_{steps}"] = {
            "steps": steps,
            "chains": args.chains,
            "mean": mean,
            "minus_is": float(d.mean()),
            "minus_is_stderr": dse,
            "mc_stderr": float(r.stderr.mean()),
            "acceptance": float(r.acceptance.mean()),
            "seconds": sec,
        }
        rows.append(
            [
                f"AIS, {steps} steps x {args.chains} chains",
                f"{mean:.2f}",
                f"{float(d.mean()):+.2f} +/- {1.96 * dse:.2f}",
                f"{float(r.acceptance.mean()):.2f}",
                f"{sec:.0f}",
            ]
        )
        print(f"  AIS {steps}: done", file=sys.stderr, flush=True)
    print(
        markdown_table(
            [
                "estimate",
                "mean log p(x) (nats)",
                "minus IS, same images",
                "HMC acceptance",
                "seconds",
            ],
            rows,
        )
    )
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1))
    return raw


if __name__ == "__main__":
    main()
