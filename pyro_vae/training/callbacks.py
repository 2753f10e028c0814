"""What training reports, as it happens: a small callback protocol for loggers and trackers.

A callback is a :class:`Callback` (override the hooks you need; the others do nothing) or a
plain function of one epoch's metrics, which is its :meth:`~Callback.on_epoch_end`. Hooks run
on rank 0 only under DDP, in this order::

    on_run_start(config)            # once, before the first epoch of this call
    on_epoch_end(metrics)           # every epoch
    on_evaluation(results)          # after on_epoch_end, for each epoch with a log-likelihood
    on_figures(paths)               # run_experiment, once the figures are drawn
    on_run_end(results)             # once, when the run finished
    on_run_error(error)             # instead of on_run_end, when the run stops with an error

:func:`~pyro_vae.train` calls the first three and ``on_run_end`` with its own summary;
:func:`~pyro_vae.run_experiment` passes its callbacks to ``train``, adds the data set to the
run-start config, reports a final evaluation made after training, calls ``on_figures`` and
then ``on_run_end`` once, with the dict written to ``results.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["Callback", "CallbackList", "FunctionCallback", "HOOKS"]

#: the hook names, in the order a run calls them
HOOKS = (
    "on_run_start",
    "on_epoch_end",
    "on_evaluation",
    "on_figures",
    "on_run_end",
    "on_run_error",
)


class Callback:
    """Hooks called during a run (on rank 0 only); each does nothing unless overridden.

    The dicts are the run's own: read them, do not change them.
    """

    def on_run_start(self, config: dict[str, Any]) -> None:
        """Before the first epoch. ``config``: ``model`` (the :class:`~pyro_vae.ModelConfig`
        dict, None for a user's own model), ``model_class``, ``train`` (the
        :class:`~pyro_vae.TrainConfig` dict), ``out_dir`` (the run directory as a string, or
        None), ``resume``, ``start_epoch`` (1, or the first epoch after a resumed checkpoint),
        ``world_size``; from ``run_experiment`` also ``dataset``, ``train_size``,
        ``test_size``, ``num_parameters``."""

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        """After each epoch (and its checkpoint). ``metrics``: the epoch's record (``epoch``,
        ``train_elbo``, ``seconds``, ``lr``; ``test_elbo`` with test data; and on the epochs
        that estimate it ``test_log_likelihood``, ``test_log_likelihood_stderr``,
        ``eval_samples``, ``kl``, ``active_units``). ELBOs and log-likelihoods are nats per
        datapoint."""

    def on_evaluation(self, results: dict[str, Any]) -> None:
        """After each test evaluation with ``eval_samples`` importance samples: the
        :func:`~pyro_vae.evaluate` dict (``log_likelihood``, ``log_likelihood_stderr``,
        ``elbo``, ``kl``, ``active_units``, ``active_units_per_site``, ``num_samples``, ...)
        and the ``epoch`` it evaluated."""

    def on_figures(self, paths: list[Path]) -> None:
        """The PNG figures ``run_experiment`` drew (absent with ``figures=False``)."""

    def on_run_end(self, results: dict[str, Any]) -> None:
        """Once the run finished. From ``train``: ``epochs``, ``seconds``, ``history``,
        ``evaluation`` (the last one, or None) and ``checkpoint``; from ``run_experiment``:
        the ``results.json`` dict. Loggers close their files here."""

    def on_run_error(self, error: BaseException) -> None:
        """Once, when the run stopped with ``error`` (divergence, a bad input, Ctrl-C) after
        ``on_run_start``; ``on_run_end`` is not called then. Loggers mark the run failed and
        close their files here."""


class FunctionCallback(Callback):
    """A plain function of an epoch's metrics as a callback (what ``train`` always took)."""

    def __init__(self, fn: Callable[[dict], Any]) -> None:
        self.fn = fn

    def on_epoch_end(self, metrics: dict[str, Any]) -> None:
        self.fn(metrics)

    def __repr__(self) -> str:
        return f"FunctionCallback({self.fn!r})"


def _as_callback(cb) -> Callback:
    if isinstance(cb, Callback):
        return cb
    if any(callable(getattr(cb, h, None)) for h in HOOKS):
        return _DuckCallback(cb)
    if callable(cb):
        return FunctionCallback(cb)
    raise TypeError(
        f"a callback must be a pyro_vae Callback, an object with any of the methods "
        f"{', '.join(HOOKS)}, or a function of an epoch's metrics dict; got {cb!r}"
    )


class _DuckCallback(Callback):
    """An object with some of the hook methods (not a :class:`Callback` subclass)."""

    def __init__(self, obj) -> None:
        self.obj = obj
        for hook in HOOKS:
            method = getattr(obj, hook, None)
            if callable(method):
                setattr(self, hook, method)


class CallbackList(Callback):
    """Several callbacks as one: each hook calls theirs in the order given."""

    def __init__(self, callbacks: Iterable = ()) -> None:
        if isinstance(callbacks, CallbackList):
            callbacks = callbacks.callbacks
        elif isinstance(callbacks, Callback) or not isinstance(callbacks, Iterable):
            callbacks = [callbacks]  # one callback given as it is, not in a list
        self.callbacks = [_as_callback(cb) for cb in callbacks]

    def __len__(self) -> int:
        return len(self.callbacks)

    def on_run_start(self, config):
        for cb in self.callbacks:
            cb.on_run_start(config)

    def on_epoch_end(self, metrics):
        for cb in self.callbacks:
            cb.on_epoch_end(metrics)

    def on_evaluation(self, results):
        for cb in self.callbacks:
            cb.on_evaluation(results)

    def on_figures(self, paths):
        for cb in self.callbacks:
            cb.on_figures(paths)

    def on_run_end(self, results):
        for cb in self.callbacks:
            cb.on_run_end(results)

    def on_run_error(self, error):
        for cb in self.callbacks:
            cb.on_run_error(error)
