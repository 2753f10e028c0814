"""Train a VAE on MNIST (or Fashion-MNIST) with SVI and report an honest test log-likelihood.

    python examples/mnist_svi.py                 # CPU, a model worth looking at in minutes
    python examples/mnist_svi.py --cuda          # the same on a GPU
    python examples/mnist_svi.py --preset burda2015 --cuda   # Burda et al. (2015)'s VAE setup
    python examples/mnist_svi.py --dataset digits.npz        # your own .npy/.npz/.pt or images

Data-parallel on N processes (--batch-size is per process; rank 0 prints and writes files):

    torchrun --standalone --nproc_per_node=2 examples/mnist_svi.py --distributed          # CPUs
    torchrun --standalone --nproc_per_node=8 examples/mnist_svi.py --distributed --cuda   # GPUs

Writes config.json, metrics.jsonl, checkpoint.pt, results.json and PNG figures to --out, and
with --logger tensorboard,mlflow,wandb the run's trackers there too.
"""

from __future__ import annotations

import argparse

import pyro_vae as pv
from pyro_vae.experiments import cli
from pyro_vae.experiments.run import PRESETS, run_experiment


def build_parser() -> argparse.ArgumentParser:
    p = cli.new_parser(__doc__)
    cli.add_distributed_arguments(p)
    cli.add_data_arguments(p, train_size=None, test_size=None)
    cli.add_preset_argument(p, PRESETS)
    p.add_argument("--epochs", type=cli.positive(int), default=10, help="training epochs")
    cli.add_optimiser_arguments(p, batch_size=128)
    cli.add_architecture_arguments(p)
    p.add_argument("--prior", choices=sorted(pv.PRIORS), default="normal", help="prior p(z)")
    p.add_argument(
        "--num-components",
        type=cli.positive(int),
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
    p.add_argument(
        "--num-flows",
        type=cli.positive(int),
        default=2,
        help="flow layers of a flow guide (any --guide but normal)",
    )
    p.add_argument("--elbo", choices=sorted(pv.ESTIMATORS), default="trace", help="ELBO estimator")
    p.add_argument(
        "--num-particles",
        type=cli.positive(int),
        default=1,
        help="samples per datapoint in the training objective (K for iwae/dreg)",
    )
    cli.add_eval_samples_argument(p, default=500)
    cli.add_gold_standard_arguments(p)
    p.add_argument(
        "--eval-every",
        type=cli.non_negative_int,
        default=0,
        help="test log-likelihood every N epochs and at the end (0: only at the end)",
    )
    p.add_argument("--seed", type=cli.non_negative_int, default=0, help="random seed")
    cli.add_kl_weight_arguments(p)
    cli.add_resume_arguments(p)
    p.add_argument("--jit", action="store_true", help="use Pyro's JIT-compiled ELBO")
    p.add_argument(
        "--no-fast-path",
        action="store_true",
        help="run the Pyro program, validated, at every training step (see the README)",
    )
    cli.add_run_arguments(p, out="runs/mnist")
    cli.add_logger_argument(p)
    return p


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args, explicit = cli.parse_args(parser, argv)
    model_kw = dict(
        **cli.architecture_kwargs(args),
        prior=args.prior,
        likelihood=args.likelihood,
        guide=args.guide,
        num_components=args.num_components,
        num_flows=args.num_flows,
    )
    train_kw = dict(
        **cli.kl_weight_kwargs(args),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        elbo=args.elbo,
        num_particles=args.num_particles,
        eval_samples=args.eval_samples,
        eval_every=args.eval_every if args.eval_every > 0 else args.epochs,
        seed=args.seed,
        device=cli.device(args),
        jit=args.jit,
        fast_path=not args.no_fast_path,
        progress=not args.no_progress,
    )
    if args.preset:
        cli.apply_preset(PRESETS[args.preset], model_kw, train_kw, explicit)
    with cli.distributed_session(parser, args):
        return run_experiment(
            pv.ModelConfig(x_dim=784, **model_kw),
            pv.TrainConfig(**train_kw),
            dataset=args.dataset,
            data_dir=args.data_dir,
            image_shape=args.image_shape,
            gold=cli.gold_standard(args),
            out_dir=args.out,
            resume=args.resume,
            overwrite=args.overwrite,
            override=args.override,
            train_size=args.train_size,
            test_size=args.test_size,
            figures=not args.no_figures,
            distributed=args.distributed,
            callbacks=cli.loggers(args),
        )


if __name__ == "__main__":
    cli.run_script(main)  # after --distributed, ends without the interpreter's shutdown
