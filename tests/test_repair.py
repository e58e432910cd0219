"""SR-OOD: erosion operators, the repair network, its distances, training, the score, the CLI."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from keras_tie.cli.main import cli
from keras_tie.config import Config, ConfigError
from keras_tie.detectors import RepairDistance, get_detector
from keras_tie.models import build_classifier
from keras_tie.methods.repair.unet import build_repair_unet
from keras_tie.methods.repair.distance import l2_distance, layer_distance
from keras_tie.methods.repair.erosion import ErosionSet
from keras_tie.methods.repair.operators import inpaint_operators, parse_operator
from keras_tie.methods.repair.perceptual import PerceptualDistance
from keras_tie.methods.repair.model import RepairModel


def _images(shape, seed=0, low=0.0):
    return np.random.default_rng(seed).uniform(low, 1.0, shape).astype(np.float32)


# -- erosion ------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 28, 28, 1), (2, 32, 32, 3)])
@pytest.mark.parametrize("factor", [2, 4])
def test_downsampling_keeps_shape_and_range(shape, factor):
    x = _images(shape)
    y = ErosionSet([f"down{factor}"], shape[1:]).apply(x, 0).numpy()
    assert y.shape == shape and y.min() >= 0.0 and y.max() <= 1.0
    assert np.abs(y - x).mean() > 0.05  # detail is gone
    constant = np.full(shape, 0.3, np.float32)
    np.testing.assert_allclose(ErosionSet([f"down{factor}"], shape[1:]).apply(constant, 0),
                               constant, atol=1e-6)


def test_downsampling_removes_detail_finer_than_the_factor():
    # A one-pixel checkerboard averages to 0.5 under antialiased downsampling by 2.
    rows, columns = np.indices((28, 28))
    board = ((rows + columns) % 2).astype(np.float32)[None, :, :, None]
    y = ErosionSet(["down2"], (28, 28, 1)).apply(board, 0).numpy()
    np.testing.assert_allclose(y[:, 4:-4, 4:-4], 0.5, atol=0.02)


def test_black_out_zeroes_exactly_the_rectangle():
    x = _images((3, 28, 28, 1), low=0.1)  # no pixel is 0 before the erosion
    # box4x6-2+3: centre (14 - 2, 14 + 3) = (12, 17); rows 10..13, columns 14..19.
    for name, rows, columns in [("box8x8+0+0", slice(10, 18), slice(10, 18)),
                                ("box4x6-2+3", slice(10, 14), slice(14, 20))]:
        y = ErosionSet([name], (28, 28, 1)).apply(x, 0).numpy()
        expected = x.copy()
        expected[:, rows, columns] = 0.0
        np.testing.assert_array_equal(y, expected)
    with pytest.raises(ValueError, match="box20x20\\+8\\+0"):
        ErosionSet(["box20x20+8+0"], (28, 28, 1))


def test_identity_is_identity():
    x = _images((2, 32, 32, 3))
    np.testing.assert_array_equal(ErosionSet(["identity"], (32, 32, 3)).apply(x, 0), x)


def test_one_operator_per_image_matches_each_operator_alone():
    x = _images((6, 28, 28, 1))
    erosions = ErosionSet(["identity", "down2", "box8x8+4-4", "down4"], (28, 28, 1))
    index = np.array([3, 0, 2, 1, 1, 3], np.int32)
    batch = erosions.apply(x, tf.constant(index)).numpy()
    for i, k in enumerate(index):
        np.testing.assert_allclose(batch[i], erosions.apply(x[i:i + 1], int(k))[0], atol=1e-6)


def test_operator_names():
    assert inpaint_operators([8], [0, 4]) == ["box8x8+0+0", "box8x8-4-4", "box8x8-4+4",
                                              "box8x8+4-4", "box8x8+4+4"]
    assert parse_operator("down3").factor == 3
    assert parse_operator("box4x6-2+3").box == (4, 6, -2, 3)
    for bad in ("down1", "down", "box8x8", "blur2"):
        with pytest.raises(ValueError, match="Received: name="):
            parse_operator(bad)


# -- network and distances ----------------------------------------------------


def test_unet_output_shape_and_range():
    for shape, depth in [((28, 28, 1), 2), ((32, 32, 3), 3)]:
        network = build_repair_unet(shape, width=4, depth=depth)
        y = network(_images((2, *shape))).numpy()
        assert y.shape == (2, *shape) and y.min() > 0.0 and y.max() < 1.0
    with pytest.raises(ValueError, match="divisible by 8"):
        build_repair_unet((28, 28, 1), width=4, depth=3)


def test_distances_are_zero_on_identical_images():
    x = _images((4, 28, 28, 1))
    perceptual = PerceptualDistance.from_network(_classifier())
    assert perceptual.layer_names == ("conv1_relu", "conv2_relu", "conv3_relu")
    np.testing.assert_array_equal(l2_distance(x, x), 0.0)
    # x and y go through the network in one batch of 2B, and oneDNN may block the two
    # copies of an image differently: their features can then differ by float32 round-off,
    # and the distance (a sum of squared differences of unit vectors, each term in [0, 4])
    # by ~1e-16 (seen on a fresh CI machine). Zero up to that round-off, far below any
    # real difference (> 1e-3 for the different images below).
    np.testing.assert_allclose(perceptual(x, x), 0.0, rtol=0, atol=1e-10)
    other = _images((4, 28, 28, 1), seed=1)
    assert np.all(l2_distance(x, other).numpy() > 0)
    assert np.all(perceptual(x, other).numpy() > 1e-3)


def test_layer_distance_by_hand():
    # Orthogonal unit vectors: |(1, 0) - (0, 1)|^2 = 2; a rescaled vector: 0.
    a = tf.constant([[[[1.0, 0.0]]]])
    assert float(layer_distance(a, tf.constant([[[[0.0, 1.0]]]]))[0]) == pytest.approx(2.0)
    assert float(layer_distance(a, 3.0 * a)[0]) == pytest.approx(0.0, abs=1e-6)
    # Spatial mean: 2 at one of four positions.
    b = np.zeros((1, 2, 2, 2), np.float32)
    b[..., 0] = 1.0
    c = b.copy()
    c[0, 1, 1] = [0.0, 1.0]
    assert float(layer_distance(b, c)[0]) == pytest.approx(0.5)


# -- training, saving, the score ----------------------------------------------


@pytest.mark.slow
def test_train_steps_lower_the_loss_and_the_model_reloads(tmp_path):
    keras.utils.set_random_seed(0)
    x = _images((32, 28, 28, 1))
    classifier = _classifier()
    frozen = [w.copy() for w in classifier.get_weights()]
    model = RepairModel(build_repair_unet((28, 28, 1), width=8, depth=2),
                        ["down2", "box8x8+0+0"], PerceptualDistance.from_network(classifier))
    model.compile(keras.optimizers.Adam(3e-3))
    before = model.evaluate(x, batch_size=32, verbose=0, return_dict=True)
    for _ in range(8):
        logs = model.train_on_batch(x, return_dict=True)
        assert all(np.isfinite(v) for v in logs.values())
    after = model.evaluate(x, batch_size=32, verbose=0, return_dict=True)
    assert after["loss"] < before["loss"]
    assert after["loss"] == pytest.approx(after["l2"] + 0.8 * after["perceptual"], rel=1e-5)
    for w, w0 in zip(classifier.get_weights(), frozen):  # the perception network is frozen
        np.testing.assert_array_equal(w, w0)

    model.test_operator = "box8x8+0+0"
    model.save(tmp_path / "repair.keras")
    reloaded = keras.saving.load_model(tmp_path / "repair.keras")
    assert reloaded.test_operator == "box8x8+0+0" and reloaded.operators == model.operators
    for batch in (x, x[:3]):
        np.testing.assert_allclose(reloaded.repair_distance(batch), model.repair_distance(batch),
                                   rtol=1e-5, atol=1e-7)


def test_repair_detector_api():
    x = _images((5, 28, 28, 1))
    with_perceptual = RepairModel(build_repair_unet((28, 28, 1), width=4), ["down2", "down4"],
                                  PerceptualDistance.from_network(_classifier()))
    detector = get_detector("repair", with_perceptual)
    assert isinstance(detector, RepairDistance)
    assert detector.get_config()["operator"] == "down2"
    assert detector.get_config()["distance"] == "perceptual"
    np.testing.assert_allclose(detector.score(x, batch_size=2),
                               with_perceptual.repair_distance(x, "down2"), rtol=1e-5)
    l2_only = RepairModel(build_repair_unet((28, 28, 1), width=4), ["identity"],
                          lambda_perceptual=0.0)
    scores = get_detector("repair", l2_only, operator="down3").score((x * 255).astype(np.uint8))
    assert scores.shape == (5,) and np.all(scores > 0)
    with pytest.raises(ValueError, match="only distance='l2'"):
        get_detector("repair", l2_only, distance="perceptual")
    with pytest.raises(ValueError, match="Unknown erosion operator"):
        get_detector("repair", l2_only, operator="blur")
    with pytest.raises(ValueError, match="garbage"):
        get_detector("repair", l2_only, garbage_index=10)
    with pytest.raises(ValueError, match="needs a perception network"):
        RepairModel(build_repair_unet((28, 28, 1), width=4), ["identity"])


def test_config_refuses_bad_repair_values():
    assert Config.load(None, {"method": "repair", "repair.factors": [2, 3]}).repair.factors \
        == (2, 3)
    for values, key in [({"repair.factors": [1]}, "repair.factors"),
                        ({"repair.factors": "2"}, "repair.factors"),
                        ({"repair.operators": ["down"]}, "repair.operators"),
                        ({"repair.test_operator": "box8"}, "repair.test_operator"),
                        ({"repair.variant": "deblur"}, "repair.variant"),
                        ({"repair.widht": 8}, "repair.width"),
                        ({"repair.lambda_perceptual": -1.0}, "repair.lambda_perceptual")]:
        with pytest.raises(ConfigError, match=key.replace(".", "\\.")):
            Config.load(None, values)


# -- end to end -----------------------------------------------------------------


@pytest.mark.slow
def test_cli_train_repair_then_resume_reload_score_and_evaluate(tmp_path, shared_data_dir):
    perception = tmp_path / "classifier.keras"
    _classifier().save(perception)
    run_dir = tmp_path / "run"
    common = ["--data-dir", str(shared_data_dir), "--output", str(run_dir), "--quiet"]
    result = CliRunner().invoke(cli, [
        "train", "--method", "repair", "--dataset", "mnist", "--limit", "128", "--epochs", "1",
        "--batch-size", "32", *common, "--set", "validation_split=0.25",
        "--set", "repair.width=4", "--set", "repair.selection_images=32",
        "--set", f"repair.perceptual={perception}"])
    assert result.exit_code == 0, result.output
    assert "test auroc_fashion_mnist" in result.output
    info = json.loads((run_dir / "run.json").read_text())
    assert info["method"] == "repair" and info["status"] == "complete"
    assert info["image_shape"] == [28, 28, 1] and info["epochs_completed"] == 1
    repair = info["repair"]
    assert repair["operators"] == ["down2", "down4"] and repair["distance"] == "perceptual"
    assert repair["perceptual"]["layers"] == ["conv1_relu", "conv2_relu", "conv3_relu"]
    selection = repair["selection"]
    assert selection["ood"]["name"] == "vflip" and selection["id"]["count"] == 32
    assert repair["test_operator"] == max(selection["auroc"], key=selection["auroc"].get)
    for file in ("model.keras", "history.csv", "images/repairs.png", "checkpoints/latest.json"):
        assert (run_dir / file).stat().st_size > 0, file
    assert np.isfinite(info["history"][-1]["loss"]) and "val_loss" in info["history"][-1]

    result = CliRunner().invoke(cli, ["train", *common, "--resume", "--epochs", "2"])
    assert result.exit_code == 0, result.output
    info = json.loads((run_dir / "run.json").read_text())
    assert info["epochs_completed"] == 2 and [h["epoch"] for h in info["history"]] == [1, 2]

    model = keras.saving.load_model(run_dir / "model.keras")
    assert model.test_operator == info["repair"]["test_operator"]
    from keras_tie.data import load

    test = load("mnist", "test", data_dir=str(shared_data_dir), limit=8)
    for distance in ("perceptual", "l2"):
        scores = get_detector("repair", model, distance=distance).score(test.images)
        assert scores.shape == (8,) and np.all(np.isfinite(scores)) and np.all(scores > 0)
    mean_l2 = get_detector("repair", model, distance="l2").score(
        load("mnist", "test", data_dir=str(shared_data_dir), limit=128).images).mean()
    assert mean_l2 == pytest.approx(info["test_metrics"]["mean_l2"], rel=1e-4)

    result = CliRunner().invoke(cli, ["evaluate", str(run_dir), "--ood", "fashion_mnist",
                                      "--limit", "32", "--no-figures", "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    records = [r for r in metrics["level2"] if r["subset"] == "all"]
    assert [(r["score"], r["ood_set"]) for r in records] == [("repair", "fashion_mnist")]
    assert 0.0 <= records[0]["auroc"] <= 1.0


def _classifier():
    """A small untrained keras-tie conv3 classifier: a stand-in perception network."""
    keras.utils.set_random_seed(1)
    return build_classifier((28, 28, 1), 10, "conv3", width=4, dense_units=8)
