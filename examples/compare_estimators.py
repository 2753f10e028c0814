"""Compare ELBO estimators on one VAE at an equal budget: log-likelihood table, curves, SNR vs K.

    python examples/compare_estimators.py            # CPU: MNIST 10k/1k, 5 epochs, 3 seeds
    python examples/compare_estimators.py --estimators trace,iwae:5,dreg:5 --seconds 60
    python examples/compare_estimators.py --estimators iwae,dreg --num-particles 1,5,50

The papers' budget on a GPU (Burda et al. 2015's one-stochastic-layer setup, 5 seeds; days):

    python examples/compare_estimators.py --cuda --preset burda2015 \\
        --train-size 60000 --test-size 10000 --epochs 3280 --eval-samples 5000 \\
        --seeds 0,1,2,3,4 --estimators trace,iwae:5,iwae:50,stl,dreg:5,dreg:50

Every estimator trains the same architecture from the same initial weights (per seed) for the
same budget: --epochs N epochs, or --seconds S of training time per run (stopping after the
epoch in which S runs out; --epochs then caps the epochs). Writes comparison.md, comparison.csv,
comparison.json, log_likelihood_curves.png and snr_vs_k.png to --out.
"""

from __future__ import annotations

import argparse

import pyro_vae as pv
from pyro_vae.experiments import cli
from pyro_vae.experiments.compare import CompareConfig, compare_estimators, parse_estimators
from pyro_vae.experiments.run import PRESETS

DEFAULT_ESTIMATORS = "trace,iwae:5,stl,dreg:5"


def build_parser() -> argparse.ArgumentParser:
    p = cli.new_parser(__doc__)
    p.add_argument(
        "--estimators",
        default=DEFAULT_ESTIMATORS,
        help=f"comma-separated names, each optionally with its own K as name:K; valid names: "
        f"{', '.join(sorted(pv.ESTIMATORS))}",
    )
    p.add_argument(
        "--num-particles",
        default="1",
        help="K list for the estimators given without ':K' (one row per estimator x K)",
    )
    p.add_argument(
        "--seeds", type=cli.int_list("--seeds"), default="0,1,2", help="seeds, e.g. 0,1,2"
    )
    p.add_argument(
        "--epochs",
        type=cli.positive(int),
        default=None,
        help="epochs per run (default 5); with --seconds, the most epochs per run",
    )
    p.add_argument(
        "--seconds",
        type=cli.positive(float),
        default=None,
        help="training seconds per run instead of an epoch budget (evaluation not counted)",
    )
    cli.add_eval_samples_argument(p, default=1000)
    p.add_argument(
        "--eval-every",
        type=cli.positive(int),
        default=None,
        help="test log-likelihood every N epochs for the curves (default: ~5 points per run, "
        "every epoch under --seconds) and always at the end",
    )
    p.add_argument(
        "--snr-k",
        type=cli.int_list("--snr-k", 1),
        default="1,5,10,50",
        help="K values of the gradient SNR figure",
    )
    p.add_argument(
        "--snr-repeats",
        type=cli.non_negative_int,
        default=100,
        help="independent gradient estimates per SNR (0: no SNR)",
    )
    p.add_argument(
        "--snr-batch-size",
        type=cli.positive(int),
        default=None,
        help="images in the fixed SNR batch (default: --batch-size)",
    )
    p.add_argument(
        "--gaps",
        type=cli.non_negative_int,
        default=0,
        metavar="N",
        help="the approximation and amortization gaps of each trained model on the first N test "
        "images (0: none): where each estimator's gain comes from (Cremer et al. 2018)",
    )
    p.add_argument(
        "--gaps-ais-steps",
        type=cli.non_negative_int,
        default=0,
        help="AIS steps for the gaps' log p(x) (0: importance sampling, K = --eval-samples)",
    )
    cli.add_preset_argument(p, PRESETS)
    cli.add_data_arguments(p, train_size=10000, test_size=1000)
    cli.add_optimiser_arguments(p, batch_size=100)
    cli.add_architecture_arguments(p)
    cli.add_run_arguments(p, out="runs/compare")
    return p


def main(argv: list[str] | None = None):
    parser = build_parser()
    args, explicit = cli.parse_args(parser, argv)
    model_kw = cli.architecture_kwargs(args)
    train_kw = dict(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_schedule=None,
        eval_samples=args.eval_samples,
        eval_every=args.eval_every,
    )
    if args.preset:
        preset = PRESETS[args.preset]
        cli.apply_preset(preset, model_kw, train_kw, explicit, train_keys=set(train_kw))
    if train_kw["epochs"] is None and args.seconds is None:
        train_kw["epochs"] = 5
    with cli.exit_on_errors(parser):
        config = CompareConfig(
            estimators=tuple(parse_estimators(args.estimators, args.num_particles)),
            seeds=args.seeds,
            seconds=args.seconds,
            model=pv.ModelConfig(x_dim=784, **model_kw),
            dataset=args.dataset,
            train_size=args.train_size,
            test_size=args.test_size,
            snr_k=args.snr_k,
            snr_repeats=args.snr_repeats,
            snr_batch_size=args.snr_batch_size,
            device=cli.device(args),
            progress=not args.no_progress,
            gaps_images=args.gaps,
            gaps_ais_steps=args.gaps_ais_steps,
            **train_kw,
        )
        return compare_estimators(
            config, data_dir=args.data_dir, out_dir=args.out, figures=not args.no_figures
        )


if __name__ == "__main__":
    main()
