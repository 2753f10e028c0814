"""Experiment trackers as training callbacks: TensorBoard, MLflow and Weights & Biases.

Each is a :class:`~pyro_vae.training.callbacks.Callback` that writes under the run directory
(``out_dir``, ``--out``) unless told otherwise, and needs its optional extra
(``pip install -e ".[tensorboard]"``, ``".[mlflow]"``, ``".[wandb]"``, all three:
``".[trackers]"``), imported when the logger is made: a missing one is a
:class:`~pyro_vae.data.errors.MissingExtraError` naming the command. They log the same names,
with the epoch as the step:

=========================  =====================================================================
``train/elbo``             the epoch's training ELBO (nats per datapoint)
``train/lr``               the learning rate of the epoch
``train/seconds``          the epoch's training time
``test/elbo``              the test ELBO, every epoch with test data
``test/log_likelihood``    the K-sample test log-likelihood (and ``..._stderr``), each evaluation
``test/kl``                KL(q(z | x) || p(z)), each evaluation
``test/active_units``      active latent units, each evaluation (``test/active_units/SITE`` per
                           latent site for models with several)
=========================  =====================================================================

The run's configuration (model, training, data set) goes in as hyper-parameters, flattened to
``model.z_dim``-style keys; the figures as images; the final ``results.json`` dict at the end.
"""

from __future__ import annotations

import importlib
import json
import math
import netrc
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..data.errors import MissingExtraError
from ..training.callbacks import Callback

__all__ = [
    "LOGGERS",
    "TensorBoardLogger",
    "MLflowLogger",
    "WandbLogger",
    "make_loggers",
    "flatten_config",
]


def _require(module: str, extra: str, what: str):
    """``import module``, or a :class:`MissingExtraError` that names the pip command."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f'the {what} logger needs the {extra} package: pip install -e ".[{extra}]" (or pip '
            f'install {extra}; every tracker: pip install -e ".[trackers]")'
        ) from e


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"z_dim": 20}}`` -> ``{"model.z_dim": 20}`` (empty dicts stay as values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _plain(value: Any) -> bool | int | float | str:
    """A hyper-parameter value the trackers take: numbers, strings and booleans as they are,
    anything else (None, lists) as its JSON text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    try:
        return json.dumps(value)
    except TypeError:
        return str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


#: an epoch record's keys and their names in the trackers
EPOCH_TAGS = {
    "train_elbo": "train/elbo",
    "test_elbo": "test/elbo",
    "lr": "train/lr",
    "seconds": "train/seconds",
}
#: an evaluation's keys and their names in the trackers
EVALUATION_TAGS = {
    "log_likelihood": "test/log_likelihood",
    "log_likelihood_stderr": "test/log_likelihood_stderr",
    "kl": "test/kl",
    "active_units": "test/active_units",
}
#: the results' numbers kept as a run's summary (final values)
RESULT_KEYS = (
    "test_log_likelihood",
    "test_log_likelihood_stderr",
    "test_elbo",
    "kl",
    "active_units",
    "eval_samples",
    "epochs",
    "train_seconds",
    "seconds_per_epoch",
    "num_parameters",
)


