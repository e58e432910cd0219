"""Faults a demanding user runs into: divergence, foreign folders, one class, damaged files."""

import json
import os
import pathlib
import warnings

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from keras_tie.cli.main import cli
from keras_tie.config import Config, ConfigError
from keras_tie.data import DatasetError, load
from keras_tie.export import ExportError, export_run
from keras_tie.training.callbacks import TrainingDiverged
from keras_tie.training.checkpoint import CheckpointError, latest_checkpoint
from keras_tie.training.runner import train

from test_data_formats import write_mnist_like


def digits_config(**changes):
    values = {"dataset": "digits", "method": "static", "epochs": 2, "batch_size": 64,
              "limit": 512, "model.width": 4, "model.dense_units": 16,
              "tie.initial_pool_size": 64, "tie.pool_capacity": 200,
              "optimizer.classifier_lr": 1e-3}
    values.update(changes)
    return Config.load(None, values)


def test_infinite_numbers_are_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match="optimizer.classifier_lr.*finite"):
        Config.load(None, {"optimizer.classifier_lr": float("inf")})
    result = CliRunner().invoke(cli, ["train", "--dataset", "digits", "--epochs", "3",
                                      "--output", str(tmp_path / "run"),
                                      "--set", "optimizer.classifier_lr=inf"])
    assert result.exit_code != 0 and "finite" in result.output
    assert not (tmp_path / "run").exists()


class _PoisonAtEpoch2(keras.callbacks.Callback):
    """Puts a NaN into the classifier's first kernel when epoch 2 begins."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            kernel = self.model.classifier.trainable_weights[0]
            kernel.assign(np.full(kernel.shape, np.nan, np.float32))


def test_a_diverged_run_fails_and_keeps_its_last_finite_checkpoint(tmp_path):
    run_dir = str(tmp_path / "run")
    with pytest.raises(TrainingDiverged, match="epoch 2, step 1"):
        train(digits_config(epochs=3), run_dir, verbose=0, callbacks=[_PoisonAtEpoch2()])
    info = json.loads(open(os.path.join(run_dir, "run.json")).read())
    assert info["status"] == "failed" and "non-finite" in info["failure"]
    assert info["epochs_completed"] == 1
    assert not os.path.exists(os.path.join(run_dir, "model.keras"))
    directory, state = latest_checkpoint(run_dir)
    assert state["epoch"] == 1 and np.isfinite(state["history"][-1]["loss"])
    with pytest.raises(ExportError, match="failed run.*non-finite"):
        export_run(run_dir, str(tmp_path / "exported"))
    result = CliRunner().invoke(cli, ["evaluate", run_dir, "--ood", "gaussian"])
    assert result.exit_code != 0 and "failed run" in result.output


def test_output_folder_of_something_else_is_refused_and_failed_starts_leave_no_folder(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.keras").write_bytes(b"someone else's model")
    (foreign / "history.csv").write_text("epoch,loss\n")
    with pytest.raises(FileExistsError, match="not empty and is not a keras-tie run"):
        train(digits_config(), str(foreign), verbose=0)
    assert (foreign / "model.keras").read_bytes() == b"someone else's model"
    missing = tmp_path / "new"
    with pytest.raises(ConfigError, match="fewer than one batch"):
        train(digits_config(batch_size=4096), str(missing), verbose=0)
    assert not missing.exists()


def test_one_class_and_stray_idx_labels_are_refused(tmp_path):
    root = tmp_path / "one_class" / "cats"
    root.mkdir(parents=True)
    for i in range(20):
        Image.fromarray(np.full((8, 8), i * 10, np.uint8)).save(root / f"{i:02d}.png")
    config = Config.load(None, {"dataset": f"folder:{tmp_path / 'one_class'}", "method": "plain",
                                "epochs": 1, "batch_size": 4})
    with pytest.raises(ConfigError, match="at least two"):
        train(config, str(tmp_path / "run"), verbose=0)
    labels = np.array([0, 1, 0, 1, 200] * 4)
    write_mnist_like(tmp_path / "idx", np.zeros((20, 28, 28), np.uint8), labels)
    with pytest.raises(DatasetError, match="no image has label 2, 3, 4"):
        load(f"idx:{tmp_path / 'idx'}", split="train", cache_dir=tmp_path / "cache")


@pytest.fixture
def two_checkpoints(tmp_path):
    run_dir = tmp_path / "run"
    train(digits_config(epochs=2), str(run_dir), verbose=0)
    return run_dir, run_dir / "checkpoints"


def _damage(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("what", ["ckpt", "pool", "state", "latest"])
@pytest.mark.slow
def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(two_checkpoints, what):
    run_dir, root = two_checkpoints
    if what == "ckpt":
        _damage(next((root / "epoch_0002").glob("ckpt.data-*")))
    elif what == "pool":
        _damage(root / "epoch_0002" / "pool.npy")
    elif what == "state":
        _damage(root / "epoch_0002" / "state.json")
    else:
        _damage(root / "latest.json")
    expected = 2 if what == "latest" else 1
    with pytest.warns(UserWarning, match="Damaged checkpoint data") as caught:
        directory, state = latest_checkpoint(str(run_dir))
    assert state["epoch"] == expected
    damaged = {"ckpt": "ckpt", "pool": "pool.npy", "state": "state.json", "latest": "latest.json"}
    assert damaged[what] in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        resumed = train(Config().replace(epochs=3), str(run_dir), resume=True, verbose=0)
    assert [h["epoch"] for h in resumed.history] == list(range(1, 4))
    assert np.isfinite(resumed.history[-1]["loss"])


@pytest.mark.slow
def test_no_intact_checkpoint_is_a_clear_error(two_checkpoints):
    run_dir, root = two_checkpoints
    for name in ("epoch_0001", "epoch_0002"):
        _damage(root / name / "state.json")
    result = CliRunner().invoke(cli, ["train", "--output", str(run_dir), "--resume",
                                      "--epochs", "3"])
    assert result.exit_code != 0 and "No intact checkpoint" in result.output
    with pytest.raises(CheckpointError):
        latest_checkpoint(str(run_dir))


@pytest.mark.slow
def test_resume_refuses_fewer_epochs_and_history_csv_counts_from_one(two_checkpoints):
    run_dir, _ = two_checkpoints
    result = CliRunner().invoke(cli, ["train", "--output", str(run_dir), "--resume",
                                      "--epochs", "1"])
    assert result.exit_code != 0 and "only be given more epochs" in result.output
    info = json.loads((run_dir / "run.json").read_text())
    assert info["config"]["epochs"] == 2
    rows = (run_dir / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows] == ["epoch", "1", "2"]


def test_damaged_model_and_tflite_files_are_named(two_checkpoints, tmp_path):
    from keras_tie.evaluation import EvaluationError, evaluate
    from keras_tie.export import ExportedModel

    run_dir, _ = two_checkpoints
    exported = export_run(str(run_dir), str(tmp_path / "exported"), tflite=["float32"])
    lite = os.path.join(exported.path, "tflite", "model_float32.tflite")
    _damage(pathlib.Path(lite))
    with pytest.raises(ExportError, match="model_float32.tflite.*damaged or truncated"):
        ExportedModel(lite)
    _damage(run_dir / "model.keras")
    with pytest.raises(ExportError, match="model.keras.*damaged or truncated"):
        export_run(str(run_dir), str(tmp_path / "again"))
    with pytest.raises(EvaluationError, match="model.keras.*damaged or truncated"):
        evaluate([str(run_dir)], ["gaussian"], ["msp"], limit=20, verbose=0)
