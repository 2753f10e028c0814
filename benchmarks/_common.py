"""Shared pieces of the benchmarks: the hand-written PyTorch reference VAE, interleaved timing,
statistics and Markdown tables.

The reference is the network a PyTorch user would write by hand for the same model: the same
encoder MLP (-> loc, softplus(raw) + 1e-5), the same decoder MLP (-> Bernoulli logits), the same
N(0, I) prior, with its weights copied from a ``pyro_vae.VAE`` so both start identical.
"""

from __future__ import annotations

import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date

import torch
import torch.nn.functional as F
from torch import nn

LOG_2PI = math.log(2 * math.pi)

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "softplus": nn.Softplus}


# -- the reference network ----------------------------------------------------------------------
class RefVAE(nn.Module):
    """784-[hidden]-z MLP VAE in plain PyTorch (no Pyro, no torch.distributions)."""

    def __init__(self, x_dim: int, z_dim: int, hidden: Sequence[int], activation: str = "relu"):
        super().__init__()
        act = _ACTIVATIONS[activation]

        def mlp(dims):
            layers = []
            for a, b in zip(dims[:-1], dims[1:]):
                layers += [nn.Linear(a, b), act()]
            return nn.Sequential(*layers)

        hidden = [int(h) for h in hidden]
        self.z_dim = int(z_dim)
        self.enc_hidden = mlp([x_dim, *hidden])
        self.enc_out = nn.Linear(hidden[-1], 2 * z_dim)
        self.dec_hidden = mlp([z_dim, *reversed(hidden)])
        self.dec_out = nn.Linear(hidden[0], x_dim)

    @classmethod
    def from_pyro(cls, vae) -> RefVAE:
        """A reference with ``vae``'s architecture and a copy of its current weights."""
        c = vae.config
        if (c.prior, c.likelihood, c.guide) != ("normal", "bernoulli", "normal"):
            raise ValueError("the reference implements the normal/bernoulli/normal VAE only")
        param = next(vae.parameters())
        ref = cls(c.x_dim, c.z_dim, c.hidden_dims, c.activation).to(param.device, param.dtype)
        rename = {
            "encoder.net.hidden.": "enc_hidden.",
            "encoder.net.out.": "enc_out.",
            "decoder.hidden.": "dec_hidden.",
            "decoder.out.": "dec_out.",
        }
        state = {}
        for key, value in vae.state_dict().items():
            for old, new in rename.items():
                if key.startswith(old):
                    state[new + key[len(old) :]] = value.detach().clone()
        ref.load_state_dict(state, strict=True)
        return ref

    def encode(self, x):
        loc, raw = self.enc_out(self.enc_hidden(x)).chunk(2, dim=-1)
        return loc, F.softplus(raw) + 1e-5

    def decode(self, z):
        return self.dec_out(self.dec_hidden(z))

    def log_weights(self, x, num_samples: int, loc=None, scale=None):
        """``log p(x, z_k) - log q(z_k | x)``, ``[K, B]``, z_k = loc + scale * eps_k."""
        if loc is None:
            loc, scale = self.encode(x)
        eps = torch.randn((num_samples, *loc.shape), dtype=loc.dtype, device=loc.device)
        z = loc + scale * eps
        logits = self.decode(z)
        log_px = -F.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none"
        ).sum(-1)
        d = self.z_dim
        log_pz = -0.5 * z.pow(2).sum(-1) - 0.5 * d * LOG_2PI
        # log N(z; loc, scale) with z = loc + scale * eps: the same value and the same gradient.
        log_qz = -0.5 * eps.pow(2).sum(-1) - scale.log().sum(-1) - 0.5 * d * LOG_2PI
        return log_px + log_pz - log_qz

    # Each loss is -(N / B) * sum_n bound_n, exactly the scale Pyro's subsampled data plate uses.
    def loss_trace(self, x, num_data):
        return -(num_data / len(x)) * self.log_weights(x, 1).sum()

    def loss_meanfield(self, x, num_data):
        loc, scale = self.encode(x)
        z = loc + scale * torch.randn_like(loc)
        logits = self.decode(z)
        log_px = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        kl = 0.5 * (scale.pow(2) + loc.pow(2) - 1.0 - 2.0 * scale.log()).sum(-1)
        return -(num_data / len(x)) * (log_px - kl).sum()

    def loss_iwae(self, x, num_data, num_particles):
        log_w = self.log_weights(x, num_particles)
        bound = log_w.logsumexp(0) - math.log(num_particles)
        return -(num_data / len(x)) * bound.sum()

    # The path-derivative estimators. log q(z | x) is evaluated with (loc, scale) detached, so
    # its gradient flows through z only, and one backward gives the path derivative.
    def log_weights_pathwise(self, x, num_samples: int):
        """``(log w [K, B], z [K, B, z_dim])`` with log q at detached (loc, scale)."""
        loc, scale = self.encode(x)
        eps = torch.randn((num_samples, *loc.shape), dtype=loc.dtype, device=loc.device)
        z = loc + scale * eps
        logits = self.decode(z)
        log_px = -F.binary_cross_entropy_with_logits(
            logits, x.expand_as(logits), reduction="none"
        ).sum(-1)
        d = self.z_dim
        log_pz = -0.5 * z.pow(2).sum(-1) - 0.5 * d * LOG_2PI
        loc_, scale_ = loc.detach(), scale.detach()
        log_qz = (
            -0.5 * ((z - loc_) / scale_).pow(2).sum(-1) - scale_.log().sum(-1) - 0.5 * d * LOG_2PI
        )
        return log_px + log_pz - log_qz, z

    def loss_stl(self, x, num_data, num_particles):
        """Sticking the landing (Roeder et al. 2017): the ELBO (mean over K) with log q at
        detached (loc, scale)."""
        log_w, _ = self.log_weights_pathwise(x, num_particles)
        return -(num_data / len(x)) * log_w.mean(0).sum()

    def loss_dreg(self, x, num_data, num_particles):
        """DReG (Tucker et al. 2019) for the diagonal-Normal encoder: the value of the IWAE loss;
        the gradient sum_k w~_k d log p(x, z_k) for the decoder (the IWAE gradient) and
        sum_k w~_k^2 d log w_k / dz_k dz_k / dphi for the encoder. One backward: the surrogate
        sum_k w~_k log w_k (w~ = softmax_k log w, detached; log q at detached (loc, scale)) and a
        hook on z that multiplies the gradient reaching z_k once more by w~_k."""
        log_w, z = self.log_weights_pathwise(x, num_particles)
        w = torch.softmax(log_w.detach(), dim=0)
        if z.requires_grad:
            z.register_hook(lambda grad: grad * w.unsqueeze(-1))
        c = num_data / len(x)
        surrogate = -c * (w * log_w).sum()
        value = -c * (log_w.detach().logsumexp(0) - math.log(num_particles)).sum()
        return value + (surrogate - surrogate.detach())

    @torch.no_grad()
    def log_likelihood(self, data, num_samples, batch_size, chunk_size):
        """K-sample estimate per datapoint with the same batching/chunking as the library's.
        The encoder runs once per batch (what a hand-written loop does)."""
        out = torch.empty(len(data), dtype=data.dtype, device=data.device)
        for start in range(0, len(data), batch_size):
            x = data[start : start + batch_size]
            loc, scale = self.encode(x)
            parts = []
            for k0 in range(0, num_samples, chunk_size):
                k = min(chunk_size, num_samples - k0)
                parts.append(self.log_weights(x, k, loc, scale).logsumexp(0))
            out[start : start + len(x)] = torch.stack(parts).logsumexp(0) - math.log(num_samples)
        return out


