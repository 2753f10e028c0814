"""The check that loaded bytes are the canonical data set: shapes, labels, class counts and the
md5 of each IDX file, so that a truncated, corrupt or wrong data set fails before training."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .errors import REFETCH, CorruptDataError
from .idx import IDX_FILES, MAGIC, RawData, idx_md5
from .specs import SPECS, DatasetSpec

__all__ = ["validate"]

_Fail = Callable[[str], CorruptDataError]


class _Split(NamedTuple):
    """One split of :class:`RawData` beside what its spec expects of it."""

    name: str  # "train" or "test"
    images: np.ndarray  # uint8 [n, 28, 28]
    labels: np.ndarray  # uint8 [n]
    n: int
    first: tuple[int, ...]
    counts: tuple[int, ...] | None


def _splits(raw: RawData, spec: DatasetSpec) -> tuple[_Split, _Split]:
    return (
        _Split(
            "train",
            raw.train_images,
            raw.train_labels,
            spec.n_train,
            spec.train_first,
            spec.train_counts,
        ),
        _Split(
            "test", raw.test_images, raw.test_labels, spec.n_test, spec.test_first, spec.test_counts
        ),
    )


def _check_shapes(split: _Split, fail: _Fail) -> None:
    if split.images.dtype != np.uint8 or split.labels.dtype != np.uint8:
        raise fail(
            f"{split.name} arrays must be uint8, got {split.images.dtype} and {split.labels.dtype}"
        )
    if split.images.shape != (split.n, 28, 28):
        raise fail(
            f"{split.name} images have shape {split.images.shape}, expected {(split.n, 28, 28)}"
        )
    if split.labels.shape != (split.n,):
        raise fail(f"{split.name} labels have shape {split.labels.shape}, expected {(split.n,)}")


def _check_labels(split: _Split, dataset: str, fail: _Fail) -> None:
    labels = split.labels
    if split.n and int(labels.max()) > 9:
        raise fail(f"{split.name} labels must be 0..9, found {int(labels.max())}")
    head = tuple(int(v) for v in labels[: len(split.first)])
    if head != split.first:
        # The likeliest wrong data set is the other one of the family: say so.
        hint = ""
        for other, other_spec in SPECS.items():
            if other != dataset and head == getattr(other_spec, f"{split.name}_first"):
                hint = f" (these look like {other})"
        raise fail(f"{split.name} labels start {list(head)}, expected {list(split.first)}{hint}")
    if split.counts is not None:
        found = tuple(int(c) for c in np.bincount(labels, minlength=10))
        if found != split.counts:
            raise fail(
                f"{split.name} class counts are {list(found)}, expected {list(split.counts)}"
            )


def validate(raw: RawData, spec: DatasetSpec, name: str, origin: str) -> dict[str, str]:
    """Check ``raw`` against ``spec``; return the md5 of each IDX file it corresponds to.

    ``raw`` holds uint8 images ``[N, 28, 28]`` and labels ``[N]`` per split; ``name`` is the data
    set and ``origin`` where the bytes came from, both for the message. Raises
    :class:`CorruptDataError` saying what is wrong and where the data came from.
    """

    def fail(msg: str) -> CorruptDataError:
        return CorruptDataError(f"{origin}: not the canonical {name}: {msg}")

    splits = _splits(raw, spec)
    # Sizes first, for both splits: a short file is the likeliest fault and the clearest message.
    for split in splits:
        _check_shapes(split, fail)
    for split in splits:
        _check_labels(split, name, fail)
    md5s = {base: idx_md5(array, MAGIC[base]) for base, array in zip(IDX_FILES, raw, strict=True)}
    if spec.md5 is not None:
        for base in IDX_FILES:
            if md5s[base] != spec.md5[base]:
                raise fail(
                    f"content of {base} has md5 {md5s[base]}, expected {spec.md5[base]} "
                    f"(corrupt or modified data); {REFETCH}"
                )
    return md5s
