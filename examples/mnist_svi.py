"""Train a VAE on MNIST (or Fashion-MNIST) with SVI and report an honest test log-likelihood.

    python examples/mnist_svi.py                 # CPU, a model worth looking at in minutes
    python examples/mnist_svi.py --cuda          # the same on a GPU
    python examples/mnist_svi.py --preset burda2015 --cuda   # Burda et al. (2015)'s VAE setup

Data-parallel on N processes (--batch-size is per process; rank 0 prints and writes files):

    torchrun --standalone --nproc_per_node=2 examples/mnist_svi.py --distributed          # CPUs
    torchrun --standalone --nproc_per_node=8 examples/mnist_svi.py --distributed --cuda   # GPUs

Writes config.json, metrics.jsonl, checkpoint.pt, results.json and PNG figures to --out.
"""

from __future__ import annotations

import argparse
import sys

import pyro_vae as pv
from pyro_vae.experiments.cli import (
    add_architecture_arguments,
    add_data_arguments,
    apply_preset,
    explicit_dests,
    positive,
)
from pyro_vae.experiments.run import PRESETS, run_experiment
from pyro_vae.training.distributed import (
    DEFAULT_TIMEOUT,
    DistributedError,
    init_distributed,
    shutdown_distributed,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,  # so that the flags given explicitly (over a --preset) are known
    )
    p.add_argument("--cuda", action="store_true", help="train and evaluate on the GPU")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel training on the processes torchrun starts (gloo on CPU, NCCL with "
        "--cuda, one GPU per process); --batch-size is per process",
    )
    p.add_argument(
        "--dist-timeout",
        type=positive(float),
        default=DEFAULT_TIMEOUT,
        help="seconds a process waits for the others in a collective before it fails "
        "(--distributed)",
    )
    p.add_argument(
        "--dist-backend",
        choices=["gloo", "nccl"],
        default=None,
        help="torch.distributed backend (default: nccl with --cuda, else gloo)",
    )
    add_data_arguments(p, train_size=None, test_size=None)
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="a setup from the literature; explicit flags override it",
    )
    p.add_argument("--epochs", type=positive(int), default=10, help="training epochs")
    p.add_argument("--batch-size", type=positive(int), default=128, help="minibatch size")
    p.add_argument("--lr", type=positive(float), default=1e-3, help="Adam learning rate")
    add_architecture_arguments(p)
    p.add_argument("--prior", choices=sorted(pv.PRIORS), default="normal", help="prior p(z)")
    p.add_argument(
        "--num-components",
        type=positive(int),
        default=10,
        help="components of the mixture prior / pseudo-inputs of the VampPrior",
    )
    p.add_argument(
        "--likelihood",
        choices=sorted(pv.LIKELIHOODS),
        default="bernoulli",
        help="likelihood p(x|z); bernoulli trains on dynamically binarized pixels",
    )
    p.add_argument("--guide", choices=sorted(pv.GUIDES), default="normal", help="guide q(z|x)")
    p.add_argument("--num-flows", type=positive(int), default=2, help="IAF layers (--guide iaf)")
    p.add_argument("--elbo", choices=sorted(pv.ESTIMATORS), default="trace", help="ELBO estimator")
    p.add_argument(
        "--num-particles",
        type=positive(int),
        default=1,
        help="samples per datapoint in the training objective (K for iwae/dreg)",
    )
    p.add_argument(
        "--eval-samples",
        type=positive(int),
        default=500,
        help="K of the importance-sampled test log-likelihood (papers use 5000)",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="test log-likelihood every N epochs and at the end (0: only at the end)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", default="runs/mnist", help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    p.add_argument("--jit", action="store_true", help="use Pyro's JIT-compiled ELBO")
    p.add_argument(
        "--no-fast-path",
        action="store_true",
        help="run the Pyro program, validated, at every training step (see the README)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    return p


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    explicit = explicit_dests(parser, sys.argv[1:] if argv is None else argv)
    model_kw = dict(
        z_dim=args.z_dim,
        hidden_dims=args.hidden_dims,
        activation=args.activation,
        prior=args.prior,
        likelihood=args.likelihood,
        guide=args.guide,
        num_components=args.num_components,
        num_flows=args.num_flows,
    )
    train_kw = dict(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        elbo=args.elbo,
        num_particles=args.num_particles,
        eval_samples=args.eval_samples,
        eval_every=args.eval_every if args.eval_every > 0 else args.epochs,
        seed=args.seed,
        device="cuda" if args.cuda else "cpu",
        jit=args.jit,
        fast_path=not args.no_fast_path,
        progress=not args.no_progress,
    )
    if args.preset:
        apply_preset(PRESETS[args.preset], model_kw, train_kw, explicit)
    where = ""
    if args.distributed:
        try:
            ctx = init_distributed(
                "cuda" if args.cuda else "cpu", backend=args.dist_backend, timeout=args.dist_timeout
            )
        except (DistributedError, ValueError, RuntimeError) as e:
            parser.exit(2, f"error: {e}\n")
        where = f" (rank {ctx.rank} of {ctx.world_size})"
    finished = False
    try:
        results = run_experiment(
            pv.ModelConfig(x_dim=784, **model_kw),
            pv.TrainConfig(**train_kw),
            dataset=args.dataset,
            data_dir=args.data_dir,
            out_dir=args.out,
            resume=args.resume,
            train_size=args.train_size,
            test_size=args.test_size,
            figures=not args.no_figures,
            distributed=args.distributed,
        )
        finished = True
        return results
    except (ValueError, RuntimeError, FileNotFoundError, pv.CheckpointError) as e:
        parser.exit(2, f"error{where}: {e}\n")
    finally:
        if args.distributed:
            shutdown_distributed(barrier=finished)


if __name__ == "__main__":
    main()
