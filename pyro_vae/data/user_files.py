"""Users' own data sets from a file or a folder: ``.npy``, ``.npz``, ``.pt``, or PNG/JPEG images.

:func:`load_user_data` (what ``load_dataset(PATH)`` and ``--dataset PATH`` call) reads

- ``.npy``: one array of images (``numpy.load(allow_pickle=False)``);
- ``.npz``: named arrays (``allow_pickle=False``), see :data:`KEYS`: ``train`` and ``test`` with
  optional ``train_labels`` and ``test_labels``, or ``x`` with optional ``y`` (one array, split
  here); ``x_train``/``y_train``/``x_test``/``y_test`` and ``train_x``/``train_y``/... are
  accepted too, and a file with a single array of any name (``np.savez(f, x)``) is that array;
- ``.pt``/``.pth``: a tensor, or a dict of tensors with the same names
  (``torch.load(weights_only=True)``);
- a folder of PNG/JPEG images (see :mod:`.image_folder`; needs Pillow).

Images are ``[N, H, W]``, ``[N, C, H, W]``, ``[N, H, W, C]`` (C = 1 or 3) or flat ``[N, D]``;
the image shape is taken from the array, ``D`` a perfect square gives ``sqrt(D) x sqrt(D)``, and
any other ``D`` needs ``image_shape`` (``--image-shape 1,8,8``). Values: integer pixels
``0..255`` are bytes and become ``byte / 255``; integers ``0``/``1`` and booleans are binary and
stay as they are; floats are used as they are (the likelihood's support is checked by training:
a Bernoulli needs ``[0, 1]`` for its dynamic binarization, a continuous Bernoulli ``[0, 1]``, a
Gaussian any real number). Labels are 1-D integer class indices or strings (class names). With
only one array the images are split here at random with a fixed seed (:data:`SPLIT_SEED`),
:data:`TEST_FRACTION` of them for the test set; the returned :class:`ImageData`'s ``source``
states the split.
"""

from __future__ import annotations

import math
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .arrays import as_tensor
from .errors import CorruptDataError, DatasetNotFoundError, DatasetWarning
from .image_data import ImageData

__all__ = [
    "FILE_SUFFIXES",
    "KEYS",
    "SPLIT_SEED",
    "TEST_FRACTION",
    "is_user_path",
    "load_user_data",
]

FILE_SUFFIXES = (".npy", ".npz", ".pt", ".pth")

#: The fraction of the images held out for testing when a file has only one array.
TEST_FRACTION = 0.1
#: The seed of that random split (a ``torch.Generator`` on the CPU).
SPLIT_SEED = 0

#: The names of the arrays in a ``.npz`` file or a ``.pt`` dict, each role's first name the
#: documented one and the others accepted.
KEYS: dict[str, tuple[str, ...]] = {
    "train": ("train", "x_train", "train_x", "train_images"),
    "test": ("test", "x_test", "test_x", "test_images"),
    "train_labels": ("train_labels", "y_train", "train_y"),
    "test_labels": ("test_labels", "y_test", "test_y"),
    "x": ("x", "images", "data"),
    "y": ("y", "labels", "targets"),
}

_FORMATS = (
    "a .npy, .npz or .pt file, or a folder of PNG/JPEG images (mnist and fashion-mnist are the "
    "built-in names)"
)
_KEY_HELP = (
    "name the arrays train and test (optional train_labels, test_labels), or x alone (optional "
    "y) to have it split here, e.g. np.savez(path, train=x_train, test=x_test)"
)


def is_user_path(name: str | os.PathLike) -> bool:
    """Whether ``name`` means a file or folder rather than a built-in data set's name: a path
    object, an existing path, or a name ending in one of :data:`FILE_SUFFIXES`."""
    if isinstance(name, os.PathLike):
        return True
    text = str(name)
    return Path(text).expanduser().exists() or Path(text).suffix.lower() in FILE_SUFFIXES


# ---------------------------------------------------------------------------------- reading


