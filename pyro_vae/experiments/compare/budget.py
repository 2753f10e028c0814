"""The equal-time budget: a training callback that stops a run after the epoch in which its
training time (the sum of the trainer's per-epoch ``seconds``, evaluation excluded) runs out."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Budget", "BudgetExhausted"]


class BudgetExhausted(Exception):
    """Raised by :class:`Budget` after the epoch in which the time budget ran out."""


class Budget:
    """Training callback: records each epoch and stops the run once the training time (the sum
    of the records' ``seconds``) reaches ``seconds`` (None: never stops)."""

    def __init__(self, seconds: float | None, log: Callable[[dict], None] | None = None) -> None:
        self.seconds = seconds
        self.log = log
        self.history: list[dict] = []
        self.elapsed = 0.0

    def __call__(self, record: dict) -> None:
        self.history.append(record)
        self.elapsed += float(record.get("seconds", 0.0))
        if self.log is not None:
            self.log(record)
        if self.seconds is not None and self.elapsed >= self.seconds:
            raise BudgetExhausted
