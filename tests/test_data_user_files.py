"""The user's own data sets: ``load_dataset(PATH)`` and ``--dataset PATH`` for .npy, .npz, .pt
files and folders of images (tiny files made here), and the clear errors for bad ones."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script

import pyro_vae as pv
from pyro_vae.data import CorruptDataError, DatasetNotFoundError, DatasetWarning
from pyro_vae.data.datasets import _is_path
from pyro_vae.data.errors import MissingExtraError
from pyro_vae.data.user_files import SPLIT_SEED, TEST_FRACTION, load_user_data
from pyro_vae.experiments.cli import dataset_name_or_path, image_shape

ROOT = Path(__file__).resolve().parents[1]
PIL = pytest.importorskip("PIL.Image")


def _bytes(n, *shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


# ------------------------------------------------------------------------------ formats


def test_npz_with_train_test_and_labels(tmp_path):
    train, test = _bytes(30, 8, 8), _bytes(10, 8, 8, seed=1)
    path = tmp_path / "d.npz"
    np.savez(
        path,
        train=train,
        test=test,
        train_labels=np.arange(30) % 3,
        test_labels=np.arange(10) % 3,
    )
    data = pv.load_dataset(str(path))
    assert data.name == str(path) and data.image_shape == (8, 8)
    assert data.train_x.shape == (30, 64) and data.test_x.shape == (10, 64)
    assert data.train_x.dtype == torch.float32
    torch.testing.assert_close(data.train_x, torch.from_numpy(train.reshape(30, 64)) / 255.0)
    assert data.train_y.tolist() == (np.arange(30) % 3).tolist()
    assert data.class_names == ("0", "1", "2") and data.has_labels
    assert str(path.resolve()) in data.source and "train 30 / test 10 images as given" in (
        data.source
    )


def test_npz_accepts_x_train_style_names(tmp_path):
    path = tmp_path / "d.npz"
    x_train, x_test = _bytes(20, 4, 4), _bytes(5, 4, 4)
    np.savez(path, x_train=x_train, y_train=np.zeros(20), x_test=x_test, y_test=np.ones(5))
    data = load_user_data(path)
    assert (len(data.train_x), len(data.test_x)) == (20, 5)
    assert data.test_y.tolist() == [1] * 5 and data.test_y.dtype == torch.int64


def test_one_array_is_split_at_random_with_a_fixed_seed(tmp_path):
    x = np.arange(50 * 9, dtype=np.float32).reshape(50, 9) / (50 * 9)  # flat, 3x3
    y = np.arange(50)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = load_user_data(tmp_path / "d.npz")
    n_test = round(TEST_FRACTION * 50)
    assert (len(data.train_x), len(data.test_x)) == (50 - n_test, n_test)
    assert data.image_shape == (3, 3)
    # Labels travel with their images, the split is a partition, and it is the same every time.
    idx = torch.cat([data.train_y, data.test_y])
    assert sorted(idx.tolist()) == list(range(50))
    torch.testing.assert_close(torch.cat([data.train_x, data.test_x]), torch.from_numpy(x)[idx])
    again = load_user_data(tmp_path / "d.npz")
    assert torch.equal(again.test_y, data.test_y)
    assert f"split at random (seed {SPLIT_SEED}) into 45 train / 5 test" in data.source


def test_npz_with_a_single_unnamed_array(tmp_path):
    np.savez(tmp_path / "d.npz", _bytes(20, 5, 5))  # stored as arr_0
    data = load_user_data(tmp_path / "d.npz")
    assert data.image_shape == (5, 5) and not data.has_labels
    assert data.train_y is None and data.class_names == ()


def test_npy_channels_first_and_channels_last(tmp_path):
    x = np.random.default_rng(0).random((20, 3, 4, 6)).astype(np.float32)
    np.save(tmp_path / "first.npy", x)
    np.save(tmp_path / "last.npy", x.transpose(0, 2, 3, 1))
    first, last = (load_user_data(tmp_path / f"{n}.npy") for n in ("first", "last"))
    assert first.image_shape == last.image_shape == (3, 4, 6) and first.num_pixels == 72
    torch.testing.assert_close(first.train_x, last.train_x)
    np.save(tmp_path / "gray.npy", x[:, :1])
    assert load_user_data(tmp_path / "gray.npy").image_shape == (4, 6)


def test_pt_tensor_and_dict_of_tensors(tmp_path):
    x = torch.rand(20, 16) < 0.5  # binary images, 4x4
    torch.save(x, tmp_path / "t.pt")
    data = load_user_data(tmp_path / "t.pt")
    assert set(torch.cat([data.train_x, data.test_x]).unique().tolist()) <= {0.0, 1.0}
    assert data.image_shape == (4, 4)
    torch.save({"train": x[:15], "test": x[15:], "train_labels": torch.arange(15),
                "test_labels": torch.arange(5)}, tmp_path / "d.pt")  # fmt: skip
    data = load_user_data(tmp_path / "d.pt")
    torch.testing.assert_close(data.test_x, x[15:].float())
    assert data.test_y.tolist() == [0, 1, 2, 3, 4]


def test_binary_integers_are_kept_and_bytes_scaled(tmp_path):
    np.save(tmp_path / "bin.npy", np.ones((10, 4, 4), dtype=np.int64))
    assert load_user_data(tmp_path / "bin.npy").train_x.max() == 1.0
    x = np.full((10, 4, 4), 255, dtype=np.int32)
    np.save(tmp_path / "bytes.npy", x)
    assert load_user_data(tmp_path / "bytes.npy").train_x.max() == 1.0


def test_small_integer_pixels_warn_that_they_are_read_as_bytes(tmp_path):
    np.save(tmp_path / "d.npy", np.arange(16 * 20).reshape(20, 16) % 17)  # sklearn digits: 0..16
    with pytest.warns(DatasetWarning, match=r"0\.\.16, read as bytes out of 255.*x / 16"):
        load_user_data(tmp_path / "d.npy")


def test_string_labels_become_class_names(tmp_path):
    labels = np.array(["cat", "dog"] * 10)
    np.savez(tmp_path / "d.npz", x=_bytes(20, 4, 4), y=labels)
    data = load_user_data(tmp_path / "d.npz")
    assert data.class_names == ("cat", "dog")
    assert set(torch.cat([data.train_y, data.test_y]).tolist()) == {0, 1}


def test_image_shape_given_for_flat_non_square_images(tmp_path):
    np.save(tmp_path / "d.npy", _bytes(20, 12))
    with pytest.raises(ValueError, match=r"12 is not a square.*--image-shape 1,H,W"):
        load_user_data(tmp_path / "d.npy")
    assert load_user_data(tmp_path / "d.npy", image_shape=(1, 3, 4)).image_shape == (3, 4)
    assert load_user_data(tmp_path / "d.npy", image_shape=(3, 4)).image_shape == (3, 4)
    with pytest.raises(ValueError, match=r"image shape \(1, 5, 5\) does not fit.*C\*H\*W = 12"):
        load_user_data(tmp_path / "d.npy", image_shape=(1, 5, 5))
    with pytest.raises(ValueError, match="4 channels"):
        load_user_data(tmp_path / "d.npy", image_shape=(4, 3, 1))


def test_the_flat_non_square_message_names_the_pixel_count(tmp_path):
    np.save(tmp_path / "d.npy", _bytes(20, 12))
    with pytest.raises(ValueError) as e:
        load_user_data(tmp_path / "d.npy")
    assert "with H*W = 12, or save" in str(e.value) and "{d}" not in str(e.value)


# -------------------------------------------------------------------------- image folders


def _png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.fromarray(pixels).save(path)


def test_folder_with_class_subfolders(tmp_path):
    for i in range(6):
        _png(tmp_path / "imgs" / ("b" if i % 2 else "a") / f"{i}.png", _bytes(1, 5, 7, seed=i)[0])
    data = pv.load_dataset(str(tmp_path / "imgs"))
    assert data.image_shape == (5, 7) and data.class_names == ("a", "b")
    assert len(data.train_x) + len(data.test_x) == 6
    assert "image folder" in data.source and "labelled" in data.source


def test_flat_folder_is_unlabelled_and_rgb_jpegs_keep_colour(tmp_path):
    for i in range(4):
        _png(tmp_path / "gray" / f"{i}.png", _bytes(1, 4, 4, seed=i)[0])
    assert not load_user_data(tmp_path / "gray").has_labels
    for i in range(4):
        rgb = np.zeros((6, 6, 3), dtype=np.uint8)
        rgb[..., i % 3] = 255
        _png(tmp_path / "rgb" / f"{i}.png", rgb)
    (tmp_path / "rgb" / "notes.txt").write_text("ignored")
    data = load_user_data(tmp_path / "rgb")
    assert data.image_shape == (3, 6, 6)


def test_folder_with_train_and_test_subfolders(tmp_path):
    for split, n in (("train", 5), ("test", 2)):
        for i in range(n):
            _png(tmp_path / "d" / split / f"c{i % 2}" / f"{i}.png", _bytes(1, 4, 4, seed=i)[0])
    data = load_user_data(tmp_path / "d")
    assert (len(data.train_x), len(data.test_x)) == (5, 2)
    assert data.test_y.tolist() == [0, 1] and data.class_names == ("c0", "c1")
    assert "as given" in data.source


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        load_user_data(tmp_path / "empty")
    _png(tmp_path / "sizes" / "a.png", _bytes(1, 4, 4)[0])
    _png(tmp_path / "sizes" / "b.png", _bytes(1, 5, 4)[0])
    with pytest.raises(ValueError, match="same size; resize them"):
        load_user_data(tmp_path / "sizes")
    _png(tmp_path / "mixed" / "a.png", _bytes(1, 4, 4)[0])
    _png(tmp_path / "mixed" / "cls" / "b.png", _bytes(1, 4, 4)[0])
    with pytest.raises(ValueError, match="both images .* and subfolders"):
        load_user_data(tmp_path / "mixed")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"not a png")
    with pytest.raises(CorruptDataError, match="could not read the image .*a.png"):
        load_user_data(tmp_path / "bad")
    PIL.fromarray(np.zeros((4, 4), dtype=np.uint16)).save(tmp_path / "deep.png")
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep.png").rename(tmp_path / "deep" / "a.png")
    with pytest.raises(ValueError, match="only 8-bit images"):
        load_user_data(tmp_path / "deep")


def test_a_folder_without_pillow_names_the_extra(tmp_path, monkeypatch):
    _png(tmp_path / "d" / "a.png", _bytes(1, 4, 4)[0])
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(MissingExtraError, match=r'pip install -e "\.\[images\]"'):
        load_user_data(tmp_path / "d")
    assert issubclass(MissingExtraError, RuntimeError)  # the examples end with its message


# -------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "make,error,message",
    [
        (lambda p: None, DatasetNotFoundError, "no such file or folder"),
        (lambda p: p.with_suffix(".csv").write_text("1,2"), ValueError, "unknown extension '.csv'"),
        (
            lambda p: np.save(p.with_suffix(".npy"), np.array([[np.nan, 0.5, 0.1, 0.2]] * 4)),
            ValueError,
            r"d.npy: data contains 4 .*NaN",
        ),
        (
            lambda p: np.savez(p.with_suffix(".npz"), x=_bytes(10, 4, 4), y=np.arange(9)),
            ValueError,
            "has 9 entries but there are 10 images",
        ),
        (
            lambda p: np.save(p.with_suffix(".npy"), np.full((4, 4, 4), 300)),
            ValueError,
            "integer pixels from 300 to 300; integers are read as bytes 0..255",
        ),
        (
            lambda p: np.save(p.with_suffix(".npy"), np.array([{"a": 1}] * 4), allow_pickle=True),
            ValueError,
            "Python objects .*allow_pickle=False",
        ),
        (
            lambda p: np.savez(p.with_suffix(".npz"), x=_bytes(4, 2, 2), extra=np.zeros(1)),
            ValueError,
            r"arrays named \['extra'\] .* train and test",
        ),
        (
            lambda p: np.savez(
                p.with_suffix(".npz"),
                train=_bytes(4, 2, 2),
                test=_bytes(2, 2, 2),
                train_labels=np.zeros(4),
            ),  # fmt: skip
            ValueError,
            "labels for both splits or for neither",
        ),
        (
            lambda p: np.savez(p.with_suffix(".npz"), train=_bytes(4, 2, 2), test=_bytes(2, 3, 3)),
            ValueError,
            "both splits need the same image shape",
        ),
        (
            lambda p: np.savez(p.with_suffix(".npz"), x=_bytes(4, 2, 2), y=np.zeros((4, 3))),
            ValueError,
            r"labels are 1-D class indices \[N\] \(one-hot labels: save y.argmax\(1\)\)",
        ),
        (
            lambda p: np.save(p.with_suffix(".npy"), _bytes(4, 2, 2, 2, 2)),
            ValueError,
            "more than 4 dimensions",
        ),
        (
            lambda p: torch.save([torch.zeros(4, 4)], p.with_suffix(".pt")),
            TypeError,
            "holds a list; a .pt data set is a tensor",
        ),
        (
            lambda p: p.with_suffix(".npz").write_bytes(b"PK\x03\x04 truncated"),
            CorruptDataError,
            "could not read .*d.npz",
        ),
        (
            lambda p: p.with_suffix(".npy").write_text("1,2,3"),
            CorruptDataError,
            "is not a numpy .npy or .npz file",
        ),
    ],
    ids=[
        "missing",
        "extension",
        "nan",
        "label-length",
        "int-range",
        "pickle",
        "unknown-key",
        "one-split-labels",
        "split-shapes",
        "one-hot",
        "5-d",
        "pt-list",
        "corrupt-npz",
        "not-numpy",
    ],
)
def test_bad_files_give_clear_errors(tmp_path, make, error, message):
    base = tmp_path / "d"
    make(base)
    written = [p for p in tmp_path.iterdir()] or [base.with_suffix(".npz")]
    with pytest.raises(error, match=message):
        load_user_data(written[0])


# ---------------------------------------------------------------- load_dataset and the CLI


def test_load_dataset_routes_paths_and_refuses_what_does_not_apply(tmp_path, monkeypatch):
    np.save(tmp_path / "d.npy", _bytes(10, 4, 4))
    assert pv.load_dataset(tmp_path / "d.npy").image_shape == (4, 4)  # a Path object too
    with pytest.raises(ValueError, match="drop data_dir"):
        pv.load_dataset(str(tmp_path / "d.npy"), data_dir=tmp_path)
    with pytest.raises(ValueError, match="images are always 28x28"):
        pv.load_dataset("mnist", image_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="unknown dataset 'cifar'.*or the path of a .npy"):
        pv.load_dataset("cifar")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnist").mkdir()
    assert not _is_path("mnist") and _is_path("./mnist")  # the built-in name wins
    assert _is_path("missing.npz")


def test_cli_types():
    assert dataset_name_or_path("mnist") == "mnist"
    assert dataset_name_or_path("not/there.npz") == "not/there.npz"  # the loader says it's missing
    with pytest.raises(argparse.ArgumentTypeError, match="invalid choice: 'cifar'"):
        dataset_name_or_path("cifar")
    assert image_shape("1,8,8") == (1, 8, 8) and image_shape("8 8") == (8, 8)
    with pytest.raises(argparse.ArgumentTypeError, match="C,H,W or H,W"):
        image_shape("1,2,3,4")


# ------------------------------------------------------------------------------ end to end

SMALL = ["--epochs", "1", "--eval-samples", "5", "--no-progress", "--batch-size", "50"]


@pytest.fixture(scope="module")
def example():
    return load_script(ROOT / "examples" / "mnist_svi.py", "mnist_svi_user_files")


def test_example_trains_on_an_npz_at_its_own_image_size(example, tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.random((120, 8, 8)) < 0.3).astype(np.float32)
    np.savez(tmp_path / "tiny.npz", x=x, y=rng.integers(0, 3, 120))
    out = tmp_path / "run"
    res = example.main(
        [*SMALL, "--dataset", str(tmp_path / "tiny.npz"), "--z-dim", "2", "--out", str(out)]
    )
    assert res["dataset"] == str(tmp_path / "tiny.npz") and res["image_shape"] == [8, 8]
    assert "split at random" in res["data_source"] and res["model"]["x_dim"] == 64
    assert (res["train_size"], res["test_size"]) == (108, 12)
    assert set(res["figures"]) >= {"samples.png", "latent_space.png", "manifold.png"}
    assert json.loads((out / "results.json").read_text())["dataset"] == res["dataset"]


def test_example_on_an_unlabelled_flat_file_with_a_given_shape(example, tmp_path):
    x = (np.random.default_rng(0).random((60, 12)) < 0.5).astype(np.uint8)
    np.save(tmp_path / "flat.npy", x)
    argv = [*SMALL, "--dataset", str(tmp_path / "flat.npy"), "--out", str(tmp_path / "run")]
    res = example.main([*argv, "--image-shape", "1,3,4"])
    assert res["image_shape"] == [3, 4] and "latent_space.png" in res["figures"]


def test_example_reports_out_of_support_values(example, tmp_path, capsys):
    np.save(tmp_path / "gray.npy", np.linspace(0, 2, 40 * 4, dtype=np.float32).reshape(40, 4))
    argv = [*SMALL, "--dataset", str(tmp_path / "gray.npy"), "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as e:
        example.main(argv)
    assert e.value.code == 2 and "expects values in [0, 1]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        example.main([*argv, "--likelihood", "continuous_bernoulli", "--overwrite"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "continuous_bernoulli likelihood needs" in err
    with pytest.raises(SystemExit) as e:
        example.main([*SMALL, "--dataset", str(tmp_path / "none.npz"), "--out", str(tmp_path)])
    assert e.value.code == 2 and "no such file or folder" in capsys.readouterr().err