def epoch_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The tracked numbers of an epoch record, by tag."""
    out = {tag: _number(metrics.get(key)) for key, tag in EPOCH_TAGS.items()}
    return {tag: v for tag, v in out.items() if v is not None}


def evaluation_scalars(results: Mapping[str, Any]) -> dict[str, float]:
    """The tracked numbers of an evaluation dict, by tag."""
    out = {tag: _number(results.get(key)) for key, tag in EVALUATION_TAGS.items()}
    per_site = results.get("active_units_per_site") or {}
    if len(per_site) > 1:
        out.update({f"test/active_units/{site}": _number(n) for site, n in per_site.items()})
    return {tag: v for tag, v in out.items() if v is not None}


def summary_scalars(results: Mapping[str, Any]) -> dict[str, float]:
    """The final numbers of a run's results (``results.json`` or ``train``'s summary)."""
    out = {key: _number(results.get(key)) for key in RESULT_KEYS}
    wall = results.get("wall_seconds")
    if isinstance(wall, Mapping):
        out.update({f"wall_seconds.{k}": _number(v) for k, v in wall.items()})
    return {k: v for k, v in out.items() if v is not None}


def _jsonable(results: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(results, default=str))


class _Tracker(Callback):
    """What every logger shares: where it writes, and the step (the epoch) of what it logs."""

    #: the folder under the run directory
    subdir = ""
    what = ""

    def __init__(self, root: str | Path | None) -> None:
        self.root = None if root is None else Path(root)
        self.epoch = 0

    def _root(self, config: Mapping[str, Any]) -> Path:
        if self.root is not None:
            return self.root
        out = config.get("out_dir")
        if out is None:
            raise ValueError(
                f"the {self.what} logger writes under the run directory, and this run has none: "
                f"train with out_dir=... (--out), or give the logger a folder of its own"
            )
        return Path(out) / self.subdir if self.subdir else Path(out)

    def on_run_start(self, config):
        self.epoch = int(config.get("start_epoch", 1)) - 1

    def _step(self, payload: Mapping[str, Any]) -> int:
        self.epoch = int(payload.get("epoch", self.epoch))
        return self.epoch


class TensorBoardLogger(_Tracker):
    """Scalars, hyper-parameters (TensorBoard's HParams tab), figures and results with
    :class:`torch.utils.tensorboard.SummaryWriter`, in ``log_dir`` (default
    ``<run dir>/tensorboard``; view with ``tensorboard --logdir <run dir>``)."""

    subdir, what = "tensorboard", "TensorBoard"

    def __init__(self, log_dir: str | Path | None = None) -> None:
        super().__init__(log_dir)
        self._tb = _require("torch.utils.tensorboard", "tensorboard", self.what)
        self.writer = None

    def on_run_start(self, config):
        super().on_run_start(config)
        from torch.utils.tensorboard.summary import hparams

        self.log_dir = self._root(config)
        # Events a previous run left at this run's epochs and later (a run started again with
        # --overwrite, or resumed after a crash within an epoch) are purged: one curve a tag.
        self.writer = self._tb.SummaryWriter(log_dir=str(self.log_dir), purge_step=self.epoch + 1)
        hp = {k: _plain(v) for k, v in flatten_config(config).items()}
        metrics = {tag: 0.0 for tag in (*EPOCH_TAGS.values(), *EVALUATION_TAGS.values())}
        exp, ssi, _ = hparams(hp, metrics)
        self.writer.file_writer.add_summary(exp)
        self.writer.file_writer.add_summary(ssi)
        text = json.dumps(_jsonable(config), indent=2)
        self.writer.add_text("config", f"```\n{text}\n```", self.epoch)
        self.writer.flush()

    def _scalars(self, scalars: dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()  # what was logged survives a crash

    def on_epoch_end(self, metrics):
        self._scalars(epoch_scalars(metrics), self._step(metrics))

    def on_evaluation(self, results):
        self._scalars(evaluation_scalars(results), self._step(results))

    def on_figures(self, paths):
        from matplotlib import image

        for path in paths:
            pixels = image.imread(path)  # H x W x (3 or 4), floats in [0, 1]
            fmt = "HW" if pixels.ndim == 2 else "HWC"
            self.writer.add_image(f"figures/{Path(path).stem}", pixels, self.epoch, dataformats=fmt)
        self.writer.flush()

    def on_run_end(self, results):
        from torch.utils.tensorboard.summary import hparams

        text = json.dumps(_jsonable({k: v for k, v in results.items() if k != "history"}), indent=2)
        self.writer.add_text("results", f"```\n{text}\n```", self.epoch)
        _, _, sei = hparams({}, {})  # the HParams session ends: status "success"
        self.writer.file_writer.add_summary(sei)
        self.writer.close()

    def on_run_error(self, error):
        if self.writer is not None:
            self.writer.add_text("error", f"{type(error).__name__}: {error}", self.epoch)
            self.writer.close()


def _mlflow_default_uri(root: Path) -> str:
    # MLflow 3's file store (file:./mlruns) refuses to start ("maintenance mode") unless
    # MLFLOW_ALLOW_FILE_STORE=true; its recommended local backend is a SQLite file.
    return "sqlite:///" + str((root / "mlflow.db").resolve())


class MLflowLogger(_Tracker):
    """Metrics (with the epoch as the step), the flattened config as parameters, the figures and
    ``results.json`` as artifacts, with :class:`mlflow.MlflowClient`.

    The store: ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else a local SQLite file needing
    no server, ``<run dir>/mlflow/mlflow.db``, with the artifacts in ``<run dir>/mlflow/
    artifacts`` (``mlflow ui --backend-store-uri sqlite:///<run dir>/mlflow/mlflow.db``).
    Each call of ``train``/``run_experiment`` is one MLflow run of ``experiment``.
    """

    subdir, what = "mlflow", "MLflow"

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        experiment: str = "pyro_vae",
        run_name: str | None = None,
        root: str | Path | None = None,
    ) -> None:
        super().__init__(root)
        self._mlflow = _require("mlflow", "mlflow", self.what)
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.client = self.run_id = self.resolved_uri = None

    def on_run_start(self, config):
        super().on_run_start(config)
        from mlflow.entities import Param

        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        artifacts = None
        if uri is None:
            root = self._root(config)
            root.mkdir(parents=True, exist_ok=True)
            uri, artifacts = _mlflow_default_uri(root), (root / "artifacts").resolve().as_uri()
        self.resolved_uri = uri  # this run's store; the next run resolves its own again
        self.client = self._mlflow.MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(self.experiment)
        experiment_id = (
            found.experiment_id
            if found is not None
            else self.client.create_experiment(self.experiment, artifact_location=artifacts)
        )
        out = config.get("out_dir")
        name = self.run_name or (Path(out).name if out else None)
        run = self.client.create_run(experiment_id, run_name=name)
        self.run_id = run.info.run_id
        params = [
            Param(k, str(_plain(v))[:6000]) for k, v in flatten_config(config).items()
        ]  # MLflow's limit on a parameter's value
        for i in range(0, len(params), 100):  # and on a batch
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def _log(self, scalars: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(tag, value, now, step) for tag, value in scalars.items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def on_epoch_end(self, metrics):
        self._log(epoch_scalars(metrics), self._step(metrics))

    def on_evaluation(self, results):
        self._log(evaluation_scalars(results), self._step(results))

    def on_figures(self, paths):
        for path in paths:
            self.client.log_artifact(self.run_id, str(path), artifact_path="figures")

    def on_run_end(self, results):
        self.client.log_dict(self.run_id, _jsonable(results), "results.json")
        self.client.set_terminated(self.run_id, "FINISHED")

    def on_run_error(self, error):
        if self.run_id is not None:
            status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
            self.client.set_tag(self.run_id, "error", f"{type(error).__name__}: {error}")
            self.client.set_terminated(self.run_id, status)


def _wandb_logged_in() -> bool:
    """Whether W&B has credentials here (``WANDB_API_KEY``, an identity token file, or a netrc
    entry for its host), read without the network."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    base = os.environ.get("WANDB_BASE_URL")
    hosts = [urlsplit(base).netloc] if base else list(_WANDB_HOSTS)
    path = Path(os.environ.get("NETRC") or "~/.netrc").expanduser()
    try:
        found = netrc.netrc(str(path))
    except (OSError, netrc.NetrcParseError):
        return False
    return any((creds := found.authenticators(h)) and creds[2] for h in hosts)


#: the hosts ``wandb login`` writes into ~/.netrc for W&B's cloud (its new name and its old)
_WANDB_HOSTS = ("api.forge.coreweave.com", "api.wandb.ai")


class WandbLogger(_Tracker):
    """Metrics, the config, the figures (``wandb.Image``) and the final results as the run's
    summary, with ``wandb``, in ``dir`` (default: the run directory; W&B adds ``wandb/``).

    ``mode``: None chooses ``WANDB_MODE`` where it is set, else ``"online"`` when W&B has
    credentials here (``wandb login``, ``WANDB_API_KEY``), else ``"offline"``: nothing leaves
    the machine (W&B's own error reports are turned off too, ``WANDB_ERROR_REPORTING=false``,
    unless set) and ``wandb sync <run dir>/wandb/offline-run-*`` uploads the run later.
    ``init_kwargs`` go to ``wandb.init`` (``entity``, ``tags``, ``group``, ...).
    """

    subdir, what = "", "Weights & Biases"

    def __init__(
        self,
        project: str = "pyro_vae",
        *,
        dir: str | Path | None = None,
        mode: str | None = None,
        name: str | None = None,
        **init_kwargs: Any,
    ) -> None:
        super().__init__(dir)
        self._wandb = _require("wandb", "wandb", self.what)
        self.project, self.mode, self.name, self.init_kwargs = project, mode, name, init_kwargs
        self.run = None

    def resolved_mode(self) -> str | None:
        """The mode passed to ``wandb.init`` (None: W&B reads ``WANDB_MODE`` itself)."""
        if self.mode is not None:
            return self.mode
        if os.environ.get("WANDB_MODE"):
            return None
        return "online" if _wandb_logged_in() else "offline"

    def on_run_start(self, config):
        super().on_run_start(config)
        root = self._root(config)
        root.mkdir(parents=True, exist_ok=True)
        out = config.get("out_dir")
        mode = self.resolved_mode()
        if (mode or os.environ.get("WANDB_MODE")) in ("offline", "disabled", "dryrun"):
            # Else W&B's service still sends its own error reports and telemetry to W&B's
            # server (wandb 0.31 looks its host up even offline). Read when it starts.
            os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        self.run = self._wandb.init(
            project=self.project,
            dir=str(root),
            mode=mode,
            name=self.name or (Path(out).name if out else None),
            config=_jsonable(config),
            **self.init_kwargs,
        )

    def _log(self, scalars: dict[str, Any], step: int) -> None:
        if scalars:
            self.run.log(scalars, step=step)

    def on_epoch_end(self, metrics):
        self._log(epoch_scalars(metrics), self._step(metrics))

    def on_evaluation(self, results):
        self._log(evaluation_scalars(results), self._step(results))

    def on_figures(self, paths):
        images = {f"figures/{Path(p).stem}": self._wandb.Image(str(p)) for p in paths}
        self._log(images, self.epoch)

    def on_run_end(self, results):
        self.run.summary.update(
            {k: v for k, v in summary_scalars(results).items() if math.isfinite(v)}
        )
        self.run.finish()

    def on_run_error(self, error):
        if self.run is not None:
            self.run.summary["error"] = f"{type(error).__name__}: {error}"
            self.run.finish(exit_code=1)


#: ``--logger`` names and their loggers
LOGGERS: dict[str, type[_Tracker]] = {
    "tensorboard": TensorBoardLogger,
    "mlflow": MLflowLogger,
    "wandb": WandbLogger,
}


def make_loggers(names: Iterable[str]) -> list[Callback]:
    """The loggers named (``--logger``), each with its defaults (under the run directory);
    an unknown name is a ``ValueError`` listing the valid ones, a missing extra a
    :class:`~pyro_vae.data.errors.MissingExtraError`."""
    loggers = []
    for name in dict.fromkeys(n.strip().lower() for n in names):  # in order, once each
        if name not in LOGGERS:
            raise ValueError(f"unknown logger {name!r}; valid: {', '.join(LOGGERS)}")
        loggers.append(LOGGERS[name]())
    return loggers
