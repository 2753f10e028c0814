"""Probe (not a maintained benchmark): would skipping a ReLU decoder's inactive hidden units pay
in the K-sample evaluation?

    python benchmarks/results/sixteenth_session/relu_skip_probe.py --run runs/mnist

In a ``[rows, 400] -> 784`` product, a hidden unit that is zero in every row of a tile adds
exactly nothing, so the product over the active units alone gives the same logits (up to the
GEMM's summation order). This measures, on the flagship's trained decoder and its own guide's
draws: how many of the 400 units are active per sample, per evaluation tile (the default
``[133, 10]``: 133 samples of 10 images) and per one-image tile (``[1337, 1]``); and the decoder
plus the Bernoulli log-likelihood value per one-image tile, dense against skipping, one thread,
CPU time, interleaved rounds (A B B A), the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import pyro_vae as pv


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run", default="runs/mnist")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--k", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    vae = pv.load_model(args.run)
    x = pv.binarize_static(pv.load_dataset("mnist").test_x)[: args.images]
    w1, b1 = vae.decoder.hidden[0].weight.detach(), vae.decoder.hidden[0].bias.detach()
    w2, b2 = vae.decoder.out.weight.detach(), vae.decoder.out.bias.detach()
    w2_rows = w2.t().contiguous()  # [400, 784]: a unit's outgoing weights, one row each
    with torch.no_grad():
        loc, scale = vae.encoder.loc_scale(x)
        z = loc + scale * torch.randn(args.k, *loc.shape)  # [K, B, 20]
        active = (
            torch.relu(torch.addmm(b1, z.reshape(-1, 20), w1.t())).reshape(args.k, args.images, -1)
            > 0
        )  # [K, B, 400]
        print(f"units active in one sample: {active.float().mean().item():.1%} of 400")
        for rows, imgs in ((133, 10), (1337, 1)):
            counts = [
                active[k0 : k0 + rows, b0 : b0 + imgs].flatten(0, 1).any(0).sum().item()
                for b0 in range(0, args.images, imgs)
                for k0 in range(0, args.k, rows)
            ]
            print(
                f"units active in a [{rows}, {imgs}] tile: mean {statistics.mean(counts):.1f},"
                f" min {min(counts)}, max {max(counts)}"
            )

        tiles = [(z[:1337, i], x[i]) for i in range(args.images)]

        def value(logits, xi):
            return -torch.nn.functional.softplus((1 - 2 * xi) * logits).sum(-1)

        def dense(zi, xi):
            h = torch.relu(torch.addmm(b1, zi, w1.t()))
            return value(torch.addmm(b2, h, w2.t()), xi)

        def skip(zi, xi):
            h = torch.relu(torch.addmm(b1, zi, w1.t()))
            idx = (h.amax(0) > 0).nonzero().squeeze(1)
            return value(torch.addmm(b2, h.index_select(1, idx), w2_rows.index_select(0, idx)), xi)

        diff = max((dense(*t) - skip(*t)).abs().max().item() for t in tiles[:5])
        print(f"largest |dense - skip| of a log-likelihood: {diff:.2e} nats")

        def timed(fn):
            start = time.process_time()
            for t in tiles:
                fn(*t)
            return (time.process_time() - start) / (len(tiles) * 1337)

        timed(dense), timed(skip)
        per_round = []
        for _ in range(args.rounds):
            a, b, c, d = timed(dense), timed(skip), timed(skip), timed(dense)
            per_round.append(((a + d) / 2, (b + c) / 2))
        dense_us = statistics.median(r[0] for r in per_round) * 1e6
        skip_us = statistics.median(r[1] for r in per_round) * 1e6
        ratios = sorted(r[0] / r[1] for r in per_round)
        print(
            f"decoder + likelihood value, one-image tile [1337, 1]: dense {dense_us:.2f} us a "
            f"sample, skipping {skip_us:.2f} us; dense / skipping {statistics.median(ratios):.3f}"
            f" [{ratios[len(ratios) // 4]:.3f}, {ratios[(3 * len(ratios)) // 4]:.3f}]"
        )


if __name__ == "__main__":
    main()
