"""Estimators side by side: the same VAE trained under each ELBO estimator at an equal budget.

:func:`compare_estimators` trains one architecture under every requested estimator (``trace``,
``iwae``, ``stl``, ``dreg``, ... at their K) and every seed, evaluates each trained model with the
K-sample importance-sampled test log-likelihood, measures gradient signal-to-noise ratios, and
writes a paper-style table (``comparison.md``, ``.csv``, ``.json``) and two figures.

The protocol, so that rows compare:

* **Same start.** For a given seed every estimator starts from the same initial weights and sees
  the same minibatch order (both depend on the seed alone); the test set is binarized once, with
  a fixed seed, and shared by every run. ``delta`` columns are *paired* differences against the
  first estimator at the same seed, which cancels most of the seed-to-seed noise.
* **Equal budget.** Either an equal number of epochs (the same number of gradient steps and data
  passes for every estimator: ``epochs``), or an equal training time (``seconds``): a run stops
  after the epoch in which its training time, the sum of the trainer's per-epoch ``seconds``
  (training only, evaluation excluded), reaches the budget, so it overshoots by at most one epoch.
  It is enforced by a callback that raises a private exception after that epoch, which the run
  loop catches. A time budget depends on the machine and its load; an epoch budget does not.
* **Honest evaluation.** The test log-likelihood uses ``eval_samples`` importance samples for
  every estimator (whatever K it trained with), every ``eval_every`` epochs and at the end.
* **Gradient SNR at one fixed point.** Rainforth et al. (2018)'s per-parameter SNR,
  ``|E g| / sd g`` over ``snr_repeats`` independent gradient estimates, averaged over the
  parameters of the inference network (encoder) and of the generative network (decoder), is
  measured for every estimator at every K of ``snr_k`` *at the same parameters and on the same
  batch*: the model trained under the first estimator with the first seed, at the end of its
  training, and the first ``snr_batch_size`` training images binarized with a fixed seed. So the
  SNRs differ only by the estimator and K, not by where each estimator's training ended.

One concept a module: :mod:`.spec` (which estimators, ``"trace,iwae:5"``), :mod:`.config`
(:class:`CompareConfig`), :mod:`.budget` (the time budget), :mod:`.runner` (the run loop),
:mod:`.snr` (the SNRs at the fixed point), :mod:`.stats` (means, stds, paired deltas),
:mod:`.report` (Markdown, CSV, JSON) and :mod:`.figures`.
"""

from .config import CompareConfig
from .report import COMPARISON_FILES, format_markdown_table
from .runner import ComparisonResult, compare_estimators
from .spec import EstimatorSpec, parse_estimators
from .stats import summarize_runs

__all__ = [
    "EstimatorSpec",
    "CompareConfig",
    "ComparisonResult",
    "parse_estimators",
    "summarize_runs",
    "format_markdown_table",
    "compare_estimators",
    "COMPARISON_FILES",
]
