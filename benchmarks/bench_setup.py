"""``train()``'s fixed set-up cost: the seconds from the call to the first training step.

On MNIST-sized data (60,000 x 784, float32): the data checks (shape, finiteness, the
likelihood's support or, with dynamic binarization, [0, 1]), moving the data, building the
optimizer and the loss. Each case runs in a fresh VAE; "again" is a second ``train()`` on the
same tensor, which the data checks' memo answers. One thread, wall clock, best of ``--repeat``.

    python benchmarks/bench_setup.py            # about 20 s
    python benchmarks/bench_setup.py --smoke    # seconds, for CI
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, markdown_table  # noqa: E402

import pyro_vae as pv  # noqa: E402
from pyro_vae.training import loss as loss_module  # noqa: E402


class _FirstStep(Exception):
    pass


def seconds_to_first_step(data: torch.Tensor, binarize: str | None) -> float:
    """Wall seconds from ``train(...)`` to the first call of the training loss."""
    vae = pv.VAE(data.shape[1], 20, (400,))
    config = pv.TrainConfig(epochs=1, binarize=binarize, progress=False, eval_every=0)
    original = loss_module.TrainingLoss.forward
    stamp = {}

    def first(self, *a, **k):
        stamp["t"] = time.perf_counter()
        raise _FirstStep

    loss_module.TrainingLoss.forward = first
    try:
        t0 = time.perf_counter()
        pv.train(vae, data, config=config)
    except _FirstStep:
        pass
    finally:
        loss_module.TrainingLoss.forward = original
    return stamp["t"] - t0


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="6,000 rows, one repeat")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    n = 6_000 if args.smoke else 60_000
    repeat = 1 if args.smoke else args.repeat
    g = torch.Generator().manual_seed(0)
    gray = torch.rand(n, 784, generator=g)
    cases = {
        "grayscale in [0, 1], binarize='dynamic'": (gray, "dynamic"),
        "binary data, Bernoulli support check": (torch.bernoulli(gray, generator=g), None),
    }
    print(f"# train() set-up cost\n\n{environment(torch.device('cpu'))}\n")
    rows, raw = [], {}
    for label, (data, binarize) in cases.items():
        fresh = []
        for _ in range(repeat):
            fresh.append(seconds_to_first_step(data.clone(), binarize))  # an unchecked tensor
        again = [seconds_to_first_step(data, binarize) for _ in range(repeat + 1)][1:]
        raw[label] = {"fresh": fresh, "again": again}
        rows.append([label, f"{min(fresh):.3f}", f"{min(again):.3f}"])
    table = markdown_table(
        [f"{n:,} x 784 float32", "first train() on the tensor (s)", "again (s)"], rows
    )
    print(table)
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1))
    assert all(v > 0 for r in raw.values() for vs in r.values() for v in vs)
    return raw


if __name__ == "__main__":
    main()