def _read_numpy(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    """The array of a ``.npy`` or the named arrays of a ``.npz`` (told apart by their first
    bytes, not the suffix), read with ``allow_pickle=False``."""
    with open(path, "rb") as fh:
        magic = fh.read(6)
        fh.seek(0)
        if magic[:4] != b"PK\x03\x04" and magic != b"\x93NUMPY":
            raise CorruptDataError(
                f"{path} is not a numpy .npy or .npz file (it starts with {magic!r}); save it "
                "with np.save or np.savez"
            )
        try:
            loaded = np.load(fh, allow_pickle=False)
            if isinstance(loaded, np.ndarray):
                return loaded
            with loaded:
                return {k: loaded[k] for k in loaded.files}
        except ValueError as e:
            if "pickle" in str(e):
                raise _pickled(path) from e
            raise CorruptDataError(f"could not read {path} ({e})") from e
        except (OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
            raise CorruptDataError(f"could not read {path} ({e}); save it again") from e


def _pickled(path: Path) -> ValueError:
    return ValueError(
        f"{path} holds Python objects (a pickle), which are not loaded (allow_pickle=False, for "
        "safety); save plain numeric arrays, e.g. np.save(path, x.astype('float32'))"
    )


def _read_pt(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        raise CorruptDataError(
            f"could not read {path} with torch.load(weights_only=True) ({' '.join(str(e).split())}"
            "); save a tensor or a dict of tensors, e.g. torch.save({'train': x}, path)"
        ) from e
    if isinstance(obj, torch.Tensor):
        return _tensor_array(obj, path.name)
    if isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): _tensor_array(v, f"{path.name}[{k!r}]") for k, v in obj.items()}
    raise TypeError(
        f"{path} holds a {type(obj).__name__}; a .pt data set is a tensor of images or a dict of "
        "tensors named like a .npz's arrays, e.g. torch.save({'train': x_train, 'test': x_test}, "
        "path)"
    )


def _tensor_array(t: torch.Tensor, what: str) -> np.ndarray:
    if t.is_complex():
        raise TypeError(f"{what} is a complex tensor ({t.dtype}); images must be real numbers")
    t = t.detach().cpu()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return t.numpy()


def _roles(arrays: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    """``arrays`` under the role names of :data:`KEYS`, checked for a consistent set."""
    if not arrays:
        raise ValueError(f"{path} holds no arrays; {_KEY_HELP}")
    if len(arrays) == 1:
        (key,) = arrays
        if not any(key in names for names in KEYS.values()):
            return {"x": arrays[key]}  # np.savez(path, x) names it arr_0
    synonym = {name: role for role, names in KEYS.items() for name in names}
    unknown = sorted(k for k in arrays if k not in synonym)
    if unknown:
        raise ValueError(
            f"{path} has arrays named {unknown} that are not data-set names; {_KEY_HELP}"
        )
    roles: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        role = synonym[key]
        if role in roles:
            same = [k for k in arrays if synonym[k] == role]
            raise ValueError(f"{path} has {same}, which are the same array ({role}); keep one")
        roles[role] = value
    _check_roles(set(roles), path)
    return roles


def _check_roles(roles: set[str], path: Path) -> None:
    if "x" in roles and roles & {"train", "test"}:
        raise ValueError(f"{path} has both x and a train/test array; {_KEY_HELP}")
    needs = {"test": "train", "train_labels": "train", "test_labels": "test", "y": "x"}
    for role, needed in needs.items():
        if role in roles and needed not in roles:
            raise ValueError(f"{path} has {role} but no {needed} array; {_KEY_HELP}")
    if "test" in roles and ("train_labels" in roles) != ("test_labels" in roles):
        have = "train_labels" if "train_labels" in roles else "test_labels"
        raise ValueError(
            f"{path} has {have} but not the other split's labels: give labels for both splits "
            "or for neither"
        )


# ------------------------------------------------------------------------------ the arrays


def _image_shape(x: np.ndarray, given: Sequence[int] | None, what: str) -> tuple[np.ndarray, tuple]:
    """``x`` channels first, and the image shape: ``(H, W)`` or ``(C, H, W)`` with C = 3."""
    if x.ndim < 2:
        raise ValueError(
            f"{what} has shape {list(x.shape)}; images are [N, H, W], [N, C, H, W] or flat [N, D]"
        )
    if x.ndim > 4:
        raise ValueError(
            f"{what} has shape {list(x.shape)} (more than 4 dimensions); images are [N, H, W], "
            "[N, C, H, W] or flat [N, D]"
        )
    if given is not None:
        shape = tuple(int(s) for s in given)
        d = math.prod(x.shape[1:])
        if len(shape) not in (2, 3) or math.prod(shape) != d:
            raise ValueError(
                f"image shape {shape} does not fit {what}: its {list(x.shape)} has {d} values per "
                f"image; give --image-shape C,H,W (or H,W) with C*H*W = {d}"
            )
        if len(shape) == 3 and shape[0] not in (1, 3):
            raise ValueError(
                f"image shape {shape} has {shape[0]} channels; images have 1 (grayscale) or 3 (RGB)"
            )
        if len(shape) == 3 and x.ndim == 4 and x.shape[1:] == (*shape[1:], shape[0]):
            x = np.moveaxis(x, 3, 1)  # channels last, e.g. [N, 32, 32, 3] for (3, 32, 32)
        return x, shape[1:] if len(shape) == 3 and shape[0] == 1 else shape
    if x.ndim == 2:
        d = x.shape[1]
        side = math.isqrt(d)
        if side * side != d:
            raise ValueError(
                f"{what} is flat, {list(x.shape)}, and {d} is not a square number of pixels, so "
                "the image shape cannot be inferred; give it, e.g. --image-shape 1,H,W (or "
                f"image_shape=(1, H, W)) with H*W = {d}, or save the images as [N, H, W]"
            )
        return x, (side, side)
    if x.ndim == 3:
        return x, tuple(x.shape[1:])
    if x.shape[1] in (1, 3):
        c, h, w = x.shape[1:]
    elif x.shape[3] in (1, 3):  # channels last, e.g. [N, 32, 32, 3]
        x = np.moveaxis(x, 3, 1)
        c, h, w = x.shape[1:]
    else:
        raise ValueError(
            f"{what} has shape {list(x.shape)}: neither [N, C, H, W] nor [N, H, W, C] with 1 or "
            "3 channels; give --image-shape C,H,W to read each image's values in that order"
        )
    return x, (h, w) if c == 1 else (c, h, w)


def _pixel_scale(arrays: Sequence[np.ndarray], path: Path) -> float:
    """1/255 for integer bytes, 1 for binary integers, booleans and floats (one for all)."""
    if not all(a.dtype.kind in "iu" for a in arrays):
        return 1.0
    lo = min(int(a.min()) for a in arrays if a.size)
    hi = max(int(a.max()) for a in arrays if a.size)
    if lo < 0 or hi > 255:
        raise ValueError(
            f"{path} has integer pixels from {lo} to {hi}; integers are read as bytes 0..255 "
            "(scaled by 1/255) or binary 0/1: scale the images to [0, 1] and save them as "
            "floats, e.g. (x / x.max()).astype('float32')"
        )
    if hi <= 1:
        return 1.0
    if hi < 64:
        warnings.warn(
            f"{path} has integer pixels 0..{hi}, read as bytes out of 255 (so the brightest is "
            f"{hi / 255:.2f}); if {hi} means white, save (x / {hi}).astype('float32') instead",
            DatasetWarning,
            stacklevel=4,
        )
    return 1.0 / 255.0


def _pixels(x: np.ndarray, scale: float, what: str) -> torch.Tensor:
    if x.dtype.kind not in "biuf":
        raise TypeError(
            f"{what} has dtype {x.dtype}; images must be numbers (bool, integer or float)"
        )
    try:
        t = as_tensor(x)  # float32 [N, D], checked for NaN and infinities
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from e
    return t.mul_(scale) if scale != 1.0 else t


def _labels(
    y: np.ndarray | None, n: int, what: str, names: tuple[str, ...]
) -> tuple[torch.Tensor | None, tuple[str, ...]]:
    """int64 labels ``[n]`` (strings become indices into the sorted names)."""
    if y is None:
        return None, names
    if y.ndim != 1:
        hint = " (one-hot labels: save y.argmax(1))" if y.ndim == 2 else ""
        raise ValueError(
            f"{what} has shape {list(y.shape)}; labels are 1-D class indices [N]{hint}"
        )
    if len(y) != n:
        raise ValueError(
            f"{what} has {len(y)} entries but there are {n} images; give one label per image"
        )
    if y.dtype.kind in "US":
        return None, names  # resolved with the other split's names, see _string_labels
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all()):
        raise ValueError(f"{what} holds non-integer values; labels are class indices 0, 1, ...")
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{what} has dtype {y.dtype}; labels are integers or strings")
    if len(y) and y.min() < 0:
        raise ValueError(f"{what} has a negative label ({int(y.min())}); labels are 0, 1, ...")
    return torch.from_numpy(y.astype(np.int64)), names


def _string_labels(ys: Sequence[np.ndarray]) -> tuple[list[torch.Tensor], tuple[str, ...]]:
    names = tuple(sorted({str(v) for y in ys for v in y.tolist()}))
    index = {name: i for i, name in enumerate(names)}
    return [torch.tensor([index[str(v)] for v in y.tolist()], dtype=torch.int64) for y in ys], names


def _split(n: int, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if n < 2:
        raise ValueError(f"{path} has {n} image(s); a train/test split needs at least 2")
    n_test = min(n - 1, max(1, round(TEST_FRACTION * n)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    return order[n_test:].sort().values, order[:n_test].sort().values


# ------------------------------------------------------------------------------- loading


def _read(path: Path) -> tuple[dict[str, Any], tuple[str, ...], str]:
    """The role arrays of ``path``, its class names (image folders) and a word for its kind."""
    if path.is_dir():
        from .image_folder import read_image_folder

        splits, names = read_image_folder(path)
        roles: dict[str, Any] = {}
        for split, part in splits.items():
            xk, yk = ("x", "y") if split == "all" else (split, f"{split}_labels")
            roles[xk] = part.images
            if part.labels is not None:
                roles[yk] = part.labels
        return roles, names, "image folder"
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz", ".pt", ".pth"):
        obj = _read_pt(path) if suffix in (".pt", ".pth") else _read_numpy(path)
        roles = {"x": obj} if isinstance(obj, np.ndarray) else _roles(obj, path)
        return roles, (), f"{suffix} file"
    raise ValueError(
        f"{path} has the unknown extension {path.suffix or '(none)'!r}; --dataset takes {_FORMATS}"
    )


def load_user_data(path: str | os.PathLike, image_shape: Sequence[int] | None = None) -> ImageData:
    """Load a data set from a ``.npy``, ``.npz`` or ``.pt`` file or a folder of images.

    Args:
        path: the file or folder (see the module docstring for the formats and array names).
        image_shape: ``(C, H, W)`` or ``(H, W)`` of one image; default: inferred.

    Returns:
        :class:`ImageData` named ``path`` as given, with float32 ``[N, D]`` images (bytes scaled
        to ``[0, 1]``), labels or None, ``image_shape`` ``(H, W)`` or ``(3, H, W)``, and a
        ``source`` that states the file and the train/test split.

    Raises:
        DatasetNotFoundError: no such file or folder.
        ValueError / TypeError: an unknown extension, unknown array names, wrong shapes,
            NaN or infinite values, labels of the wrong length, integer pixels outside 0..255;
            the message names the problem and the fix.
        CorruptDataError: a file that cannot be read (or a pickle).
        MissingExtraError: a folder of images without Pillow installed.
    """
    given = Path(path).expanduser()
    if not given.exists():
        raise DatasetNotFoundError(f"no such file or folder: {given}; --dataset takes {_FORMATS}")
    resolved = given.resolve()
    roles, names, kind = _read(given)
    shaped, shape = _shaped_images(roles, image_shape, given.name)
    scale = _pixel_scale(list(shaped.values()), given)
    xs = {role: _pixels(x, scale, _what(given.name, role)) for role, x in shaped.items()}
    ys, label_names = _split_labels(roles, xs, names, given.name)
    if "x" in xs:
        xs, ys, split = _split_one_array(xs["x"], ys["x"], given)
    else:
        split = f"train {len(xs['train']):,} / test {len(xs['test']):,} images as given"
    labelled = "labelled" if ys["train"] is not None else "unlabelled"
    return ImageData(
        name=str(path),
        train_x=xs["train"],
        train_y=ys["train"],
        test_x=xs["test"],
        test_y=ys["test"],
        image_shape=tuple(int(s) for s in shape),
        source=f"{kind} {resolved}: {split}, {labelled}, image shape {_shape_text(shape)}",
        label_names=label_names,
    )


def _what(name: str, role: str) -> str:
    """How a message names the images of ``role`` in the file ``name``."""
    return name if role == "x" else f"{name} ({role})"


#: the labels' role of each images' role
_LABEL_ROLE = {"train": "train_labels", "test": "test_labels", "x": "y"}


def _shaped_images(
    roles: dict[str, Any], image_shape: Sequence[int] | None, name: str
) -> tuple[dict[str, np.ndarray], tuple]:
    """``({role: images channels first}, image shape)`` of the train and test arrays (or the
    one array ``x``), which must share the image shape."""
    splits = ("train", "test") if "train" in roles else ("x",)
    shaped, shape = {}, None
    for role in splits:
        x, s = _image_shape(roles[role], image_shape, _what(name, role))
        if shape is not None and s != shape:
            raise ValueError(
                f"{name}: the train images are {shape} but the test images are {s}; "
                "both splits need the same image shape"
            )
        shaped[role], shape = x, s
    return shaped, shape


def _split_labels(
    roles: dict[str, Any], xs: dict[str, torch.Tensor], names: tuple[str, ...], name: str
) -> tuple[dict[str, torch.Tensor | None], tuple[str, ...]]:
    """``({role: int64 labels or None}, class names)`` for the images ``xs``: every split's
    labels numbers, or every split's strings (indices into their sorted names)."""
    ys, label_names = {}, names
    for role, x in xs.items():
        label = _LABEL_ROLE[role]
        ys[role], label_names = _labels(roles.get(label), len(x), f"{name} ({label})", label_names)
    raw = [roles[_LABEL_ROLE[r]] for r in xs if _LABEL_ROLE[r] in roles]
    if len({y.dtype.kind in "US" for y in raw}) > 1:
        raise TypeError(
            f"{name}: one split's labels are strings and the other's numbers; use one kind"
        )
    if raw and raw[0].dtype.kind in "US":
        converted, label_names = _string_labels(raw)
        ys = dict(zip(xs, converted, strict=True))
    return ys, label_names


def _split_one_array(x: torch.Tensor, y: torch.Tensor | None, given: Path) -> tuple:
    """``({"train", "test"} images, the same of labels, a sentence stating the split)`` of
    one array, split at random with :data:`SPLIT_SEED`."""
    train_idx, test_idx = _split(len(x), given)
    xs = {"train": x[train_idx], "test": x[test_idx]}
    ys = {
        "train": None if y is None else y[train_idx],
        "test": None if y is None else y[test_idx],
    }
    split = (
        f"one array of {len(x):,} images, split at random (seed {SPLIT_SEED}) into "
        f"{len(train_idx):,} train / {len(test_idx):,} test"
    )
    return xs, ys, split


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in (shape if len(shape) == 3 else (1, *shape)))
