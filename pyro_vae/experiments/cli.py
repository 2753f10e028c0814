"""Command-line pieces shared by the examples: argument types; the architecture, data,
optimiser, preset, evaluation, output and distributed flags; presets that explicit flags
override; and errors that end the command with a one-line message."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..data import DATASETS
from ..data.user_files import is_user_path as _is_data_path
from ..model.networks import ACTIVATIONS, NETS
from ..training.callbacks import Callback
from ..training.config import TrainConfig
from ..training.distributed import (
    DEFAULT_TIMEOUT,
    DistributedError,
    exit_process,
    group_threads_marked,
    init_distributed,
    shutdown_distributed,
)
from .loggers import LOGGERS, make_loggers

__all__ = [
    "positive",
    "non_negative_int",
    "int_list",
    "new_parser",
    "add_architecture_arguments",
    "architecture_kwargs",
    "add_kl_weight_arguments",
    "kl_weight_kwargs",
    "add_data_arguments",
    "dataset_name_or_path",
    "image_shape",
    "add_optimiser_arguments",
    "add_preset_argument",
    "add_eval_samples_argument",
    "add_gold_standard_arguments",
    "gold_standard",
    "add_run_arguments",
    "add_resume_arguments",
    "name_list",
    "logger_names",
    "add_logger_argument",
    "loggers",
    "add_distributed_arguments",
    "device",
    "parse_args",
    "explicit_dests",
    "apply_preset",
    "ERRORS",
    "exit_on_errors",
    "distributed_session",
    "run_script",
]


def positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` that must be > 0."""

    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def non_negative(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` that must be >= 0."""

    def parse(text: str):
        value = kind(text)
        if not value >= 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value

    return parse


non_negative_int = non_negative(int)


def int_list(flag: str, minimum: int | None = None, example: str = "1,5,10"):
    """An argparse type: comma- or space-separated integers, e.g. ``"200,200"``, as a tuple."""

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(t) for t in text.replace(",", " ").split())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} takes integers like '{example}', got {text!r}"
            ) from None
        if not values:
            raise argparse.ArgumentTypeError(f"{flag} is empty")
        if minimum is not None and any(v < minimum for v in values):
            raise argparse.ArgumentTypeError(f"{flag} values must be >= {minimum}, got {text!r}")
        return values

    return parse


def new_parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser described by the first line of ``doc`` (an example's docstring) that shows
    every default. Abbreviations are off, so that :func:`explicit_dests` knows every flag given
    (explicit flags override a ``--preset``)."""
    return argparse.ArgumentParser(
        description=(doc or "").split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )


#: the architecture defaults by number of stochastic layers: (z_dim, hidden_dims, activation);
#: two layers default to Burda et al. (2015): x-200-200-z1(100)-100-100-z2(50), tanh
ARCHITECTURE_DEFAULTS = {1: (20, (400,), "relu"), 2: (100, (200, 200), "tanh")}


def add_architecture_arguments(p: argparse.ArgumentParser) -> None:
    """``--z-dim``, ``--hidden-dims``, ``--activation``, ``--net``, ``--latent-layers``,
    ``--z2-dim``, ``--hidden2-dims``."""
    p.add_argument(
        "--z-dim",
        type=positive(int),
        default=None,
        help="latent dimension (z1's with two layers); default 20, or 100 with two layers",
    )
    p.add_argument(
        "--hidden-dims",
        type=int_list("--hidden-dims", 1, example="200,200"),
        default=None,
        help="encoder hidden sizes, e.g. '200,200' (the decoder mirrors them; the conv nets' "
        "dense layer is the last); default 400, or 200,200 with two layers",
    )
    p.add_argument(
        "--activation",
        choices=sorted(ACTIVATIONS),
        default=None,
        help="hidden-layer activation; default relu, or tanh with two layers",
    )
    p.add_argument(
        "--net", choices=NETS, default="mlp", help="encoder and decoder networks (conv: images)"
    )
    p.add_argument(
        "--latent-layers",
        type=int,
        choices=(1, 2),
        default=1,
        help="stochastic layers: 2 is Burda et al.'s x -> z1 -> z2 hierarchy (TwoLayerVAE)",
    )
    p.add_argument("--z2-dim", type=positive(int), default=50, help="top latent size (2 layers)")
    p.add_argument(
        "--hidden2-dims",
        type=int_list("--hidden2-dims", 1, example="100,100"),
        default=(100, 100),
        help="hidden sizes of q(z2 | z1) and p(z1 | z2) (2 layers)",
    )


def architecture_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~pyro_vae.ModelConfig` fields of :func:`add_architecture_arguments`' flags."""
    z_dim, hidden, activation = ARCHITECTURE_DEFAULTS[args.latent_layers]
    kw: dict[str, Any] = dict(
        z_dim=args.z_dim or z_dim,
        hidden_dims=args.hidden_dims or hidden,
        activation=args.activation or activation,
        encoder=args.net,
        decoder=args.net,
        latent_layers=args.latent_layers,
    )
    if args.latent_layers == 2:
        kw.update(z2_dim=args.z2_dim, hidden2_dims=args.hidden2_dims)
    return kw


def add_kl_weight_arguments(p: argparse.ArgumentParser) -> None:
    """``--beta``, ``--kl-warmup``, ``--free-bits``: the training objective's KL weighting."""
    p.add_argument(
        "--beta",
        type=non_negative(float),
        default=1.0,
        help="KL weight of the training objective (beta-VAE); reported bounds stay beta = 1's",
    )
    p.add_argument(
        "--kl-warmup",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="raise the KL weight linearly from 0 to --beta over N epochs (0: none)",
    )
    p.add_argument(
        "--free-bits",
        type=non_negative(float),
        default=0.0,
        metavar="NATS",
        help="free bits per latent site: batch-mean KL below NATS is not penalized (trace, "
        "meanfield)",
    )


def kl_weight_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~pyro_vae.TrainConfig` fields of :func:`add_kl_weight_arguments`' flags."""
    return dict(beta=args.beta, kl_warmup=args.kl_warmup, free_bits=args.free_bits)


def dataset_name_or_path(text: str) -> str:
    """An argparse type: a built-in data set's name, or the path of the user's own data set (an
    existing file or folder, or a name ending in ``.npy``/``.npz``/``.pt``, whose absence the
    loader reports)."""
    if text.strip().lower() in DATASETS or _is_data_path(text):
        return text
    raise argparse.ArgumentTypeError(
        f"invalid choice: {text!r} (choose from {', '.join(DATASETS)}, or give the path of a "
        ".npy, .npz or .pt file or a folder of PNG/JPEG images; there is no such file or folder)"
    )


def image_shape(text: str) -> tuple[int, ...]:
    """An argparse type: ``"1,8,8"`` (C,H,W) or ``"8,8"`` (H,W) as a tuple."""
    shape = int_list("--image-shape", 1, example="1,8,8")(text)
    if len(shape) not in (2, 3):
        raise argparse.ArgumentTypeError(
            f"--image-shape takes C,H,W or H,W like '1,8,8', got {text!r}"
        )
    return shape


def add_data_arguments(
    p: argparse.ArgumentParser, train_size: int | None, test_size: int | None
) -> None:
    """``--dataset``, ``--image-shape``, ``--data-dir``, ``--train-size``, ``--test-size``."""
    p.add_argument(
        "--dataset",
        type=dataset_name_or_path,
        default="mnist",
        metavar="{" + ",".join(DATASETS) + "} or PATH",
        help="data set: a built-in name, or the path of a .npy, .npz (train/test arrays, "
        "optional train_labels/test_labels; or x, y) or .pt file or a folder of PNG/JPEG images "
        "(class subfolders give labels); one array is split 90/10 with seed 0",
    )
    p.add_argument(
        "--image-shape",
        type=image_shape,
        default=None,
        metavar="C,H,W",
        help="shape of one image of a --dataset PATH whose arrays are flat and not square "
        "(default: inferred from the file)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder with the canonical IDX files (tried before the cache and downloads)",
    )
    p.add_argument(
        "--train-size",
        type=positive(int),
        default=train_size,
        help="use only the first N training images (60000: all of MNIST)",
    )
    p.add_argument(
        "--test-size",
        type=positive(int),
        default=test_size,
        help="use only the first N test images (10000: all of MNIST)",
    )


def add_optimiser_arguments(p: argparse.ArgumentParser, batch_size: int) -> None:
    """``--batch-size``, ``--lr`` (Adam)."""
    p.add_argument("--batch-size", type=positive(int), default=batch_size, help="minibatch size")
    p.add_argument("--lr", type=positive(float), default=1e-3, help="Adam learning rate")


def add_preset_argument(p: argparse.ArgumentParser, presets: Iterable[str]) -> None:
    """``--preset``, one of ``presets`` (e.g. :data:`~pyro_vae.experiments.run.PRESETS`)."""
    p.add_argument(
        "--preset",
        choices=sorted(presets),
        default=None,
        help="a setup from the literature (architecture and optimiser); explicit flags override it",
    )


def add_eval_samples_argument(p: argparse.ArgumentParser, default: int) -> None:
    """``--eval-samples``: K of the honest test log-likelihood."""
    p.add_argument(
        "--eval-samples",
        type=positive(int),
        default=default,
        help="K of the importance-sampled test log-likelihood (papers use 5000)",
    )


def add_gold_standard_arguments(p: argparse.ArgumentParser) -> None:
    """``--ais-steps``, ``--ais-chains``, ``--ais-test-size``, ``--gaps``, ``--gaps-test-size``."""
    p.add_argument(
        "--ais-steps",
        type=non_negative_int,
        default=0,
        help="add annealed importance sampling with this many steps beside the IS estimate "
        "(0: none; 1000 is a common choice)",
    )
    p.add_argument("--ais-chains", type=positive(int), default=16, help="AIS chains per image")
    p.add_argument(
        "--ais-test-size",
        type=positive(int),
        default=1000,
        help="AIS (and IS beside it) on the first this-many test images",
    )
    p.add_argument(
        "--gaps",
        action="store_true",
        help="add the approximation and amortization gaps (Cremer et al. 2018); log p(x) by "
        "AIS with --ais-steps, else by IS with --eval-samples",
    )
    p.add_argument(
        "--gaps-test-size",
        type=positive(int),
        default=100,
        help="the gaps on the first this-many test images (each a local optimization)",
    )


def gold_standard(args: argparse.Namespace):
    """The :class:`~pyro_vae.experiments.gold_standard.GoldStandard` the flags ask for."""
    from .gold_standard import GoldStandard

    return GoldStandard(
        ais_steps=args.ais_steps,
        ais_chains=args.ais_chains,
        ais_images=args.ais_test_size,
        gaps=args.gaps,
        gaps_images=args.gaps_test_size,
    )


def add_run_arguments(p: argparse.ArgumentParser, out: str) -> None:
    """``--cuda``, ``--out``, ``--no-progress``, ``--no-figures``, ``--debug``."""
    p.add_argument("--cuda", action="store_true", help="train and evaluate on the GPU")
    p.add_argument("--out", default=out, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument(
        "--debug", action="store_true", help="show the traceback of an error, not only its message"
    )


def add_resume_arguments(p: argparse.ArgumentParser) -> None:
    """``--resume``, ``--override``, ``--overwrite``: what may happen to a run already in --out."""
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--override",
        type=name_list,
        default=(),
        metavar="FIELD,...",
        help="with --resume: training settings allowed to differ from the checkpoint's (e.g. "
        "lr,batch_size); each change is recorded in the checkpoint",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="start a new run in an --out that holds one"
    )


def name_list(text: str) -> tuple[str, ...]:
    """``"lr,batch_size"`` -> ``("lr", "batch_size")``; names are TrainConfig fields."""
    names = tuple(n.strip().replace("-", "_") for n in text.split(",") if n.strip())
    valid = set(TrainConfig.__dataclass_fields__)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown training setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}"
        )
    return names


def logger_names(text: str) -> list[str]:
    """An argparse type: ``"tensorboard,mlflow"`` -> ``["tensorboard", "mlflow"]``, each one of
    :data:`~pyro_vae.experiments.loggers.LOGGERS`."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in LOGGERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown logger {', '.join(unknown) or repr(text)}; choose from {', '.join(LOGGERS)}"
        )
    return names


def add_logger_argument(p: argparse.ArgumentParser) -> None:
    """``--logger``: experiment trackers, repeatable or comma-separated (see :func:`loggers`)."""
    p.add_argument(
        "--logger",
        type=logger_names,
        action="extend",
        default=None,
        metavar="{" + ",".join(LOGGERS) + "}",
        help="log the run to these trackers, under --out (repeatable or comma-separated; each "
        'needs its extra, e.g. pip install -e ".[tensorboard]"; all: ".[trackers]")',
    )


def loggers(args: argparse.Namespace) -> list[Callback]:
    """The ``--logger`` trackers, writing under the run directory (a missing extra raises
    :class:`~pyro_vae.data.errors.MissingExtraError` naming the pip command)."""
    return make_loggers(getattr(args, "logger", None) or ())


def device(args: argparse.Namespace) -> str:
    """``"cuda"`` with ``--cuda``, else ``"cpu"``."""
    return "cuda" if args.cuda else "cpu"


def add_distributed_arguments(p: argparse.ArgumentParser) -> None:
    """``--distributed``, ``--dist-timeout``, ``--dist-backend`` (see
    :func:`distributed_session`)."""
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
        default=argparse.SUPPRESS,
        help="torch.distributed backend (default: nccl with --cuda, else gloo)",
    )


def parse_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> tuple[argparse.Namespace, set[str]]:
    """Parse ``argv`` (None: the command line) and name the options given explicitly (see
    :func:`explicit_dests`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return parser.parse_args(argv), explicit_dests(parser, argv)


def explicit_dests(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """Destinations of the options given on the command line (``--flag v`` or ``--flag=v``).

    Build the parser with ``allow_abbrev=False`` so that every given flag is spelled out here.
    """
    return {
        a.dest
        for a in parser._actions
        for o in a.option_strings
        if any(t == o or t.startswith(o + "=") for t in argv)
    }


def apply_preset(
    preset: tuple[dict[str, Any], dict[str, Any]],
    model_kw: dict[str, Any],
    train_kw: dict[str, Any],
    explicit: set[str],
    train_keys: set[str] | None = None,
) -> None:
    """Update ``model_kw``/``train_kw`` in place from a preset, except what was given explicitly
    (and, with ``train_keys``, only those training settings)."""
    preset_model, preset_train = preset
    model_kw.update({k: v for k, v in preset_model.items() if k not in explicit})
    train_kw.update(
        {
            k: v
            for k, v in preset_train.items()
            if k not in explicit and (train_keys is None or k in train_keys)
        }
    )


#: The errors of a run that mean a bad argument or setup, not a bug: the command exits with
#: status 2 and their message instead of a traceback.
ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    RuntimeError,
    OSError,  # FileNotFoundError, FileExistsError, PermissionError, a full disk, ...
    FloatingPointError,  # TrainingDiverged
)


@contextmanager
def exit_on_errors(
    parser: argparse.ArgumentParser,
    errors: tuple[type[BaseException], ...] = ERRORS,
    where: str = "",
) -> Iterator[None]:
    """Turn ``errors`` raised in the body into ``error{where}: message`` and exit status 2
    (with ``--debug`` on the command line they propagate, traceback and all)."""
    try:
        yield
    except errors as e:
        if "--debug" in sys.argv[1:] or getattr(parser, "debug", False):
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        parser.exit(2, f"error{where}: {message}\n")


@contextmanager
def distributed_session(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    errors: tuple[type[BaseException], ...] = ERRORS,
) -> Iterator[None]:
    """The body under :func:`exit_on_errors`; with ``--distributed``, also inside torchrun's
    process group: joined first (an error there exits), left afterwards, waiting for the
    other processes only if the body finished (a peer may be gone after an error), and an
    error names the rank that hit it."""
    parser.debug = bool(getattr(args, "debug", False))
    if not args.distributed:
        with exit_on_errors(parser, errors):
            yield
        return
    with exit_on_errors(parser, (DistributedError, ValueError, RuntimeError)):
        backend = getattr(args, "dist_backend", None)
        ctx = init_distributed(device(args), backend=backend, timeout=args.dist_timeout)
    finished = False
    try:
        with exit_on_errors(parser, errors, where=f" (rank {ctx.rank} of {ctx.world_size})"):
            yield
        finished = True
    finally:
        shutdown_distributed(barrier=finished)


def run_script(main: Callable[[], Any]) -> None:
    """A script's ``if __name__ == "__main__":`` body: ``main()``, then :func:`exit_process` with
    the exit status it ends with, after a success or an error alike (an error's message or
    traceback printed first), so that a ``--distributed`` run never reaches the interpreter
    shutdown where gloo's leftover threads can abort it. Without a process group, ``main()``'s
    exceptions propagate unchanged."""
    try:
        main()
    except BaseException as e:
        if not group_threads_marked():
            raise
        exit_process(_exit_status(e))
    exit_process(0)


def _exit_status(e: BaseException) -> int:
    """The status Python's own shutdown gives for ``e``, its message or traceback printed."""
    if isinstance(e, SystemExit):
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    traceback.print_exception(e)
    return 130 if isinstance(e, KeyboardInterrupt) else 1
