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
import sys

import pyro_vae as pv
from pyro_vae.compare import CompareConfig, compare_estimators, parse_estimators
from pyro_vae.experiment import PRESETS

DEFAULT_ESTIMATORS = "trace,iwae:5,stl,dreg:5"


def _ints(flag: str, minimum: int | None = None):
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(t) for t in text.replace(",", " ").split())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} takes integers like '1,5,10', got {text!r}"
            ) from None
        if not values:
            raise argparse.ArgumentTypeError(f"{flag} is empty")
        if minimum is not None and any(v < minimum for v in values):
            raise argparse.ArgumentTypeError(f"{flag} values must be >= {minimum}, got {text!r}")
        return values

    return parse


def _positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,  # so that the flags given explicitly (over a --preset) are known
    )
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
    p.add_argument("--seeds", type=_ints("--seeds"), default="0,1,2", help="seeds, e.g. 0,1,2")
    p.add_argument(
        "--epochs",
        type=_positive(int),
        default=None,
        help="epochs per run (default 5); with --seconds, the most epochs per run",
    )
    p.add_argument(
        "--seconds",
        type=_positive(float),
        default=None,
        help="training seconds per run instead of an epoch budget (evaluation not counted)",
    )
    p.add_argument(
        "--eval-samples",
        type=_positive(int),
        default=1000,
        help="K of the importance-sampled test log-likelihood",
    )
    p.add_argument(
        "--eval-every",
        type=_positive(int),
        default=None,
        help="test log-likelihood every N epochs for the curves (default: ~5 points per run, "
        "every epoch under --seconds) and always at the end",
    )
    p.add_argument(
        "--snr-k",
        type=_ints("--snr-k", 1),
        default="1,5,10,50",
        help="K values of the gradient SNR figure",
    )
    p.add_argument(
        "--snr-repeats",
        type=_non_negative_int,
        default=100,
        help="independent gradient estimates per SNR (0: no SNR)",
    )
    p.add_argument(
        "--snr-batch-size",
        type=_positive(int),
        default=None,
        help="images in the fixed SNR batch (default: --batch-size)",
    )
    p.add_argument("--dataset", choices=pv.DATASETS, default="mnist", help="data set")
    p.add_argument("--data-dir", default=None, help="folder with the canonical IDX files")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="architecture and optimiser of a paper (explicit flags override it)",
    )
    p.add_argument(
        "--train-size",
        type=_positive(int),
        default=10000,
        help="first N training images (60000: all of MNIST)",
    )
    p.add_argument(
        "--test-size",
        type=_positive(int),
        default=1000,
        help="first N test images (10000: all of MNIST)",
    )
    p.add_argument("--batch-size", type=_positive(int), default=100, help="minibatch size")
    p.add_argument("--lr", type=_positive(float), default=1e-3, help="Adam learning rate")
    p.add_argument("--z-dim", type=_positive(int), default=20, help="latent dimension")
    p.add_argument(
        "--hidden-dims",
        type=_ints("--hidden-dims", 1),
        default="400",
        help="encoder hidden sizes, e.g. '200,200' (the decoder mirrors them)",
    )
    p.add_argument(
        "--activation",
        choices=sorted(pv.networks.ACTIVATIONS),
        default="relu",
        help="hidden-layer activation",
    )
    p.add_argument("--cuda", action="store_true", help="train and evaluate on the GPU")
    p.add_argument("--out", default="runs/compare", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    return p


def main(argv: list[str] | None = None):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    explicit = {
        a.dest
        for a in parser._actions
        for o in a.option_strings
        if any(t == o or t.startswith(o + "=") for t in argv)
    }
    model_kw = dict(z_dim=args.z_dim, hidden_dims=args.hidden_dims, activation=args.activation)
    train_kw = dict(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_schedule=None,
        eval_samples=args.eval_samples,
        eval_every=args.eval_every,
    )
    if args.preset:
        preset_model, preset_train = PRESETS[args.preset]
        model_kw.update({k: v for k, v in preset_model.items() if k not in explicit})
        train_kw.update(
            {k: v for k, v in preset_train.items() if k in train_kw and k not in explicit}
        )
    if train_kw["epochs"] is None and args.seconds is None:
        train_kw["epochs"] = 5
    try:
        specs = parse_estimators(args.estimators, args.num_particles)
        config = CompareConfig(
            estimators=tuple(specs),
            seeds=args.seeds,
            seconds=args.seconds,
            model=pv.ModelConfig(x_dim=784, **model_kw),
            dataset=args.dataset,
            train_size=args.train_size,
            test_size=args.test_size,
            snr_k=args.snr_k,
            snr_repeats=args.snr_repeats,
            snr_batch_size=args.snr_batch_size,
            device="cuda" if args.cuda else "cpu",
            progress=not args.no_progress,
            **train_kw,
        )
        return compare_estimators(
            config, data_dir=args.data_dir, out_dir=args.out, figures=not args.no_figures
        )
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        parser.exit(2, f"error: {e}\n")


if __name__ == "__main__":
    main()
