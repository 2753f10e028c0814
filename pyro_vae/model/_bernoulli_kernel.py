"""The differentiated Bernoulli log-likelihood of a large tensor in one compiled pass.

:func:`fused_log_prob` gives both what the forward returns (log p, summed over the event) and
what the backward needs (``sigmoid(logit) - x``), from one ``exp`` a logit, as a kernel that
``torch.compile`` (inductor) fuses into one loop over the logits. Eager torch needs five passes
for the same (``addcmul``, ``softplus``, ``sum``; ``sigmoid``, ``sub``), and softplus's ``log1p``
is most of their cost: here the ``log1p`` terms are summed as the log of products of 16 factors,
one ``log`` per 16 pixels.

Measured on this project's CPU (one thread, ``python benchmarks/bench_parts.py``,
benchmarks/RESULTS.md): forward and backward 0.88-0.99 ms against the eager path's 1.68 ms at
5 x 128 x 784 logits, about 1.4 ns saved a logit, 0.3 s an epoch of MNIST at K = 5. Compiling
costs about 1 s for each new shape, a few seconds for the first in a process (inductor keeps
its cache on disk), so it pays back within a few epochs, and it serves only:

* tensors of at least :data:`COMPILE_MIN_LOGITS` logits (K >= 3 particles of a 128 x 784
  batch; a K = 1 batch stays eager, as does every evaluation, which runs without a gradient);
* on a CPU, in float32 or float64 (a product of 16 factors in (1, 2] can overflow float16),
  with data of the logits' dtype that broadcast to their shape;
* for at most :data:`MAX_SHAPES` shapes a process (a training run has two, the full batch and
  the last: six serve three settings of K in one process and stay under torch's own limit of
  eight recompiles, past which it warns);
* unless ``PYRO_VAE_COMPILE=0`` is set, or compiling failed once in this process (no C++
  compiler, say): then a RuntimeWarning names the cause and the eager path serves from then on.

Every other case gets ``None`` and runs the eager formulas. The two paths agree to rounding
(tests/test_model_bernoulli_kernel.py): in float64 to 1e-13; in float32 the products round
every factor ``1 + e`` and 15 multiplications a group, about 1e-4 nats over 784 pixels (relative
about 2e-7, as large as a float32 sum's rounding of such values). At infinite logits the
kernel gives the limits (log p = 0 or -inf), where the eager ``addcmul`` gives NaN: in
training, the value at an infinite logit depends on the tensor's size. ``PYRO_VAE_COMPILE`` is
read at import; only ``0`` switches compiling off. :func:`settings` changes this module's
globals, for all threads.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

import torch
from torch.nn.functional import pad

__all__ = [
    "COMPILE_MIN_LOGITS",
    "MAX_SHAPES",
    "broadcasts_to",
    "fused_log_prob",
    "residual_kernel",
    "settings",
]

#: the fewest logits a tensor needs for the compiled kernel (2^18 = 262,144: 5 x 128 x 784 =
#: 501,760 qualifies, 128 x 784 = 100,352 does not)
COMPILE_MIN_LOGITS = 2**18
#: the most distinct signatures compiled in one process (shapes, strides and dtype, and what
#: torch.compile also guards on: threads, default dtype, grad mode)
MAX_SHAPES = 6
#: products of this many factors in (1, 2] stay below 2^16
_GROUP = 16

_enabled = os.environ.get("PYRO_VAE_COMPILE", "1") != "0"
_kernel = None  # built on first use; False after a failure
_signatures: set[tuple] = set()


def residual_kernel(logits: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p [...], sigmoid(logits) - x [..., D])`` for ``logits [..., D]`` and binary ``x``
    broadcast to them; the function that is compiled (eager, it gives the same numbers).

    With t = (1 - 2x) * logit and e = exp(-|t|) = exp(-|logit|): log p = -sum_d softplus(t_d)
    and softplus(t) = max(t, 0) + log1p(e), with sum_d log1p(e_d) taken as the log of products
    of 16 factors 1 + e_d in (1, 2]; sigmoid(logit) is 1 / (1 + e) for logit >= 0, else
    e / (1 + e)."""
    t = logits * (1 - 2 * x)  # a product, not addcmul's l - 2lx: inf * 0 would give NaN
    e = torch.exp(-t.abs())
    factors = pad(1 + e, (0, (-logits.shape[-1]) % _GROUP), value=1.0)
    log_1pe = factors.unflatten(-1, (-1, _GROUP)).prod(-1).log().sum(-1)
    log_p = -(t.clamp_min(0).sum(-1) + log_1pe)
    residual = torch.where(logits >= 0, 1.0, e) / (1 + e) - x
    return log_p, residual


def broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    """Whether a tensor of ``shape`` broadcasts to ``target`` unchanged: what
    ``torch.broadcast_shapes(shape, target) == target`` says, without its Python-level cost
    (about 10 us, on every training step's backward)."""
    return len(shape) <= len(target) and all(
        a == b or a == 1 for a, b in zip(reversed(shape), reversed(target))
    )


def fused_log_prob(
    logits: torch.Tensor, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """:func:`residual_kernel` compiled, for ``logits [..., D]`` and binary ``x`` of the same
    dtype that broadcasts to them; ``None`` where it does not serve (the module docstring)."""
    global _kernel
    if not (
        _enabled
        and _kernel is not False
        and logits.numel() >= COMPILE_MIN_LOGITS
        and logits.device.type == "cpu"
        and logits.dtype in (torch.float32, torch.float64)
        and x.dtype == logits.dtype
        and broadcasts_to(x.shape, logits.shape)
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()  # Pyro's JitTrace_ELBO: the eager ops are traced
    ):
        return None
    # with what torch.compile also guards on (threads, default dtype, grad mode), so that the
    # count is of torch's recompiles
    signature = (
        logits.shape,
        logits.stride(),
        x.shape,
        x.stride(),
        logits.dtype,
        torch.get_num_threads(),
        torch.get_default_dtype(),
        torch.is_grad_enabled(),
    )
    if signature not in _signatures and len(_signatures) >= MAX_SHAPES:
        return None
    # detached: leaves that need no gradient (the caller is an autograd function's forward),
    # which dynamo wraps without reading a non-leaf's .grad (a UserWarning of torch's)
    logits, x = logits.detach(), x.detach()
    try:
        if signature in _signatures:
            out = _kernel(logits, x)
        else:
            # compiling imports parts of torch that warn of torch's own deprecated APIs
            # (torch.jit.script_method): not the caller's to act on, and under -W error they
            # would stop the compile
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                if _kernel is None:
                    _kernel = torch.compile(residual_kernel, dynamic=False)
                out = _kernel(logits, x)
    except Exception as err:  # noqa: BLE001 - whatever stops inductor, the eager path serves
        _kernel = False
        warnings.warn(
            f"pyro_vae: torch.compile failed for the Bernoulli log-likelihood "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); the "
            f"eager path serves from now on in this process (correct, about 1.4 ns a logit "
            f"slower). Set PYRO_VAE_COMPILE=0 to skip the attempt.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    _signatures.add(signature)
    return out


@contextlib.contextmanager
def settings(enabled: bool | None = None, min_logits: int | None = None) -> Iterator[None]:
    """Within the block, compile (``enabled``) tensors of at least ``min_logits`` logits;
    ``None`` keeps a setting. For tests and benchmarks: e.g. ``settings(min_logits=0)`` runs
    the compiled kernel on small tensors, ``settings(enabled=False)`` the eager path."""
    global _enabled, COMPILE_MIN_LOGITS
    before = _enabled, COMPILE_MIN_LOGITS
    if enabled is not None:
        _enabled = enabled
    if min_logits is not None:
        COMPILE_MIN_LOGITS = min_logits
    try:
        yield
    finally:
        _enabled, COMPILE_MIN_LOGITS = before
