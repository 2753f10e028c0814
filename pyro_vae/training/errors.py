"""What training raises when the numbers go wrong."""

from __future__ import annotations

__all__ = ["TrainingDiverged"]


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""
