"""The whole MNIST test set's K-sample log-likelihood, measured (not extrapolated) for one model.

    python examples/mnist_svi.py                          # trains runs/mnist (the default run)
    python benchmarks/full_test_set.py --run runs/mnist   # 10,000 images at K = 5000
    python benchmarks/full_test_set.py --smoke            # an untrained model, 64 images, K = 50

Times ``pv.log_likelihood(vae.model, vae.guide, test, num_samples=K)`` with the library's default
batching on the test set binarized once (``binarize_static``), and prints wall and CPU seconds
and the mean log-likelihood. bench_eval.py's whole-test-set figure is an extrapolation from a
probe; this is the check of it (7-8 min on one thread of this project's CPU). The times include
compiling the likelihood's value kernel where the evaluation switches to it; the CPU seconds are
this process's, without those of a compile's worker processes. Seeded: runs that differ only in
a setting (``PYRO_VAE_COMPILE=0``, say) give the same mean to float32 rounding.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RefVAE, environment, load_images, sync  # noqa: E402

import pyro_vae as pv  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, default=Path("runs/mnist"), help="a trained run folder")
    p.add_argument("--samples", type=int, default=5000, help="K")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--smoke", action="store_true", help="untrained model, 64 images, K = 50")
    p.add_argument("--images", type=int, default=None, help="the first N test images only")
    p.add_argument(
        "--implementation",
        choices=["library", "reference"],
        default="library",
        help="reference: the hand-written evaluation of _common.RefVAE with the model's weights "
        "(batches of 100 images, the encoder once per batch, chunks of 100 samples), alone in "
        "this fresh process as a user's own script would run it",
    )
    args = p.parse_args(argv)
    device = pv.resolve_device(args.device)
    torch.set_num_threads(args.threads)
    if args.smoke:
        torch.manual_seed(0)
        vae = pv.VAE(784, 8, (32,))
        test = pv.binarize_static(load_images(True, torch.device("cpu"), n_test=64)[1])
        args.samples = 50
    else:
        vae = pv.load_model(args.run)
        test = pv.binarize_static(pv.load_dataset("mnist").test_x)
    vae = vae.to(device).eval()
    test = test.to(device)[: args.images]
    if args.implementation == "reference":
        ref = RefVAE.from_pyro(vae).eval()
        n, k = len(test), args.samples

        def run():
            return ref.log_likelihood(test, k, min(100, n), min(100, k))
    else:

        def run():
            return pv.log_likelihood(vae.model, vae.guide, test, num_samples=args.samples)

    print(f"# Test set, K = {args.samples}, {args.implementation}\n\n{environment(device)}\n")
    # the same draws in every run, so that two runs differ by rounding, not by the estimator's
    # noise
    torch.manual_seed(0)
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        ll = run()
    sync(device)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    stderr = float(ll.std()) / len(ll) ** 0.5
    result = {
        "images": len(test),
        "K": args.samples,
        "wall_s": wall,
        "cpu_s": cpu,
        "log_likelihood": float(ll.mean()),
        "stderr": stderr,
    }
    print(
        f"{len(test)} images at K = {args.samples}: {wall:.1f} s wall, {cpu:.1f} s CPU; mean "
        f"log-likelihood {result['log_likelihood']:.3f} nats (standard error {stderr:.3f})"
    )
    return result


if __name__ == "__main__":
    main()
