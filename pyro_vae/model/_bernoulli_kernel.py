"""The Bernoulli log-likelihood of a large tensor in one compiled pass.

:func:`fused_log_prob` gives both what the differentiated forward returns (log p, summed over
the event) and what the backward needs (``sigmoid(logit) - x``), from one ``exp`` a logit, as a
kernel that ``torch.compile`` (inductor) fuses into one loop over the logits; :func:`fused_value`
gives the value alone, for the K-sample evaluation (no gradient). Eager torch needs five passes
for the pair (``addcmul``, ``softplus``, ``sum``; ``sigmoid``, ``sub``) and three for the value,
and softplus's ``log1p`` is most of their cost: here the ``log1p`` terms are summed as the log
of products of 16 factors, one ``log`` per 16 pixels.

Measured on this project's CPU (one thread, ``python benchmarks/bench_parts.py``,
benchmarks/RESULTS.md): forward and backward 0.88-0.99 ms against the eager path's 1.68 ms at
5 x 128 x 784 logits, about 1.4 ns saved a logit, 0.3 s an epoch of MNIST at K = 5; the value
alone on an evaluation tile (133 x 10 x 784) 0.91 against 2.10 ms, 0.68 against 1.58 us a
sample, 45 s of the 50 million samples of the test set at K = 5000. Compiling costs 1-4 s for
the first shape in a process and 0.07-1 s for each new one, from inductor's cache on disk (with
that cache cold, the first compile on a machine takes 12-22 s, once). The pair pays back within
a few epochs and is compiled at first sight. The value is compiled for a shape once its eager
passes so far and the work known to lie ahead of it exceed what compiling from the disk cache
costs (:data:`VALUE_COMPILE_AFTER`):

* where nothing is known ahead, that is ski rental (with a warm cache, never much more than
  twice the better choice's time): work shorter than that stays eager, and so does a shape that
  never runs that long (the ragged last tile of each batch);
* :func:`pyro_vae.log_likelihood` states the tiles of its full size ahead of it
  (:func:`pyro_vae._work_ahead.work_ahead`), so such a tile compiles at its first call where its
  evaluation repays the compile (the test set at K = 5000, 1,000 images at K = 5000) and not
  within the evaluation otherwise (the flagship's default, 10,000 images at K = 500, runs 0.97 x
  the threshold in full tiles): never partway through, where the rest would not repay it, and
  never later than ski rental.

The value kernel serves every Bernoulli log-likelihood computed without a gradient: the K-sample
log-likelihood, the ELBO's evaluation, AIS's and the gaps' values. The kernels serve only:

* tensors of at least :data:`COMPILE_MIN_LOGITS` logits (K >= 3 particles of a 128 x 784
  batch; a K = 1 batch stays eager);
* on a CPU, in float32 or float64 (a product of 16 factors in (1, 2] can overflow float16),
  with data of the logits' dtype that broadcast to their shape;
* for at most :data:`MAX_SHAPES` shapes a process and kernel (a training run has two, the full
  batch and the last: six serve three settings of K in one process and stay under torch's own
  limit of eight recompiles, past which it warns; an evaluation has one or two that run long);
* on plain tensors outside torch.func's transforms and without a forward-mode tangent (which a
  compiled function would trace or drop; the likelihood's autograd function never passes them);
* unless ``PYRO_VAE_COMPILE=0`` is set, or compiling failed once in this process (no C++
  compiler, say): then a RuntimeWarning names the cause and the eager path serves from then on.

Every other case gets ``None`` and runs the eager formulas. The two paths agree to rounding
(tests/test_model_bernoulli_kernel.py): in float64 to 1e-13; in float32 the products round
every factor ``1 + e`` and 15 multiplications a group, about 1e-4 nats over 784 pixels (relative
about 2e-7, as large as a float32 sum's rounding of such values). So a float32 evaluation that
switches to the compiled value partway gives its later tiles values that differ from an eager
run's by that rounding: seeded runs agree to it, not bit for bit. At infinite logits the
kernels give the limits (log p = 0 or -inf), where the eager ``addcmul`` gives NaN: in
training, the value at an infinite logit depends on the tensor's size. ``PYRO_VAE_COMPILE`` is
read at import; only ``0`` switches compiling off. :func:`settings` changes this module's
globals, for all threads.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.autograd import forward_ad
from torch.nn.functional import pad
from torch.overrides import has_torch_function

from .._work_ahead import take

__all__ = [
    "COMPILE_MIN_LOGITS",
    "MAX_SHAPES",
    "RESIDUAL",
    "VALUE",
    "VALUE_COMPILE_AFTER",
    "broadcasts_to",
    "fused_log_prob",
    "fused_value",
    "residual_kernel",
    "settings",
    "value_kernel",
]

#: the fewest logits a tensor needs for the compiled kernels (2^18 = 262,144: 5 x 128 x 784 =
#: 501,760 qualifies, 128 x 784 = 100,352 does not)
COMPILE_MIN_LOGITS = 2**18
#: the most distinct signatures compiled in one process, for each kernel (shapes, strides and
#: dtype, and what torch.compile also guards on: threads, default dtype, grad mode)
MAX_SHAPES = 6
#: logits a signature passes through the eager value path before the value kernel is compiled
#: for it: 3 x 2^30 (4.1 million MNIST samples) at the 1.15 ns a logit that the kernel saves is
#: 3.7 s, what the first compile in a process costs from inductor's disk cache (3.6-4.2 s
#: measured; each new shape after it 0.07 s): ski rental's break-even
VALUE_COMPILE_AFTER = 3 * 2**30
#: products of this many factors in (1, 2] stay below 2^16
_GROUP = 16
#: signatures whose eager logits are counted at once
_MAX_COUNTED = 4 * MAX_SHAPES

_enabled = os.environ.get("PYRO_VAE_COMPILE", "1") != "0"
_failed = False  # compiling failed once in this process: the eager paths serve from then on


def _log_p(t: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """-sum_d softplus(t_d) ``[...]`` from ``t [..., D]`` and ``e = exp(-|t|)``: softplus(t) =
    max(t, 0) + log1p(e), with sum_d log1p(e_d) taken as the log of products of 16 factors
    1 + e_d in (1, 2]."""
    factors = pad(1 + e, (0, (-t.shape[-1]) % _GROUP), value=1.0)
    log_1pe = factors.unflatten(-1, (-1, _GROUP)).prod(-1).log().sum(-1)
    return -(t.clamp_min(0).sum(-1) + log_1pe)


def value_kernel(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p ``[...]`` for ``logits [..., D]`` and binary ``x`` broadcast to them: -sum_d
    softplus(t_d) with t = (1 - 2x) * logit; the function :func:`fused_value` compiles."""
    t = logits * (1 - 2 * x)  # a product, not addcmul's l - 2lx: inf * 0 would give NaN
    return _log_p(t, torch.exp(-t.abs()))


