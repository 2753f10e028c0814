"""Command-line pieces shared by the examples: argument types, architecture and data flags, and
presets that explicit flags override."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from ..data.sources import DATASETS
from ..model.networks import ACTIVATIONS

__all__ = [
    "positive",
    "non_negative_int",
    "int_list",
    "add_architecture_arguments",
    "add_data_arguments",
    "explicit_dests",
    "apply_preset",
]


def positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` that must be > 0."""

    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


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


def add_architecture_arguments(p: argparse.ArgumentParser) -> None:
    """``--z-dim``, ``--hidden-dims``, ``--activation``."""
    p.add_argument("--z-dim", type=positive(int), default=20, help="latent dimension")
    p.add_argument(
        "--hidden-dims",
        type=int_list("--hidden-dims", 1, example="200,200"),
        default="400",
        help="encoder hidden sizes, e.g. '200,200' (the decoder mirrors them)",
    )
    p.add_argument(
        "--activation", choices=sorted(ACTIVATIONS), default="relu", help="hidden-layer activation"
    )


def add_data_arguments(
    p: argparse.ArgumentParser, train_size: int | None, test_size: int | None
) -> None:
    """``--dataset``, ``--data-dir``, ``--train-size``, ``--test-size``."""
    p.add_argument("--dataset", choices=DATASETS, default="mnist", help="data set")
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
