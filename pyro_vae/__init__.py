"""pyro_vae: a variational autoencoder written as a Pyro program.

Swap the prior or the likelihood in a function, measure the log-likelihood honestly, compare
ELBO estimators side by side.
"""

from .checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from .compare import (
    CompareConfig,
    ComparisonResult,
    EstimatorSpec,
    compare_estimators,
    parse_estimators,
)
from .config import ModelConfig, TrainConfig, load_config, save_config
from .data import (
    DATASETS,
    CorruptDataError,
    DatasetNotFoundError,
    DatasetWarning,
    ImageData,
    as_tensor,
    binarize,
    binarize_static,
    default_cache_dir,
    load_dataset,
    read_idx,
)
from .direct import direct_loss
from .distributed import (
    DistributedContext,
    DistributedError,
    ELBOLoss,
    evaluate_distributed,
    init_distributed,
    shutdown_distributed,
)
from .estimators import (
    ESTIMATORS,
    IWAE_ELBO,
    STL_ELBO,
    DReG_ELBO,
    Renyi_ELBO,
    Score_ELBO,
    TailAdaptive_ELBO,
    make_elbo,
    tail_adaptive_weights,
)
from .evaluate import LogLikelihood, active_units, evaluate, kl_to_prior, log_likelihood
from .gradients import GradientSNR, default_param_groups, gradient_snr
from .guides import GUIDES, Guide, IAFGuide, NormalGuide, make_guide
from .importance import vectorized_log_weights
from .likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    GaussianLikelihood,
    LaplaceLikelihood,
    LearnedGaussianLikelihood,
    Likelihood,
    make_likelihood,
)
from .networks import MLP
from .plots import (
    pca_project,
    plot_image_grid,
    plot_latent_space,
    plot_log_likelihood_curves,
    plot_manifold,
    plot_reconstructions,
    plot_snr_vs_k,
    plot_training_curves,
)
from .priors import (
    PRIORS,
    LearnedNormalPrior,
    MixturePrior,
    Prior,
    StandardNormalPrior,
    VampPrior,
    make_prior,
)
from .train import TrainingDiverged, TrainResult, resolve_device, train
from .vae import VAE

__version__ = "0.1.0"

__all__ = [
    "VAE",
    "MLP",
    # priors
    "Prior",
    "StandardNormalPrior",
    "LearnedNormalPrior",
    "MixturePrior",
    "VampPrior",
    "PRIORS",
    "make_prior",
    # likelihoods
    "Likelihood",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "LearnedGaussianLikelihood",
    "ContinuousBernoulliLikelihood",
    "LaplaceLikelihood",
    "LIKELIHOODS",
    "make_likelihood",
    # guides
    "Guide",
    "NormalGuide",
    "IAFGuide",
    "GUIDES",
    "make_guide",
    # estimators and evaluation
    "ESTIMATORS",
    "IWAE_ELBO",
    "STL_ELBO",
    "DReG_ELBO",
    "Renyi_ELBO",
    "TailAdaptive_ELBO",
    "Score_ELBO",
    "tail_adaptive_weights",
    "gradient_snr",
    "GradientSNR",
    "default_param_groups",
    "make_elbo",
    "direct_loss",
    "vectorized_log_weights",
    "log_likelihood",
    "LogLikelihood",
    "evaluate",
    "kl_to_prior",
    "active_units",
    # several processes
    "DistributedContext",
    "DistributedError",
    "ELBOLoss",
    "evaluate_distributed",
    "init_distributed",
    "shutdown_distributed",
    # training, config, checkpoints
    "ModelConfig",
    "TrainConfig",
    "save_config",
    "load_config",
    "train",
    "TrainResult",
    "TrainingDiverged",
    "resolve_device",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "CheckpointError",
    # data
    "DATASETS",
    "ImageData",
    "load_dataset",
    "read_idx",
    "binarize",
    "binarize_static",
    "as_tensor",
    "default_cache_dir",
    "DatasetNotFoundError",
    "CorruptDataError",
    "DatasetWarning",
    # figures
    "plot_training_curves",
    "plot_image_grid",
    "plot_reconstructions",
    "plot_latent_space",
    "plot_manifold",
    "pca_project",
    "plot_log_likelihood_curves",
    "plot_snr_vs_k",
    # estimator comparisons
    "compare_estimators",
    "CompareConfig",
    "ComparisonResult",
    "EstimatorSpec",
    "parse_estimators",
    "__version__",
]
