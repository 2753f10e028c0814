"""pyro_vae: a variational autoencoder written as a Pyro program.

Swap the prior or the likelihood in a function, measure the log-likelihood honestly, compare
ELBO estimators side by side.

The names here are the verbs and classes a user types. Components sit one level down, by kind:
``pv.priors.VampPrior``, ``pv.likelihoods.LaplaceLikelihood``, ``pv.guides.IAFGuide``,
``pv.estimators.DReG_ELBO``, ``pv.networks.MLP``. The layers are subpackages
(``model`` <- ``infer`` <- ``training`` <- ``experiments``; ``data`` is a leaf), and
``experiments`` (the flagship harness and the figures, which need matplotlib) is imported only
when one of its names is first used.
"""

from ._device import resolve_device
from .data import (
    CorruptDataError,
    DatasetNotFoundError,
    ImageData,
    binarize,
    binarize_static,
    load_dataset,
)
from .infer import estimators
from .infer.ais import ais_log_likelihood
from .infer.bdmc import bdmc
from .infer.estimators import ESTIMATORS, make_elbo
from .infer.evaluate import evaluate, log_likelihood
from .infer.gaps import inference_gaps
from .infer.gradients import gradient_snr
from .infer.log_weights import LogWeights, log_weights
from .model import guides, likelihoods, networks, priors
from .model.build import build_model
from .model.config import ModelConfig
from .model.guides import GUIDES, Guide, make_guide
from .model.likelihoods import LIKELIHOODS, Likelihood, make_likelihood
from .model.priors import PRIORS, Prior, make_prior
from .model.two_layer import TwoLayerVAE
from .model.vae import VAE
from .training.callbacks import Callback
from .training.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from .training.config import TrainConfig, load_config, save_config
from .training.loop import TrainingDiverged, TrainResult, train

__version__ = "0.1.0"

# Imported on first use: they pull in matplotlib and the experiment harness.
_LAZY = {
    "run_experiment": "pyro_vae.experiments.run",
    "compare_estimators": "pyro_vae.experiments.compare",
    "CompareConfig": "pyro_vae.experiments.compare",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pyro_vae' has no attribute {name!r}")


__all__ = [
    # the model and its components
    "VAE",
    "TwoLayerVAE",
    "build_model",
    "ModelConfig",
    "Prior",
    "Likelihood",
    "Guide",
    "PRIORS",
    "LIKELIHOODS",
    "GUIDES",
    "make_prior",
    "make_likelihood",
    "make_guide",
    "priors",
    "likelihoods",
    "guides",
    "networks",
    # inference and evaluation
    "ESTIMATORS",
    "estimators",
    "make_elbo",
    "log_weights",
    "LogWeights",
    "log_likelihood",
    "evaluate",
    "ais_log_likelihood",
    "bdmc",
    "inference_gaps",
    "gradient_snr",
    # training and checkpoints
    "TrainConfig",
    "train",
    "TrainResult",
    "TrainingDiverged",
    "Callback",
    "save_config",
    "load_config",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "CheckpointError",
    "resolve_device",
    # data
    "load_dataset",
    "ImageData",
    "binarize",
    "binarize_static",
    "DatasetNotFoundError",
    "CorruptDataError",
    # experiments (imported on first use)
    "run_experiment",
    "compare_estimators",
    "CompareConfig",
    "__version__",
]
