"""Check that the hand-written references compute the library's loss and gradient (not timed).

    python benchmarks/check_references.py            # 784-[400]-20, batch 64, float64
    python benchmarks/check_references.py --smoke    # a tiny network

For each estimator of bench_train.py, on the same random draws (the same seed before each):
value and gradient of every parameter of ``_common.RefVAE``'s loss against the library's
training loss, both its fast path (``TrainingLoss`` between validated steps: the VAE's own
plain-torch log weights) and the Pyro program (``elbo.differentiable_loss``). For ``stl`` and
``dreg`` also against a third, independent formulation: log q from ``torch.distributions.Normal``
at detached (loc, scale) for STL; for DReG, d log w_k / dz_k by ``torch.autograd.grad``,
multiplied by w~_k^2 and sent into the encoder by ``z.backward``, and the decoder's gradient from
the surrogate sum_k w~_k log w_k with z detached. Prints the largest relative difference
(max |g - g_ref| / max |g_ref|, over all parameters) and exits 1 if any exceeds ``--tol``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_train as bt  # noqa: E402
from _common import RefVAE, load_images, markdown_table  # noqa: E402

from pyro_vae import VAE, make_elbo  # noqa: E402
from pyro_vae.training.loss import TrainingLoss  # noqa: E402


def _grads(module, loss_fn):
    module.zero_grad(set_to_none=True)
    value = loss_fn()
    value.backward()
    return float(value.detach()), [p.grad.detach().clone() for p in module.parameters()]


def _independent(ref: RefVAE, est: str, x, num_data, k):
    """STL / DReG written a second way (see the module docstring): ``() -> loss`` whose
    ``backward`` leaves the gradients in ``ref``."""

    def stl():
        loc, scale = ref.encode(x)
        z = loc + scale * torch.randn((k, *loc.shape), dtype=x.dtype)
        logits = ref.decode(z)
        log_px = -F.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none"
        ).sum(-1)
        prior = torch.distributions.Normal(torch.zeros_like(loc), torch.ones_like(loc))
        q = torch.distributions.Normal(loc.detach(), scale.detach())
        log_w = log_px + prior.log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
        return -(num_data / len(x)) * log_w.mean(0).sum()

    def dreg():
        c = num_data / len(x)
        loc, scale = ref.encode(x)
        z = loc + scale * torch.randn((k, *loc.shape), dtype=x.dtype)
        zd = z.detach().requires_grad_()
        log_w = _log_w_at(ref, x, zd, loc.detach(), scale.detach())
        w = torch.softmax(log_w.detach(), 0)
        (dlogw_dz,) = torch.autograd.grad(log_w.sum(), zd, retain_graph=True)
        # encoder: -c * sum_k w~_k^2 dlog w_k/dz_k . dz_k/dphi
        z.backward(-c * w.pow(2).unsqueeze(-1) * dlogw_dz)
        # decoder: -c * sum_k w~_k d log p(x, z_k) at z_k fixed (log q holds no decoder weights)
        surrogate = -c * (w * log_w).sum()
        value = -c * (log_w.detach().logsumexp(0) - math.log(k)).sum()
        # returned so that the caller's backward() adds the decoder part: zd is a leaf outside
        # the encoder, so nothing more reaches the encoder
        return value + (surrogate - surrogate.detach())

    return {"stl": stl, "dreg": dreg}[est]


def _log_w_at(ref, x, z, loc, scale):
    logits = ref.decode(z)
    log_px = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(
        -1
    )
    d = z.shape[-1]
    log_pz = -0.5 * z.pow(2).sum(-1) - 0.5 * d * math.log(2 * math.pi)
    log_qz = (
        -0.5 * ((z - loc) / scale).pow(2).sum(-1)
        - scale.log().sum(-1)
        - 0.5 * d * math.log(2 * math.pi)
    )
    return log_px + log_pz - log_qz


def _rel(a, b):
    num = max(float((g - h).abs().max()) for g, h in zip(a, b, strict=True))
    den = max(float(h.abs().max()) for h in b)
    return num / den


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--tol", type=float, default=1e-9)
    args = p.parse_args(argv)
    torch.set_default_dtype(torch.float64)
    cfg = dict(
        x_dim=784, z_dim=8 if args.smoke else 20, hidden_dims=(32,) if args.smoke else (400,)
    )
    torch.manual_seed(0)
    train_x, _ = load_images(args.smoke, torch.device("cpu"), n_train=4096)
    x = torch.bernoulli(train_x[:64].double())
    num_data = 60000
    template = VAE(**cfg)
    # a few Adam steps first, so that the weights are not the (symmetric) initial ones
    warm = bt.Trainer(
        template.parameters(),
        bt.library_step(template, make_elbo("trace")),
        train_x.double(),
        64,
        lr=1e-3,
    )
    for _ in range(5):
        warm()
    rows, worst = [], 0.0
    for label, (est, k, ref_loss) in bt.ESTIMATORS.items():
        for seed in range(args.seeds):
            ref = RefVAE.from_pyro(template)
            vae = bt.new_vae(cfg, template, "cpu")
            elbo = make_elbo(est, k)
            fast = TrainingLoss(vae, elbo, first_step=1)  # step 1: the VAE's own log weights
            candidates = {
                "library fast path": (vae, lambda fast=fast: fast(x, num_data)),
                "library Pyro program": (
                    vae,
                    lambda elbo=elbo, vae=vae: elbo.differentiable_loss(
                        vae.model, vae.guide, x, num_data=num_data
                    ),
                ),
            }
            if est in ("stl", "dreg"):
                candidates["independent formulation"] = (
                    ref,
                    _independent(ref, est, x, num_data, k),
                )
            torch.manual_seed(100 + seed)
            v_ref, g_ref = _grads(ref, lambda ref=ref, f=ref_loss: f(ref, x, num_data))
            for name, (module, fn) in candidates.items():
                torch.manual_seed(100 + seed)
                v, g = _grads(module, fn)
                if module is vae:  # same parameter order? compare by the reference's names
                    g = _in_ref_order(vae, ref, g)
                dv, dg = abs(v - v_ref) / abs(v_ref), _rel(g, g_ref)
                worst = max(worst, dv, dg)
                if seed == 0 or max(dv, dg) > args.tol:
                    rows.append([label, seed, name, f"{dv:.1e}", f"{dg:.1e}"])
            assert fast.uses_model_log_weights, label
    print(
        markdown_table(
            ["estimator", "seed", "against the reference", "value rel. diff", "gradient rel. diff"],
            rows,
        )
    )
    ok = worst <= args.tol
    print(
        f"\nlargest relative difference {worst:.1e} (tolerance {args.tol:.0e}): "
        f"{'OK' if ok else 'FAILED'}"
    )
    return 0 if ok else 1


def _in_ref_order(vae, ref, grads):
    """``vae``'s gradients (in vae.parameters() order) reordered to ref.parameters()' order."""
    names = [n for n, _ in vae.named_parameters()]
    by_name = dict(zip(names, grads, strict=True))
    rename = {
        "enc_hidden.": "encoder.net.hidden.",
        "enc_out.": "encoder.net.out.",
        "dec_hidden.": "decoder.hidden.",
        "dec_out.": "decoder.out.",
    }
    out = []
    for n, _ in ref.named_parameters():
        for new, old in rename.items():
            if n.startswith(new):
                out.append(by_name[old + n[len(new) :]])
                break
        else:
            raise KeyError(n)
    return out


if __name__ == "__main__":
    sys.exit(main())
