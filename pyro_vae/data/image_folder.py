"""A folder of PNG/JPEG images as uint8 arrays, with class labels from its subfolders.

Three layouts (files with other suffixes and hidden files are ignored):

- ``root/*.png``: one unlabelled set of images;
- ``root/<class>/*.png``: labelled, one subfolder per class (labels in sorted name order);
- ``root/train/...`` and ``root/test/...``: the split as given, each flat or with class
  subfolders (the same for both).

Every image must have the same size. Grayscale images (and colour ones whose three channels are
equal everywhere) give ``[N, H, W]``; colour ones ``[N, 3, H, W]`` (alpha is dropped). Reading
needs Pillow: ``pip install -e ".[images]"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CorruptDataError, MissingExtraError

__all__ = ["IMAGE_SUFFIXES", "FolderSplit", "read_image_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

#: Pillow modes of 8-bit images; 16-bit and float images are refused rather than clipped.
_EIGHT_BIT = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}


@dataclass(frozen=True)
class FolderSplit:
    """The images of one split: uint8 ``[N, H, W]`` or ``[N, 3, H, W]``, int64 labels or None."""

    images: np.ndarray
    labels: np.ndarray | None


def _pillow():
    try:
        from PIL import Image
    except ImportError as e:
        raise MissingExtraError(
            'reading a folder of images needs Pillow: pip install -e ".[images]" '
            "(or pip install pillow)"
        ) from e
    return Image


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        f
        for f in folder.iterdir()
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES
    )


def _subfolders(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_dir() and not f.name.startswith("."))


def _classes(folder: Path) -> tuple[list[tuple[Path, int | None]], tuple[str, ...]]:
    """``[(file, label or None)]`` of a flat or class-per-subfolder folder, and the classes."""
    files, subs = _image_files(folder), _subfolders(folder)
    if files and subs:
        raise ValueError(
            f"{folder} has both images ({files[0].name}, ...) and subfolders ({subs[0].name}, "
            "...): put every image in a class subfolder (labelled) or none (unlabelled)"
        )
    if files:
        return [(f, None) for f in files], ()
    names = tuple(s.name for s in subs)
    entries = [(f, i) for i, s in enumerate(subs) for f in _image_files(s)]
    return entries, names


def _read(entries: list[tuple[Path, int | None]], image_cls) -> tuple[np.ndarray, str]:
    """RGB uint8 ``[N, H, W, 3]`` of the files, and the first file's name (for messages)."""
    arrays = []
    size = None
    first = entries[0][0]
    for path, _ in entries:
        try:
            with image_cls.open(path) as img:
                img.load()
                if img.mode not in _EIGHT_BIT:
                    raise ValueError(
                        f"{path} is a {img.mode} image (16-bit or float); only 8-bit images are "
                        "read: convert them to 8-bit, or save the pixels as a .npy array in [0, 1]"
                    )
                if size is None:
                    size = img.size
                elif img.size != size:
                    raise ValueError(
                        f"{path} is {img.size[0]}x{img.size[1]} pixels but {first} is "
                        f"{size[0]}x{size[1]}: every image must have the same size; resize them "
                        "to one size first"
                    )
                rgb = img.convert("RGBA").convert("RGB") if "A" in img.mode else img.convert("RGB")
                arrays.append(np.asarray(rgb, dtype=np.uint8))
        except OSError as e:  # PIL.UnidentifiedImageError, truncated files
            raise CorruptDataError(
                f"could not read the image {path} ({e}); replace or remove it"
            ) from e
    return np.stack(arrays), str(first)


def _channels_first(rgb: np.ndarray) -> np.ndarray:
    """``[N, H, W]`` where the three channels agree everywhere, else ``[N, 3, H, W]``."""
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
        return np.ascontiguousarray(rgb[..., 0])
    return np.ascontiguousarray(rgb.transpose(0, 3, 1, 2))


def read_image_folder(root: str | Path) -> tuple[dict[str, FolderSplit], tuple[str, ...]]:
    """The images under ``root``: ``({"train": ..., "test": ...} or {"all": ...}, classes)``.

    ``classes`` names the labels (empty when the images are unlabelled). Raises
    :class:`MissingExtraError` without Pillow, ``ValueError`` for an empty folder, mixed layouts
    or images of different sizes, :class:`CorruptDataError` for a file Pillow cannot read.
    """
    image_cls = _pillow()
    root = Path(root)
    subs = {s.name.lower(): s for s in _subfolders(root)}
    if "train" in subs and "test" in subs and not _image_files(root):
        splits = {name: _classes(subs[name]) for name in ("train", "test")}
        (_, train_names), (_, test_names) = splits["train"], splits["test"]
        if train_names != test_names:
            raise ValueError(
                f"{root}/train and {root}/test must have the same class subfolders, got "
                f"{list(train_names)} and {list(test_names)}"
            )
        names = train_names
    else:
        splits = {"all": _classes(root)}
        names = splits["all"][1]
    for split, (entries, _) in splits.items():
        if not entries:
            where = root if split == "all" else root / split
            raise ValueError(
                f"{where} holds no images (looked for {', '.join(IMAGE_SUFFIXES)} files, directly "
                "or one subfolder per class)"
            )
    read = {split: _read(entries, image_cls) for split, (entries, _) in splits.items()}
    shapes = {split: rgb.shape[1:3] for split, (rgb, _) in read.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(
            f"the train images of {root} are {shapes['train']} (H, W) but the test images are "
            f"{shapes['test']}: every image must have the same size"
        )
    # One channel decision for both splits, so train and test have the same shape.
    stacked = np.concatenate([rgb for rgb, _ in read.values()])
    images = _channels_first(stacked)
    out: dict[str, FolderSplit] = {}
    start = 0
    for split, (entries, _) in splits.items():
        n = len(entries)
        labels = None if not names else np.array([y for _, y in entries], dtype=np.int64)
        out[split] = FolderSplit(images[start : start + n], labels)
        start += n
    return out, names
