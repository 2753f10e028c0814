"""The TensorBoard, MLflow and W&B loggers: what each wrote, read back by its own library; a
missing extra is a clear error; --logger on the example.

CI installs the extras (``.[dev,trackers]``); ``importorskip`` only spares a user without one.
W&B runs offline here, with no network.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import load_script
from test_examples import _fake_data as fake_image_data

import pyro_vae as pv
from pyro_vae.data.errors import MissingExtraError
from pyro_vae.experiments import cli, loggers
from pyro_vae.experiments.run import run_experiment

ROOT = Path(__file__).resolve().parents[1]
MODEL = pv.ModelConfig(x_dim=784, z_dim=3, hidden_dims=(16,))
TRAIN = pv.TrainConfig(
    epochs=2, batch_size=50, lr=2e-3, eval_samples=4, eval_every=1, progress=False
)
FIGURES = {"training_curves", "samples", "reconstructions", "latent_space"}
INSTALLED = {
    name: importlib.util.find_spec(module) is not None
    for name, module in (("tensorboard", "tensorboard"), ("mlflow", "mlflow"), ("wandb", "wandb"))
}


def _fake_data():
    return fake_image_data(n=200, m=40)


def _offline_wandb(home: Path) -> dict[str, str]:
    """W&B offline, silent, and all its files in ``home``: nothing touches the network or ~."""
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off"}
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        env[var] = str(home / var.lower())
    return env


_NOT_OURS = (
    "WANDB_API_KEY",
    "WANDB_BASE_URL",
    "WANDB_PROJECT",
    "WANDB_ENTITY",
    "MLFLOW_TRACKING_URI",
)


#: what the run set in the environment
SEEN = {}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One tiny run_experiment with every installed logger: ``(out, results)``."""
    out = tmp_path_factory.mktemp("tracked")
    names = [name for name, ok in INSTALLED.items() if ok]
    if not names:
        pytest.skip("no tracker installed (pip install -e '.[trackers]')")
    with pytest.MonkeyPatch.context() as mp:
        for var in _NOT_OURS:
            mp.delenv(var, raising=False)
        for var, value in _offline_wandb(tmp_path_factory.mktemp("wandb_home")).items():
            mp.setenv(var, value)
        before = os.environ.get("WANDB_ERROR_REPORTING")
        results = run_experiment(
            MODEL,
            TRAIN,
            data=_fake_data(),
            out_dir=out,
            log=lambda m: None,
            callbacks=loggers.make_loggers(names),
        )
        SEEN["WANDB_ERROR_REPORTING"] = os.environ.get("WANDB_ERROR_REPORTING")
        if before is None:  # the W&B logger set it (offline); other tests start without it
            os.environ.pop("WANDB_ERROR_REPORTING", None)
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return out, results, history


# -- TensorBoard: EventAccumulator ----------------------------------------------------------


