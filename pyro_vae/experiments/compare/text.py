"""Small wording helpers shared by the log, the report and the figure titles."""

from __future__ import annotations

__all__ = ["count", "display_name"]


def display_name(dataset: str) -> str:
    """A data set's name as written in prose: ``"fashion-mnist"`` -> ``"Fashion-MNIST"``."""
    return {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}.get(dataset, dataset)


def count(n: int, noun: str) -> str:
    """``"1 seed"``, ``"3 seeds"``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
