"""End-to-end training on a small slice of the real MNIST, through the CLI and the API."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from keras_tie.cli.main import cli
from keras_tie.config import Config, ConfigError
from keras_tie.data import load
from keras_tie.inference import predict_logits
from keras_tie.training.checkpoint import latest_checkpoint
from keras_tie.training.runner import train

SMALL = ["--set", "tie.samples_per_class=20", "--set", "tie.generator_steps_per_epoch=4",
         "--set", "tie.initial_pool_size=64", "--set", "tie.pool_capacity=400",
         "--set", "optimizer.classifier_lr=0.001"]


def small_config(shared_data_dir, **changes):
    values = {"dataset": "mnist", "epochs": 2, "batch_size": 64, "limit": 512,
              "data_dir": str(shared_data_dir), "tie.samples_per_class": 20,
              "tie.generator_steps_per_epoch": 4, "tie.initial_pool_size": 64,
              "tie.pool_capacity": 400, "optimizer.classifier_lr": 1e-3}
    values.update(changes)
    return Config.load(None, values)


@pytest.mark.slow
def test_cli_train_tie_end_to_end_then_reload(tmp_path, shared_data_dir):
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "train", "--dataset", "mnist", "--epochs", "2", "--batch-size", "64", "--limit", "512",
        "--data-dir", str(shared_data_dir), "--output", str(run_dir), "--quiet", *SMALL])
    assert result.exit_code == 0, result.output
    assert "tau_T" in result.output
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "complete" and info["epochs_completed"] == 2
    assert info["num_outputs"] == 11 and info["garbage_index"] == 10
    assert info["config"]["epochs"] == 2 and info["config"]["tie"]["samples_per_class"] == 20
    assert 0.0 < info["tau"] < 1.0
    assert info["test_metrics"]["accuracy"] > 0.5  # 512 images, 2 epochs: well above chance
    history = info["history"]
    for key in ("tau", "pool_size", "inv_entropy", "inv_confidence", "inv_margin", "inv_ue",
                "loss", "inv_kl", "epoch_seconds"):
        assert key in history[-1], key
    assert history[-1]["pool_size"] >= 64
    assert (run_dir / "images" / "inverted_epoch_002.png").stat().st_size > 0
    assert (run_dir / "history.csv").read_text().count("\n") == 3
    assert any(os.scandir(run_dir / "logs"))

    model = keras.saving.load_model(run_dir / "model.keras")
    test = load("mnist", split="test", data_dir=str(shared_data_dir), limit=512)
    reloaded = predict_logits(model, test.images)
    assert reloaded.shape == (512, 11) and np.isfinite(reloaded).all()
    # The run scored the in-memory model on the same 512 test images: the reloaded
    # model must make the same predictions, so the same accuracy to the last image.
    assert np.mean(reloaded.argmax(-1) == test.labels) == info["test_metrics"]["accuracy"]
    generator = keras.saving.load_model(run_dir / "generator.keras")
    assert generator.outputs[0].shape[1:] == (28, 28, 1)


def test_cli_refuses_bad_config_before_training(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--dataset", "digits", "--set", "tie.alpah=1",
                                      "--output", str(tmp_path / "r")])
    assert result.exit_code != 0 and "tie.alpha" in result.output
    assert not (tmp_path / "r").exists()
    result = CliRunner().invoke(cli, ["train", "--resume"])
    assert result.exit_code != 0 and "--output" in result.output


def test_cli_refuses_config_changes_on_resume(tmp_path):
    # A resumed run keeps its saved config: a --set or option that differs from it would be
    # ignored, so it is refused, naming the key; equal values and --epochs pass this check.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    saved = Config.load(None, {"dataset": "digits", "tie.alpha": 0.1}).to_dict()
    (run_dir / "run.json").write_text(json.dumps({"config": saved}))
    base = ["train", "--output", str(run_dir), "--resume"]
    result = CliRunner().invoke(cli, [*base, "--set", "tie.alpha=0.2", "--seed", "0"])
    assert result.exit_code != 0
    assert "tie.alpha = 0.2 (saved: 0.1)" in result.output and "seed" not in result.output
    result = CliRunner().invoke(cli, [*base, "--method", "plain"])
    assert result.exit_code != 0 and "method = 'plain' (saved: 'tie')" in result.output
    result = CliRunner().invoke(cli, [*base, "--set", "tie.alpah=1"])
    assert result.exit_code != 0 and "tie.alpha" in result.output
    result = CliRunner().invoke(cli, [*base, "--config", str(run_dir / "run.json")])
    assert result.exit_code != 0 and "--config" in result.output
    result = CliRunner().invoke(cli, [*base, "--data-dir", str(tmp_path)])
    assert result.exit_code != 0 and "data_dir" in result.output


@pytest.mark.parametrize("method,outputs", [("static", 11), ("plain", 10)])
@pytest.mark.slow
def test_baselines_train_on_the_same_data(tmp_path, shared_data_dir, method, outputs):
    run = train(small_config(shared_data_dir, method=method, epochs=1), str(tmp_path / method),
                verbose=0)
    model = keras.saving.load_model(tmp_path / method / "model.keras")
    assert model.outputs[0].shape[-1] == outputs
    assert run.test_metrics["accuracy"] > 0.3
    assert not (tmp_path / method / "generator.keras").exists()
    if method == "static":  # tau_t is logged; gamma, which only the generator uses, is not
        assert "tau" in run.history[0] and "gamma" not in run.history[0]


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_resume_after_interruption_restores_state(tmp_path, shared_data_dir):
    config = small_config(shared_data_dir)
    run_dir = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train(config, run_dir, verbose=0, callbacks=[_Interrupt()])
    directory, state = latest_checkpoint(run_dir)
    assert state["epoch"] == 1 and state["tau"] is not None
    pool_after_epoch_1 = np.load(os.path.join(directory, "pool.npy"))
    with pytest.raises(FileExistsError):
        train(config, run_dir, verbose=0)  # without --resume: refused, nothing overwritten

    resumed = train(None, run_dir, resume=True, verbose=0)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert resumed.history[0]["tau"] == pytest.approx(state["tau"])
    assert resumed.history[1]["pool_size"] >= len(pool_after_epoch_1)
    info = json.loads(open(os.path.join(run_dir, "run.json")).read())
    assert info["status"] == "complete" and info["epochs_completed"] == 2


@pytest.mark.slow
def test_a_half_written_checkpoint_leaves_the_previous_one_usable(tmp_path, shared_data_dir):
    config = small_config(shared_data_dir, epochs=1)
    run_dir = str(tmp_path / "run")
    train(config, run_dir, verbose=0)
    # a kill during the next checkpoint leaves a temporary folder behind
    os.makedirs(os.path.join(run_dir, "checkpoints", ".tmp_epoch_0002_999"))
    with open(os.path.join(run_dir, "checkpoints", ".tmp_epoch_0002_999", "ckpt.index"),
              "wb") as f:
        f.write(b"\x00partial")
    directory, state = latest_checkpoint(run_dir)
    assert state["epoch"] == 1 and directory.endswith("epoch_0001")
    resumed = train(config.replace(epochs=2), run_dir, resume=True, verbose=0)
    assert len(resumed.history) == 2


def test_flip_augmentation_is_deterministic_and_label_preserving():
    from keras_tie.training.batches import epoch_batches

    images = np.arange(4 * 2 * 3, dtype=np.uint8).reshape(4, 2, 3, 1)
    labels = np.arange(4, dtype=np.int32)

    def first_epoch(augment):
        return [(x.numpy(), y.numpy()) for x, y in
                epoch_batches(images, labels, 4, 3, 0, 1, augment)]

    (plain_x, plain_y), = first_epoch("none")
    (flip_x, flip_y), = first_epoch("flip")
    np.testing.assert_array_equal(plain_y, flip_y)
    mirrored = [np.array_equal(f, p[:, ::-1]) and not np.array_equal(f, p)
                for f, p in zip(flip_x, plain_x)]
    kept = [np.array_equal(f, p) for f, p in zip(flip_x, plain_x)]
    assert all(m or k for m, k in zip(mirrored, kept))
    (again_x, _), = first_epoch("flip")
    np.testing.assert_array_equal(flip_x, again_x)


def test_random_shift_translates_each_image_with_a_black_border():
    from keras_tie.training.batches import SHIFT_PIXELS, epoch_batches, random_shift

    images = tf.reshape(tf.range(1, 2 * 5 * 6 + 1, dtype=tf.float32), [2, 5, 6, 1])
    centre = SHIFT_PIXELS
    # Image 0: no shift. Image 1: the window moves 1 row down and 2 columns left in the
    # padded image, so the content moves up by 1 and right by 2.
    offsets = tf.constant([[centre, centre], [centre + 1, centre - 2]], tf.int32)
    shifted = random_shift(images, offsets).numpy()
    expected = np.zeros((5, 6, 1), np.float32)
    expected[:4, 2:] = images.numpy()[1, 1:, :4]
    np.testing.assert_array_equal(shifted[0], images.numpy()[0])
    np.testing.assert_array_equal(shifted[1], expected)

    data = np.arange(1, 8 * 6 * 6 + 1).reshape(8, 6, 6, 1).astype(np.uint8)
    labels = np.arange(8, dtype=np.int32)
    batches = [[(x.numpy(), y.numpy()) for x, y in
                epoch_batches(data, labels, 8, 3, 0, 1, "shift")] for _ in range(2)]
    (x, y), = batches[0]
    np.testing.assert_array_equal(x, batches[1][0][0])  # drawn from (seed, epoch, step)
    for image, label in zip(x, y):
        # Every shifted image is a window of its own padded original.
        padded = np.pad(data[label, ..., 0] / 255.0, SHIFT_PIXELS)
        windows = [padded[i: i + 6, j: j + 6] for i in range(2 * SHIFT_PIXELS + 1)
                   for j in range(2 * SHIFT_PIXELS + 1)]
        assert any(np.allclose(image[..., 0], w) for w in windows)
    assert not all(np.allclose(image[..., 0], data[label, ..., 0] / 255.0)
                   for image, label in zip(x, y))


@pytest.mark.slow
def test_validation_split_holds_out_images(tmp_path, shared_data_dir):
    from keras_tie.run_folder import validation_split_indices

    train_index, val_index = validation_split_indices(100, 0.2, 0)
    assert len(val_index) == 20 and len(train_index) == 80
    assert not set(train_index) & set(val_index)
    np.testing.assert_array_equal(validation_split_indices(100, 0.2, 0)[1], val_index)
    run = train(small_config(shared_data_dir, method="plain", epochs=1, validation_split=0.25),
                str(tmp_path / "val"), verbose=0)
    assert "val_accuracy" in run.history[-1]
    info = json.loads((tmp_path / "val" / "run.json").read_text())
    assert info["train_images"] == 384 and info["validation"]["fraction"] == 0.25


class _LearningRates(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(self.model.optimizer.learning_rate))
        self.kind = type(self.model.optimizer).__name__


@pytest.mark.slow
def test_cosine_schedule_decays_to_zero_and_resumes_on_its_curve(tmp_path, shared_data_dir):
    with pytest.raises(ConfigError, match="optimizer.classifier_schedule.*'constant', 'cosine'"):
        Config.from_dict({"optimizer": {"classifier_schedule": "step"}})
    config = small_config(shared_data_dir, method="plain", **{
        "optimizer.classifier_schedule": "cosine"})
    run_dir = str(tmp_path / "run")
    first = _LearningRates()
    with pytest.raises(KeyboardInterrupt):
        train(config, run_dir, verbose=0, callbacks=[first, _Interrupt()])
    steps = 512 // 64  # limit // batch_size
    cosine = [1e-3 * 0.5 * (1 + np.cos(np.pi * t / (2 * steps))) for t in range(2 * steps)]
    np.testing.assert_allclose(first.rates, cosine[:steps], rtol=1e-5)
    second = _LearningRates()
    train(None, run_dir, resume=True, verbose=0, callbacks=[second])
    np.testing.assert_allclose(second.rates, cosine[steps:], rtol=1e-5)  # the restored step count


@pytest.mark.slow
def test_adadelta_classifier_optimizer_trains_and_is_refused_when_misspelt(tmp_path,
                                                                          shared_data_dir):
    with pytest.raises(ConfigError,
                       match="optimizer.classifier_optimizer.*'adam', 'adadelta', 'sgd'"):
        Config.from_dict({"optimizer": {"classifier_optimizer": "rmsprop"}})
    config = small_config(shared_data_dir, method="static", epochs=1, **{
        "optimizer.classifier_optimizer": "adadelta", "optimizer.classifier_lr": 1.0})
    rates = _LearningRates()
    run = train(config, str(tmp_path / "run"), verbose=0, callbacks=[rates])
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["config"]["optimizer"]["classifier_optimizer"] == "adadelta"
    assert rates.kind == "Adadelta" and rates.rates == [1.0] * (512 // 64)
    assert np.isfinite(run.history[-1]["loss"]) and run.test_metrics["accuracy"] > 0.3