# -- batches ------------------------------------------------------------------------------------
def reference_batch(x_train: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """A hand-written loop's batch: ``torch.bernoulli(x_train[index])``."""
    return torch.bernoulli(x_train[index])


def library_batch(x_train: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """train()'s batch: :func:`pyro_vae.training.loop.minibatch`, dynamic binarization."""
    from pyro_vae.training.loop import minibatch

    return minibatch(x_train, index, "dynamic")


# -- timing -------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: the clock of :func:`timed`: "wall" (time.perf_counter) or "cpu" (time.process_time, the CPU
#: seconds this process used, which a shared machine's other jobs do not inflate)
CLOCK = {"name": "wall"}


def set_clock(name: str) -> None:
    if name not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {name!r}")
    CLOCK["name"] = name


def now() -> float:
    return time.process_time() if CLOCK["name"] == "cpu" else time.perf_counter()


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    t0 = now()
    fn()
    sync(device)
    return now() - t0


def timed_calls(fn: Callable[[], object], calls: int, device: torch.device) -> float:
    """Seconds for ``calls`` calls of ``fn`` back to back. A candidate that runs in another
    process (bench_train's library) has ``timed_block(calls)``, which returns that process's own
    clock reading for the block: this process waits, idle, on a pipe meanwhile."""
    if hasattr(fn, "timed_block"):
        return fn.timed_block(calls)

    def block():
        for _ in range(calls):
            fn()

    return timed(block, device)


def minor_faults(fn: Callable[[], object], calls: int) -> float:
    """Minor page faults a call over ``calls`` calls, counted by the process that runs them
    (``getrusage``; a candidate in another process has ``faults_block(calls)``). Memory that the
    allocator handed back to the kernel and takes again costs one fault a 4 kB page."""
    if hasattr(fn, "faults_block"):
        return fn.faults_block(calls)
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def interleaved(
    candidates: dict[str, Callable[[], object]],
    rounds: int,
    device: torch.device,
    repeat: dict[str, int] | int = 1,
) -> dict[str, list[float]]:
    """Seconds per call of each candidate, measured in ``rounds`` interleaved rounds.

    Every round times each candidate once (``repeat`` calls back to back, divided out); the order
    alternates A B C, C B A, A B C, ... so slow drifts of a shared machine hit every candidate
    alike. Ratios are then taken within a round (paired), never across rounds.
    """
    names = list(candidates)
    reps = repeat if isinstance(repeat, dict) else {n: repeat for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            times[name].append(timed_calls(candidates[name], reps[name], device) / reps[name])
    return times


def calibrate(fn: Callable[[], object], device: torch.device, target_s: float) -> int:
    """Calls per timed block so that one block lasts about ``target_s`` (at least 1)."""
    t = min(timed_calls(fn, 1, device) for _ in range(2))
    return max(1, int(round(target_s / max(t, 1e-6))))


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    v = sorted(values)
    if len(v) == 1:
        return v[0], v[0], v[0]
    q = statistics.quantiles(v, n=4, method="inclusive")
    return q[0], statistics.median(v), q[2]


def fmt_ratio(values: Sequence[float]) -> str:
    """``median [q1, q3]`` of paired per-round ratios."""
    q1, med, q3 = quartiles(values)
    return f"{med:.3f} [{q1:.3f}, {q3:.3f}]"


def fmt_num(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def environment(device: torch.device) -> str:
    import pyro

    if device.type == "cuda":
        hw = torch.cuda.get_device_name(device)
    else:
        import os

        hw = f"CPU, {os.cpu_count()} cores visible, torch threads {torch.get_num_threads()}"
    hw += f", clock {CLOCK['name']}"
    return (
        f"{date.today().isoformat()}; {hw}; Python {platform.python_version()}, torch "
        f"{torch.__version__}, pyro-ppl {pyro.__version__}; command: "
        f"`{' '.join([sys.executable.split('/')[-1], *sys.argv])}`"
    )


def load_images(smoke: bool, device: torch.device, n_train: int = 1024, n_test: int = 256):
    """MNIST ``(train_x, test_x)`` in [0, 1] from pyro_vae's cache; with ``smoke`` a random
    stand-in (no data set needed in CI) of the same width."""
    if smoke:
        g = torch.Generator().manual_seed(0)
        return (
            torch.rand(n_train, 784, generator=g).to(device),
            torch.rand(n_test, 784, generator=g).to(device),
        )
    import pyro_vae

    data = pyro_vae.load_dataset("mnist", download=False)
    return data.train_x.to(device), data.test_x.to(device)


def add_timing_args(parser) -> None:
    """``--threads`` and ``--clock``, which :func:`setup_clock` applies."""
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads (default: 1 with --clock cpu, else torch's)",
    )
    parser.add_argument(
        "--clock",
        choices=["cpu", "wall"],
        default=None,
        help="cpu: process CPU seconds (default on CPU: robust on a shared machine); "
        "wall: perf_counter (default on CUDA, with synchronize)",
    )


def setup_clock(args, device: torch.device) -> None:
    """``args.clock``: "cpu" by default on CPU, "wall" on CUDA (CPU time would not count the
    GPU's). With the CPU clock torch runs 1 thread (unless ``--threads``): process CPU time is
    then the single thread's busy time, which other jobs on a shared machine do not inflate;
    with several threads OpenMP spin-waiting would count as CPU time."""
    if args.clock is None:
        args.clock = "cpu" if device.type == "cpu" else "wall"
    if args.clock == "cpu" and device.type != "cpu":
        raise ValueError("--clock cpu does not count GPU time; use --clock wall with CUDA")
    if args.threads is None and args.clock == "cpu":
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    set_clock(args.clock)