def test_tensorboard_scalars_hparams_and_images_read_back(tracked):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.plugins.hparams import plugin_data_pb2

    out, res, history = tracked
    acc = ea.EventAccumulator(str(out / "tensorboard"), size_guidance={ea.IMAGES: 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {
        "train/elbo",
        "train/lr",
        "train/seconds",
        "test/elbo",
        "test/log_likelihood",
        "test/log_likelihood_stderr",
        "test/kl",
        "test/active_units",
    } == scalars

    def curve(tag):
        return [(e.step, e.value) for e in acc.Scalars(tag)]

    f32 = pytest.approx  # TensorBoard stores float32
    assert curve("train/elbo") == [(r["epoch"], f32(r["train_elbo"], rel=1e-6)) for r in history]
    assert curve("test/log_likelihood") == [
        (r["epoch"], f32(r["test_log_likelihood"], rel=1e-6)) for r in history
    ]
    assert curve("test/kl")[-1] == (2, f32(res["kl"], rel=1e-6))
    assert curve("test/active_units")[-1] == (2, res["active_units"])
    assert curve("train/lr") == [(1, f32(2e-3)), (2, f32(2e-3))]
    images = {t.removeprefix("figures/"): acc.Images(t) for t in acc.Tags()["images"]}
    assert set(images) == FIGURES
    png = out / "training_curves.png"
    from matplotlib import image

    h, w = image.imread(png).shape[:2]
    (event,) = images["training_curves"]
    assert (event.step, event.height, event.width) == (2, h, w)
    assert event.encoded_image_string[:4] == b"\x89PNG"
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    assert hp["model.z_dim"].number_value == 3 and hp["train.lr"].number_value == f32(2e-3)
    assert hp["model.hidden_dims"].string_value == "[16]" and hp["dataset"].string_value == "mnist"
    assert "_hparams_/session_end_info" in content  # the run ended
    assert {"config", "results"} <= {t.split("/")[0] for t in acc.Tags()["tensors"]}


# -- MLflow: MlflowClient on the local store ------------------------------------------------


def test_mlflow_metrics_params_and_artifacts_read_back(tracked):
    pytest.importorskip("mlflow")
    import mlflow
    from mlflow import MlflowClient

    out, res, history = tracked
    db = out / "mlflow" / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("pyro_vae")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == out.name

    def curve(key):
        return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]

    assert curve("train/elbo") == [(r["epoch"], pytest.approx(r["train_elbo"])) for r in history]
    assert curve("test/elbo") == [(r["epoch"], pytest.approx(r["test_elbo"])) for r in history]
    assert curve("test/log_likelihood")[-1] == (2, pytest.approx(res["test_log_likelihood"]))
    assert curve("train/lr") == [(1, 2e-3), (2, 2e-3)]
    assert run.data.metrics["test/active_units"] == res["active_units"]
    params = run.data.params
    assert params["model.z_dim"] == "3" and params["train.lr"] == "0.002"
    assert params["model.hidden_dims"] == "[16]" and params["train_size"] == "200"
    figures = client.list_artifacts(run.info.run_id, "figures")
    assert {Path(f.path).stem for f in figures} == FIGURES
    assert mlflow.artifacts.load_dict(run.info.artifact_uri + "/results.json") == res
    assert (
        Path(client.download_artifacts(run.info.run_id, "figures/samples.png")).read_bytes()
        == (out / "samples.png").read_bytes()
    )
    assert str((out / "mlflow" / "artifacts").resolve()) in run.info.artifact_uri  # in the run


# -- W&B: the offline run's .wandb log, read by `wandb leet inspect` -------------------------


def _wandb_records(path: Path, *flags: str):
    env = {k: v for k, v in os.environ.items() if k not in _NOT_OURS}
    env.update(_offline_wandb(path.parents[2]), WANDB_ERROR_REPORTING="false")
    proc = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", *flags, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_wandb_offline_run_reads_back(tracked):
    pytest.importorskip("wandb")
    out, res, history = tracked
    (run_dir,) = (out / "wandb").glob("offline-run-*")  # offline, under the run directory
    (log,) = run_dir.glob("run-*.wandb")
    summary = json.loads(_wandb_records(log, "--summary"))
    assert summary["state"] == "finished" and summary["project"] == "pyro_vae"
    config = summary["config"]
    assert config["model"]["z_dim"] == 3 and config["train"]["lr"] == 2e-3
    assert config["dataset"] == "mnist"
    final = summary["summary"]
    assert final["test_log_likelihood"] == pytest.approx(res["test_log_likelihood"])
    assert final["active_units"] == res["active_units"]
    records = [json.loads(line) for line in _wandb_records(log).splitlines() if line.strip()]
    (start,) = [r for r in records if r["type"] == "run"]
    assert start["run"]["telemetry"]["feature"]["offline"] is True
    assert SEEN["WANDB_ERROR_REPORTING"] == "false"  # W&B's own reports stay home too
    rows = {}
    for r in records:
        if r["type"] == "history":
            rows.setdefault(r["history"]["step"].get("num", 0), {}).update(r["history"]["item"])
    assert sorted(rows) == [1, 2]
    for r in history:
        row = rows[r["epoch"]]
        assert row["train/elbo"] == pytest.approx(r["train_elbo"])
        assert row["test/log_likelihood"] == pytest.approx(r["test_log_likelihood"])
        assert row["train/lr"] == 2e-3
    figures = {k.split(".")[0].removeprefix("figures/") for k in rows[2] if "figures/" in k}
    assert figures == FIGURES
    assert rows[2]["figures/samples._type"] == "image-file"
    assert (run_dir / "files" / rows[2]["figures/samples.path"]).stat().st_size > 0


def test_wandb_goes_online_only_with_credentials(monkeypatch, tmp_path):
    pytest.importorskip("wandb")
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert loggers.WandbLogger().resolved_mode() == "offline"  # no credentials here
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    assert loggers.WandbLogger().resolved_mode() == "online"  # `wandb login` wrote this
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert loggers.WandbLogger().resolved_mode() is None  # W&B reads WANDB_MODE itself
    assert loggers.WandbLogger(mode="offline").resolved_mode() == "offline"


# -- a plain train() with a logger, and without a run directory ------------------------------


def test_a_logger_on_plain_train_closes_its_run(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import event_accumulator as ea

    x = torch.bernoulli(torch.rand(64, 6, generator=torch.Generator().manual_seed(0)))
    torch.manual_seed(0)
    config = pv.TrainConfig(epochs=2, batch_size=32, progress=False)
    tb = loggers.TensorBoardLogger()
    pv.train(pv.VAE(6, 2, (8,)), x, x[:16], config, out_dir=tmp_path, callbacks=[tb])
    acc = ea.EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("test/elbo")] == [1, 2]
    assert [e.step for e in acc.Scalars("test/log_likelihood")] == [2]
    with pytest.raises(ValueError, match="train with out_dir"):
        pv.train(pv.VAE(6, 2, (8,)), x, config=config, callbacks=[loggers.TensorBoardLogger()])


def test_flatten_config():
    flat = loggers.flatten_config({"model": {"z_dim": 3, "dims": [1, 2]}, "empty": {}, "a": None})
    assert flat == {"model.z_dim": 3, "model.dims": [1, 2], "empty": {}, "a": None}
    assert [loggers._plain(v) for v in flat.values()] == [3, "[1, 2]", "{}", "null"]


# -- a missing extra: the error names the pip command ----------------------------------------

MODULES = {"tensorboard": "torch.utils.tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_missing_extra_names_the_pip_command(name, monkeypatch):
    monkeypatch.setitem(sys.modules, MODULES[name], None)  # as if not installed
    with pytest.raises(MissingExtraError, match=rf'pip install -e "\.\[{name}\]"') as e:
        loggers.make_loggers([name])
    assert '".[trackers]"' in str(e.value) and isinstance(e.value, RuntimeError)


# -- --logger on the example ----------------------------------------------------------------


@pytest.fixture(scope="module")
def example():
    return load_script(ROOT / "examples" / "mnist_svi.py", "mnist_svi_loggers")


def test_logger_flag_is_repeatable_and_comma_separated(example):
    args = example.build_parser().parse_args(
        ["--logger", "tensorboard,MLflow", "--logger", "wandb"]
    )
    assert args.logger == ["tensorboard", "mlflow", "wandb"]
    assert example.build_parser().parse_args([]).logger is None
    assert cli.loggers(example.build_parser().parse_args([])) == []


def test_an_unknown_logger_is_a_clear_error(example, capsys):
    with pytest.raises(SystemExit) as e:
        example.main(["--logger", "tensorboard,comet"])
    assert e.value.code == 2
    assert "unknown logger comet; choose from tensorboard, mlflow, wandb" in capsys.readouterr().err


def test_a_missing_extra_ends_the_example_before_any_work(example, monkeypatch, capsys, tmp_path):
    loaded = []
    monkeypatch.setattr("pyro_vae.experiments.run.load_dataset", lambda *a, **k: loaded.append(1))
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(SystemExit) as e:
        example.main(["--logger", "mlflow", "--out", str(tmp_path)])
    assert e.value.code == 2 and not loaded
    assert 'pip install -e ".[mlflow]"' in capsys.readouterr().err


def test_the_example_logs_to_tensorboard_under_out(example, monkeypatch, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import event_accumulator as ea

    monkeypatch.setattr("pyro_vae.experiments.run.load_dataset", lambda *a, **k: _fake_data())
    small = ["--epochs", "1", "--eval-samples", "3", "--no-progress", "--no-figures"]
    res = example.main(
        [*small, "--hidden-dims", "16", "--logger", "tensorboard", "--out", str(tmp_path)]
    )
    acc = ea.EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    (ll,) = acc.Scalars("test/log_likelihood")
    assert (ll.step, ll.value) == (1, pytest.approx(res["test_log_likelihood"], rel=1e-6))
    assert not acc.Tags()["images"]  # --no-figures


def test_a_run_started_again_in_the_same_folder_replaces_the_tensorboard_curves(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import event_accumulator as ea

    x = torch.bernoulli(torch.rand(64, 6, generator=torch.Generator().manual_seed(0)))
    for lr in (1e-3, 1e-2):  # the second as --overwrite would start it
        torch.manual_seed(0)
        config = pv.TrainConfig(epochs=2, batch_size=32, progress=False, lr=lr)
        tb = loggers.TensorBoardLogger()
        pv.train(pv.VAE(6, 2, (8,)), x, x[:16], config, out_dir=tmp_path, callbacks=[tb])
    acc = ea.EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/lr")] == [
        (1, pytest.approx(1e-2)),
        (2, pytest.approx(1e-2)),
    ]