def residual_kernel(logits: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p [...], sigmoid(logits) - x [..., D])`` for ``logits [..., D]`` and binary ``x``
    broadcast to them; the function :func:`fused_log_prob` compiles (eager, it gives the same
    numbers). With e = exp(-|t|) = exp(-|logit|), sigmoid(logit) is 1 / (1 + e) for logit >= 0,
    else e / (1 + e)."""
    t = logits * (1 - 2 * x)
    e = torch.exp(-t.abs())
    residual = torch.where(logits >= 0, 1.0, e) / (1 + e) - x
    return _log_p(t, e), residual


class _Kernel:
    """One of the functions above, compiled on demand: the signatures compiled so far, and the
    logits each signature not yet compiled has passed through the eager path.

    ``compile_after`` is the threshold of that count and the logits known to lie ahead together
    (:func:`~pyro_vae._work_ahead.take`; :func:`settings` changes it); ``None`` compiles a
    signature at first sight. The counts are not synchronized: threads that share the module
    may lose a count or compile a signature twice (torch's cache then serves both), never get a
    wrong value."""

    def __init__(self, fn: Callable, compile_after: int | None) -> None:
        self.fn = fn
        self.compile_after = compile_after
        self.compiled: Callable | None = None
        self.signatures: set[tuple] = set()
        self.eager_logits: dict[tuple, int] = {}

    def __call__(self, logits: torch.Tensor, x: torch.Tensor) -> Any:
        """``fn(logits [..., D], x)`` compiled (what ``fn`` returns), or ``None``: where the
        kernel does not serve (:func:`_serves`), past :data:`MAX_SHAPES`, or while the
        signature still counts its eager logits."""
        global _failed
        if not _serves(logits, x):
            return None
        ahead = take(logits.numel()) if self.compile_after is not None else 0
        # with what torch.compile also guards on (threads, default dtype, grad and inference
        # mode), so that the count is of torch's recompiles
        signature = (
            logits.shape,
            logits.stride(),
            x.shape,
            x.stride(),
            logits.dtype,
            torch.get_num_threads(),
            torch.get_default_dtype(),
            torch.is_grad_enabled(),
            torch.is_inference_mode_enabled(),
            logits.is_inference(),
            x.is_inference(),
        )
        if signature not in self.signatures:
            if len(self.signatures) >= MAX_SHAPES:
                return None
            if self.compile_after is not None:
                seen = self.eager_logits.get(signature, 0) + logits.numel()
                if seen + ahead <= self.compile_after:
                    if (
                        signature not in self.eager_logits
                        and len(self.eager_logits) >= _MAX_COUNTED
                    ):
                        # a bounded table: a process of many short-lived shapes forgets the
                        # least run of them, so that a long evaluation later still gets counted
                        del self.eager_logits[min(self.eager_logits, key=self.eager_logits.get)]
                    self.eager_logits[signature] = seen
                    return None
        # detached: leaves that need no gradient (the caller may be an autograd function's
        # forward), which dynamo wraps without reading a non-leaf's .grad (a UserWarning)
        logits, x = logits.detach(), x.detach()
        try:
            if signature in self.signatures:
                out = self.compiled(logits, x)
            else:
                # compiling imports parts of torch that warn of torch's own deprecated APIs
                # (torch.jit.script_method): not the caller's to act on, and under -W error
                # they would stop the compile
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    if self.compiled is None:
                        self.compiled = torch.compile(self.fn, dynamic=False)
                    out = self.compiled(logits, x)
        except Exception as err:  # noqa: BLE001 - whatever stops inductor, the eager path serves
            # for both kernels: what stops one (no C++ compiler, say) stops the other
            _failed = True
            warnings.warn(
                f"pyro_vae: torch.compile failed for the Bernoulli log-likelihood "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); the "
                f"eager path serves from now on in this process (correct, about 1 ns a logit "
                f"slower). Set PYRO_VAE_COMPILE=0 to skip the attempt.",
                RuntimeWarning,
                stacklevel=3,  # the caller of fused_log_prob / fused_value
            )
            return None
        self.signatures.add(signature)
        self.eager_logits.pop(signature, None)
        return out


def _serves(logits: torch.Tensor, x: torch.Tensor) -> bool:
    return (
        _enabled
        and not _failed
        and logits.numel() >= COMPILE_MIN_LOGITS
        and logits.device.type == "cpu"
        and logits.dtype in (torch.float32, torch.float64)
        and x.dtype == logits.dtype
        and broadcasts_to(x.shape, logits.shape)
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()  # Pyro's JitTrace_ELBO: the eager ops are traced
        # what a compiled function would trace (tensor subclasses with a __torch_function__, such
        # as Pyro's ProvenanceTensor; torch.func's transforms) or drop with the detached inputs
        # (a forward-mode tangent, also carried without a gradient); an autograd function's
        # forward sees none of them
        and not has_torch_function((logits, x))
        and not _functorch_active()
        and not _dual(logits, x)
    )


def _dual(*tensors: torch.Tensor) -> bool:
    """Whether any of ``tensors`` carries a forward-mode tangent (``forward_ad.make_dual``)."""
    return any(forward_ad.unpack_dual(t).tangent is not None for t in tensors)


#: whether a torch.func transform is active: torch.autograd.Function.apply asks the same (a
#: private function of torch's; where a later torch lacks it, a transform raises its own clear
#: error instead)
_functorch_active = getattr(torch._C, "_are_functorch_transforms_active", lambda: False)


#: the pair, compiled at first sight of a signature (training)
RESIDUAL = _Kernel(residual_kernel, None)
#: the value, compiled once a signature's eager runs and known work ahead repay it (evaluation)
VALUE = _Kernel(value_kernel, VALUE_COMPILE_AFTER)


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
    return RESIDUAL(logits, x)


def fused_value(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
    """:func:`value_kernel` compiled, log p ``[...]`` for ``logits [..., D]``, as
    :func:`fused_log_prob`, once the signature's eager logits and those known to lie ahead of
    it pass :data:`VALUE_COMPILE_AFTER` (the module docstring); the eager path serves until
    then: ``None``."""
    return VALUE(logits, x)


@contextlib.contextmanager
def settings(
    enabled: bool | None = None,
    min_logits: int | None = None,
    value_compile_after: int | None = None,
) -> Iterator[None]:
    """Within the block, compile (``enabled``) tensors of at least ``min_logits`` logits, the
    value kernel after ``value_compile_after`` eager logits of a signature; ``None`` keeps a
    setting. For tests and benchmarks: e.g. ``settings(min_logits=0)`` runs the pair's compiled
    kernel on small tensors, ``settings(enabled=False)`` the eager path."""
    global _enabled, COMPILE_MIN_LOGITS
    before = _enabled, COMPILE_MIN_LOGITS, VALUE.compile_after
    if enabled is not None:
        _enabled = enabled
    if min_logits is not None:
        COMPILE_MIN_LOGITS = min_logits
    if value_compile_after is not None:
        VALUE.compile_after = value_compile_after
    try:
        yield
    finally:
        _enabled, COMPILE_MIN_LOGITS, VALUE.compile_after = before
