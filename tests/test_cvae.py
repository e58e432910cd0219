"""CVAE outliers (002_50acf6af2ae3a4e5.txt): the CVAE, Type I and Type II maths, the sampler,
the (n+1)-class training step, the config section, the CLI and the TIE pool option."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from keras_tie.cli.main import cli
from keras_tie.config import Config, ConfigError
from keras_tie.methods.cvae import (
    OutlierSampler,
    decoder_jacobian,
    fit_latent_stats,
    mahalanobis_squared,
    normal_component,
    sample_ellipsoid,
)
from keras_tie.methods.cvae.off_manifold import off_manifold_samples
from keras_tie.models import build_classifier
from keras_tie.methods.cvae.model import CVAE
from keras_tie.methods.cvae.recipe import ood_class_weights
from keras_tie.methods.cvae.outlier_pool import OutlierPool
from keras_tie.training.precise_bn import recalibrate_batch_norm
from keras_tie.methods.tie.model import TIEModel

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def tiny():
    """A tiny CVAE (8x8 images, 3 classes, d = 3) and 60 random images."""
    keras.utils.set_random_seed(0)
    cvae = CVAE(SHAPE, num_classes=3, latent_dim=3, width=4, hidden_units=16, seed=0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, *SHAPE)).astype(np.uint8)
    labels = np.arange(60, dtype=np.int32) % 3
    return cvae, images, labels


# -- Type I: the normal space ---------------------------------------------------


def test_normal_component_is_orthogonal_to_the_columns_and_idempotent():
    rng = np.random.default_rng(1)
    jacobian = rng.standard_normal((4, 50, 3))
    jacobian[1, :, 2] = 0.0  # a latent axis the decoder ignores: the ridge keeps it solvable
    v = rng.standard_normal((4, 50))
    normal = normal_component(jacobian, v).numpy()
    residual = np.einsum("bdk,bd->bk", jacobian, normal)
    assert np.abs(residual).max() < 1e-8 * np.abs(v).max() * np.abs(jacobian).max() * 50
    np.testing.assert_allclose(normal_component(jacobian, normal).numpy(), normal, atol=1e-8)
    # v = tangent + normal: the removed part lies in J's column space.
    tangent = v - normal
    coefficients = np.stack([np.linalg.lstsq(j, t, rcond=None)[0]
                             for j, t in zip(jacobian, tangent)])
    np.testing.assert_allclose(np.einsum("bdk,bk->bd", jacobian, coefficients), tangent,
                               atol=1e-8)


def test_forward_mode_jacobian_matches_reverse_mode(tiny):
    cvae, _, labels = tiny
    z = tf.constant(np.random.default_rng(2).standard_normal((5, 3)), tf.float32)
    y = tf.constant(labels[:5])
    decoded, jacobian = decoder_jacobian(cvae, z, y)
    with tf.GradientTape() as tape:
        tape.watch(z)
        flat = tf.reshape(cvae.decode(z, y), [5, -1])
    expected = tape.batch_jacobian(flat, z)
    assert jacobian.shape == (5, 64, 3)
    np.testing.assert_allclose(decoded.numpy(), flat.numpy(), atol=1e-6)
    np.testing.assert_allclose(jacobian.numpy(), expected.numpy(), atol=1e-6)


def test_type1_samples_step_beta_along_a_unit_normal(tiny):
    cvae, images, labels = tiny
    x = images[:6].astype(np.float32) / 255.0
    z = cvae.encode(x, labels[:6])[0]
    rng = np.random.default_rng(3)
    beta = rng.uniform(0.1, 1.0, 6).astype(np.float32)
    samples, direction = off_manifold_samples(cvae, x, labels[:6], z,
                                              rng.standard_normal((6, 64)).astype(np.float32),
                                              beta)
    assert samples.shape == (6, *SHAPE) and direction.shape == (6, 64)
    np.testing.assert_allclose(np.linalg.norm(direction, axis=-1), 1.0, atol=1e-5)
    step = (samples.numpy() - x).reshape(6, -1)
    np.testing.assert_allclose(np.linalg.norm(step, axis=-1), beta, rtol=1e-4)
    _, jacobian = decoder_jacobian(cvae, z, labels[:6])
    cosines = np.einsum("bdk,bd->bk", jacobian.numpy(), direction.numpy()) \
        / np.linalg.norm(jacobian.numpy(), axis=1)
    assert np.abs(cosines).max() < 1e-4  # float32 direction, float64 projection


# -- Type II: the coverage ellipsoid ------------------------------------------------


def test_latent_stats_hold_the_coverage_and_samples_lie_on_the_ellipsoid():
    rng = np.random.default_rng(4)
    mixing = np.array([[2.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, -0.3, 0.2]])
    z = np.concatenate([rng.standard_normal((400, 3)) @ mixing.T + 5 * c for c in range(2)])
    labels = np.repeat([0, 1], 400)
    stats = fit_latent_stats(z, labels, 2, coverage=0.95)
    np.testing.assert_allclose(stats.means[1], z[400:].mean(0), atol=1e-12)
    np.testing.assert_allclose(stats.covariances[0], np.cov(z[:400], rowvar=False), atol=1e-5)
    for c in range(2):
        inside = mahalanobis_squared(z[labels == c], stats.means[c], stats.covariances[c]) \
            <= stats.radii[c] ** 2 + 1e-12
        assert abs(inside.mean() - 0.95) <= 1 / 400
        points = sample_ellipsoid(stats.means[c], stats.covariances[c], stats.radii[c], 50, rng)
        np.testing.assert_allclose(
            mahalanobis_squared(points, stats.means[c], stats.covariances[c]),
            stats.radii[c] ** 2, rtol=1e-9)
    # A 3-D Gaussian: 95% of its mass lies within the chi(3) quantile, sqrt(7.815) = 2.80.
    assert 2.5 < stats.radii[0] < 3.1
    with pytest.raises(ValueError, match="Class 2 has 0"):
        fit_latent_stats(z, labels, 3)


def test_mahalanobis_squared_by_hand():
    covariance = np.diag([4.0, 1.0])
    np.testing.assert_allclose(mahalanobis_squared([[2.0, 1.0], [0.0, 3.0]], [0.0, 1.0],
                                                   covariance), [1.0, 4.0])


# -- the sampler ---------------------------------------------------------------------


def test_sampler_shapes_ranges_and_counts(tiny):
    cvae, images, labels = tiny
    sampler = OutlierSampler(cvae, images, labels, batch_size=16)
    assert sampler.codes.shape == (60, 3) and sampler.stats.radii.shape == (3,)
    rng = np.random.default_rng(5)
    off, sources = sampler.type1(40, rng)
    assert off.shape == (40, *SHAPE) and off.dtype == np.float32 and sources.shape == (40,)
    assert off.min() >= -1.0 and off.max() <= 2.0  # x in [0, 1] moved by at most beta = 1
    assert sampler.type1_seconds_per_1000 > 0
    on, classes = sampler.type2(10, rng)
    assert on.shape == (10, *SHAPE) and on.min() >= 0.0 and on.max() <= 1.0
    np.testing.assert_array_equal(np.bincount(classes), [4, 3, 3])
    assert sampler.mixed(9, rng).shape == (9, *SHAPE)
    clipped = OutlierSampler(cvae, images, labels, clip_type1=True, beta_range=(1.0, 1.0))
    off, _ = clipped.type1(20, rng)
    assert off.min() >= 0.0 and off.max() <= 1.0
    with pytest.raises(ValueError, match="takes \\(8, 8, 1\\) images"):
        OutlierSampler(cvae, np.zeros((4, 28, 28, 1), np.uint8), np.zeros(4))


# -- training steps --------------------------------------------------------------


def test_cvae_train_step_updates_the_weights_and_the_model_reloads(tiny, tmp_path):
    cvae, images, labels = tiny
    x = images.astype(np.float32) / 255.0
    model = CVAE(SHAPE, 3, latent_dim=3, width=4, hidden_units=16, seed=1)
    model.compile(keras.optimizers.Adam(1e-3))
    before = [w.numpy().copy() for w in model.trainable_weights]
    logs = model.train_on_batch(x[:16], labels[:16], return_dict=True)
    assert set(logs) == {"loss", "reconstruction_loss", "kl_loss"}
    assert np.isfinite(logs["loss"]) and logs["kl_loss"] >= 0
    assert logs["loss"] == pytest.approx(logs["reconstruction_loss"] + logs["kl_loss"], rel=1e-5)
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(before, model.trainable_weights))
    reconstructed = model((x[:4], labels[:4]))
    assert reconstructed.shape == (4, *SHAPE)
    model.save(tmp_path / "cvae.keras")
    reloaded = keras.saving.load_model(tmp_path / "cvae.keras", compile=False)
    assert reloaded.latent_dim == 3 and reloaded.num_classes == 3
    np.testing.assert_allclose(reloaded((x[:4], labels[:4])), reconstructed, atol=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        CVAE((10, 10, 1), 3)


def test_classifier_step_mixes_outliers_with_the_paper_weight(tiny):
    _, images, labels = tiny
    classifier = build_classifier(SHAPE, 4, "conv3", width=4, dense_units=8)
    pool = OutlierPool(SHAPE, 10)
    pool.set(np.full((10, *SHAPE), 1.7, np.float32))  # Type I values may leave [0, 1]
    assert len(pool) == 10 and pool.numpy().max() == pytest.approx(1.7)
    model = TIEModel(classifier, pool, generator=None, garbage_per_batch=5, seed=0)
    model.compile(keras.optimizers.Adam(1e-3))
    model.class_weights.assign(ood_class_weights(3, 0.1))
    np.testing.assert_allclose(model.class_weights.numpy(), [1, 1, 1, 0.1])
    drawn = pool.sample(5, tf.constant([0, 1]))
    np.testing.assert_allclose(drawn, 1.7)
    logs = model.train_on_batch(images[:8].astype(np.float32) / 255.0, labels[:8],
                                return_dict=True)
    assert np.isfinite(logs["loss"]) and 0.0 <= logs["garbage_accuracy"] <= 1.0
    with pytest.raises(ValueError, match="do not fit"):
        pool.set(np.zeros((11, *SHAPE), np.float32))


def test_precise_batch_norm_uses_population_statistics_layer_by_layer():
    inputs = keras.Input((3,))
    h = keras.layers.BatchNormalization(name="bn1")(inputs)
    h = keras.layers.Dense(2, name="dense")(h)
    outputs = keras.layers.BatchNormalization(name="bn2")(h)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(6)
    data = (rng.standard_normal((300, 3)) * [1.0, 2.0, 3.0] + [5.0, -1.0, 0.5]).astype(np.float32)
    names = recalibrate_batch_norm(model, [data[:100], data[100:]])
    assert names == ["bn1", "bn2"]
    bn1, bn2 = model.get_layer("bn1"), model.get_layer("bn2")
    np.testing.assert_allclose(bn1.moving_mean, data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(bn1.moving_variance, data.var(0), rtol=1e-4)
    # bn2 sees the dense layer's output of the recalibrated bn1, at inference.
    hidden = model.get_layer("dense")(bn1(data, training=False)).numpy()
    np.testing.assert_allclose(bn2.moving_mean, hidden.mean(0), atol=1e-5)
    np.testing.assert_allclose(bn2.moving_variance, hidden.var(0), rtol=1e-4)


# -- config ----------------------------------------------------------------------------


def test_cvae_config_section_is_validated():
    config = Config.load(None, {"method": "cvae", "cvae.latent_dim": 10})
    assert config.cvae.latent_dim == 10 and config.cvae.ood_weight == 0.1
    assert (config.cvae.beta_min, config.cvae.beta_max, config.cvae.coverage) == (0.1, 1.0, 0.95)
    for key, value, message in [
            ("cvae.latent_dim", 0, "cvae.latent_dim"),
            ("cvae.beta_max", 0.05, "cvae.beta_max"),
            ("cvae.coverage", 1.5, "cvae.coverage"),
            ("cvae.ood_weight", 0, "cvae.ood_weight"),
            ("cvae.latent_dimm", 8, "Did you mean 'cvae.latent_dim'"),
            ("tie.cvae_per_epoch", 10, "tie.cvae_run")]:
        with pytest.raises(ConfigError, match=message):
            Config.load(None, {key: value})


def test_presets_carry_the_paper_latent_sizes():
    from keras_tie.config import preset_path

    assert Config.load(preset_path("cvae_mnist")).cvae.latent_dim == 8
    fashion = Config.load(preset_path("cvae_fashion_mnist"))
    assert fashion.cvae.latent_dim == 10 and fashion.method == "cvae"


# -- end to end on real MNIST ------------------------------------------------------------

SMALL = ["--dataset", "mnist", "--batch-size", "64", "--limit", "256",
         "--set", "cvae.vae_epochs=1", "--set", "cvae.type1_per_epoch=64",
         "--set", "cvae.type2_per_epoch=64", "--set", "cvae.width=8",
         "--set", "cvae.hidden_units=32", "--set", "model.width=8",
         "--set", "model.dense_units=32", "--quiet"]


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory, shared_data_dir):
    """A cvae run on 256 real MNIST images, 1 CVAE epoch and 1 classifier epoch."""
    run_dir = tmp_path_factory.mktemp("cvae") / "run"
    result = CliRunner().invoke(cli, ["train", "--method", "cvae", "--epochs", "1",
                                      "--data-dir", str(shared_data_dir),
                                      "--output", str(run_dir), *SMALL])
    assert result.exit_code == 0, result.output
    return run_dir


@pytest.mark.slow
def test_cli_trains_a_cvae_run_that_evaluate_and_resume_accept(cvae_run, shared_data_dir):
    info = json.loads((cvae_run / "run.json").read_text())
    assert info["method"] == "cvae" and info["status"] == "complete"
    assert info["num_outputs"] == 11 and info["garbage_index"] == 10 and info["tau"] is None
    assert info["config"]["cvae"]["latent_dim"] == 8  # the preset's
    assert len(info["cvae"]["latent_radii"]) == 10 and info["cvae"]["type1_seconds_per_1000"] > 0
    assert info["history"][-1]["type1_seconds_per_1000"] > 0
    assert info["config"]["cvae"]["beta_max"] == 28.0  # the preset's: the released code's range
    assert info["batch_norm"]["recalibrated"] == ["conv1_bn", "conv2_bn", "conv3_bn", "dense1_bn"]
    for name in ("type1", "type1_perturbation", "type2"):
        assert (cvae_run / "images" / f"{name}.png").stat().st_size > 0
    for name in ("model.keras", "cvae.keras", "history.csv", "cvae_history.csv"):
        assert (cvae_run / name).is_file(), name

    from keras_tie.evaluation import evaluate

    evaluation = evaluate([str(cvae_run)], ["gaussian"], ["garbage"], limit=64,
                          data_dir=str(shared_data_dir), verbose=0)
    record = [r for r in evaluation.level2 if r["subset"] == "all"][0]
    assert 0.0 <= record["auroc"] <= 1.0

    # Resume to a second epoch: phase 1 is skipped (cvae.keras), phase 2 continues.
    result = CliRunner().invoke(cli, ["train", "--output", str(cvae_run), "--resume",
                                      "--epochs", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "Phase 1/2" not in result.output
    info = json.loads((cvae_run / "run.json").read_text())
    assert info["epochs_completed"] == 2 and [h["epoch"] for h in info["history"]] == [1, 2]


@pytest.mark.slow
def test_tie_pool_seeded_and_topped_up_by_a_cvae_run(cvae_run, tmp_path, shared_data_dir):
    run_dir = tmp_path / "tie"
    result = CliRunner().invoke(cli, [
        "train", "--method", "tie", "--dataset", "mnist", "--epochs", "1", "--batch-size", "64",
        "--limit", "256", "--data-dir", str(shared_data_dir), "--output", str(run_dir),
        "--quiet", "--set", f"tie.cvae_run={cvae_run}", "--set", "tie.cvae_per_epoch=40",
        "--set", "tie.initial_pool_size=50", "--set", "tie.samples_per_class=4",
        "--set", "tie.generator_steps_per_epoch=2", "--set", "tie.pool_capacity=400",
        "--set", "model.width=8", "--set", "model.dense_units=32",
        "--set", "model.generator_width=8"])
    assert result.exit_code == 0, result.output
    info = json.loads((run_dir / "run.json").read_text())
    last = info["history"][-1]
    assert last["cvae_added"] == 40
    # 50 seeded + the excluded inverted samples + 40 CVAE outliers
    assert info["pool_size"] == 50 + last["excluded"] + 40


@pytest.mark.slow
def test_tie_pool_keeps_its_noise_when_cvae_outliers_are_added(cvae_run, tmp_path,
                                                                shared_data_dir):
    run_dir = tmp_path / "tie_add"
    result = CliRunner().invoke(cli, [
        "train", "--method", "static", "--dataset", "mnist", "--epochs", "1",
        "--batch-size", "64", "--limit", "256", "--data-dir", str(shared_data_dir),
        "--output", str(run_dir), "--quiet", "--set", f"tie.cvae_run={cvae_run}",
        "--set", "tie.cvae_initial=add", "--set", "tie.initial_pool_size=50",
        "--set", "tie.pool_capacity=400", "--set", "model.width=8",
        "--set", "model.dense_units=32"])
    assert result.exit_code == 0, result.output
    info = json.loads((run_dir / "run.json").read_text())
    assert info["pool_size"] == 50 + 50  # the Gaussian noise and the CVAE outliers
    # "add" needs room for both.
    with pytest.raises(ConfigError, match="tie.initial_pool_size"):
        Config.load(None, {"tie.cvae_run": str(cvae_run), "tie.cvae_initial": "add",
                           "tie.initial_pool_size": 300, "tie.pool_capacity": 400})
    with pytest.raises(ConfigError, match="tie.cvae_initial"):
        Config.load(None, {"tie.cvae_initial": "mix"})
    with pytest.raises(ConfigError, match="tie.cvae_run"):  # "add" needs a cvae run
        Config.load(None, {"tie.cvae_initial": "add"})


def test_tie_pool_refuses_a_folder_without_a_cvae(tmp_path, shared_data_dir):
    result = CliRunner().invoke(cli, [
        "train", "--method", "tie", "--dataset", "mnist", "--epochs", "1", "--limit", "128",
        "--data-dir", str(shared_data_dir), "--output", str(tmp_path / "run"), "--quiet",
        "--set", f"tie.cvae_run={tmp_path}"])
    assert result.exit_code != 0
    assert "tie.cvae_run" in result.output and "cvae.keras" in result.output
