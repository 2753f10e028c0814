""":class:`ImageData`, a labelled image data set with its train/test split, and its construction
from the original IDX bytes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .idx import RawData
from .specs import SPECS

__all__ = ["ImageData", "to_image_data"]


@dataclass(frozen=True, eq=False, repr=False)
class ImageData:
    """A labelled image data set with its train/test split.

    Attributes:
        name: data set name, e.g. ``"mnist"``.
        train_x: float32 ``[N_train, H*W]``, pixel bytes / 255, so values lie in ``[0, 1]`` and the
            original bytes are ``(train_x * 255).round()``.
        train_y: int64 ``[N_train]`` class labels, or None for an unlabelled data set.
        test_x: float32 ``[N_test, H*W]``, as ``train_x``.
        test_y: int64 ``[N_test]``, or None (with ``train_y``).
        image_shape: ``(H, W)`` (grayscale) or ``(C, H, W)`` (channels first);
            ``train_x.reshape(-1, *image_shape)`` gives the images.
        source: where the data came from, for logs and reports.
        label_names: the class names, indexed by label, where the data set has its own (e.g.
            the subfolders of an image folder); empty: the known data set's, or the label numbers.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor | None
    test_x: torch.Tensor
    test_y: torch.Tensor | None
    image_shape: tuple[int, ...] = (28, 28)
    source: str = "in-memory"
    label_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        d = int(np.prod(self.image_shape))
        if (self.train_y is None) != (self.test_y is None):
            raise ValueError("ImageData needs labels for both splits or for neither")
        for split, x, y in (
            ("train", self.train_x, self.train_y),
            ("test", self.test_x, self.test_y),
        ):
            if x.ndim != 2 or x.shape[1] != d:
                raise ValueError(
                    f"ImageData {split}_x must be [N, {d}] for image_shape {self.image_shape}, "
                    f"got {tuple(x.shape)}"
                )
            if y is not None and (y.ndim != 1 or y.shape[0] != x.shape[0]):
                raise ValueError(
                    f"ImageData {split}_y must be [{x.shape[0]}], got {tuple(y.shape)}"
                )

    @property
    def num_pixels(self) -> int:
        """``H * W`` (times ``C``), the length of one flattened image."""
        return int(np.prod(self.image_shape))

    @property
    def has_labels(self) -> bool:
        """Whether the data set has class labels (``train_y`` and ``test_y``)."""
        return self.train_y is not None

    @property
    def class_names(self) -> tuple[str, ...]:
        """Human-readable class names, indexed by label (empty without labels)."""
        if self.label_names:
            return self.label_names
        spec = SPECS.get(self.name)
        if spec is not None:
            return spec.class_names
        if self.train_y is None or self.test_y is None:
            return ()
        labels = torch.cat([self.train_y, self.test_y])
        n = int(labels.max().item()) + 1 if labels.numel() else 0
        return tuple(str(i) for i in range(n))

    def __repr__(self) -> str:
        return (
            f"ImageData(name={self.name!r}, train={tuple(self.train_x.shape)}, "
            f"test={tuple(self.test_x.shape)}, image_shape={self.image_shape}, "
            f"source={self.source!r})"
        )


def to_image_data(name: str, raw: RawData, source: str) -> ImageData:
    """The :class:`ImageData` of ``raw``: uint8 images ``[N, 28, 28]`` become float32
    ``[N, 784]`` holding byte / 255, uint8 labels ``[N]`` become int64 ``[N]``."""

    def pixels(images: np.ndarray) -> torch.Tensor:
        flat = images.reshape(len(images), -1)
        # Arrays parsed straight from file bytes are read-only, which torch.from_numpy warns about.
        u8 = torch.from_numpy(flat) if flat.flags.writeable else torch.tensor(flat)
        return u8.to(torch.float32).div_(255.0)

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y.astype(np.int64))

    return ImageData(
        name=name,
        train_x=pixels(raw.train_images),
        train_y=labels(raw.train_labels),
        test_x=pixels(raw.test_images),
        test_y=labels(raw.test_labels),
        image_shape=(28, 28),
        source=source,
    )
