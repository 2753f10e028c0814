"""How the estimators cut their work: the elements of one tile on a device, and the chunks that
cover a range of datapoints, samples or chains."""

from __future__ import annotations

from collections.abc import Iterator

import torch

__all__ = [
    "CPU_TILE_ELEMENTS",
    "CUDA_TILE_ELEMENTS",
    "GRAPH_TILES",
    "MIN_CHUNK",
    "chunks",
    "tile_elements",
]

#: elements of one ``[k, B, D]`` tile of the K-sample evaluation on a CPU: a few MB, so that the
#: decoder's output and the log-likelihood computed from it stay in the caches (an elementwise
#: pass costs about 1.3 ns an element there and 3-5 ns out of them, see benchmarks/RESULTS.md)
CPU_TILE_ELEMENTS = 2**20
#: ... and on a GPU, where larger kernels fill the device
CUDA_TILE_ELEMENTS = 2**25
#: the default batch leaves room for tiles of at least min(K, this) samples: the Pyro program
#: runs the guide once per tile, and every tile pays the interpreter's fixed cost
MIN_CHUNK = 128
#: tiles in one ``[chains or samples, B, D]`` tensor of work that keeps a gradient graph (AIS's
#: leapfrog steps, the gaps' local fits): 2**22 elements on a CPU, the size both have always
#: had there and their tests and benchmarks ran at (not measured on a GPU)
GRAPH_TILES = 4


def tile_elements(device: torch.device | str, *, keeps_graph: bool = False) -> int:
    """Elements of one ``[k, B, D]`` tile of the evaluation on ``device``: cache-sized on a CPU,
    large on a GPU. The memory of an evaluation is a few tiles, whatever K and N are. With
    ``keeps_graph``: :data:`GRAPH_TILES` of them on a CPU, for work with a backward pass."""
    if torch.device(device).type != "cpu":
        return CUDA_TILE_ELEMENTS  # already large: a graph of several would not fit small GPUs
    return CPU_TILE_ELEMENTS * GRAPH_TILES if keeps_graph else CPU_TILE_ELEMENTS


def chunks(total: int, size: int, first: int | None = None) -> Iterator[tuple[int, int]]:
    """``(start, size)`` pairs covering ``range(total)``; the first of ``first`` if given."""
    start = 0
    if first is not None and total > first:
        yield 0, first
        start = first
    for s in range(start, total, size):
        yield s, min(size, total - s)
