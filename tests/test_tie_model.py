import numpy as np
import pytest
import tensorflow as tf

import keras
from keras_tie.config import Config, ConfigError, parse_override
from keras_tie.models import build_classifier, build_generator, feature_model
from keras_tie.methods.tie.exclusion import InversionExclusion
from keras_tie.training.callbacks import image_grid
from keras_tie.methods.tie.pool import GarbagePool
from keras_tie.methods.tie.model import TIEModel, swap_max_to


@pytest.mark.parametrize("shape,backbone", [((28, 28, 1), "conv3"), ((32, 32, 3), "conv5"),
                                            ((32, 32, 3), "resnet"), ((28, 28, 1), "cnn2")])
def test_backbones_and_generator_shapes(shape, backbone):
    classifier = build_classifier(shape, 11, backbone, width=8, dense_units=16)
    features, logits = feature_model(classifier)(np.zeros((2, *shape), np.float32))
    assert logits.shape == (2, 11) and features.shape == (2, 16)
    generator = build_generator(shape, 11, latent_dim=8, width=16)
    images = generator([np.zeros((3, 8), np.float32), np.full((3, 11), 1 / 11, np.float32)])
    assert images.shape == (3, *shape)
    assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 1.0


def test_cnn2_is_the_oodgen_classifier_without_batch_norm():
    classifier = build_classifier((28, 28, 1), 11, "cnn2", width=32, dense_units=128, dropout=0.5)
    assert not any(isinstance(layer, keras.layers.BatchNormalization)
                   for layer in classifier.layers)
    # Two 3x3 valid convolutions (28 -> 26 -> 24), one 2x2 pooling (12 x 12 x 64).
    assert classifier.get_layer("flatten").output.shape[-1] == 12 * 12 * 64
    assert classifier.get_layer("conv_dropout").rate == 0.25
    assert classifier.get_layer("dropout").rate == 0.5
    assert classifier.get_layer("features").output.shape[-1] == 128
    # Weights of conv1, conv2, the dense layer and the 11 logits.
    assert classifier.count_params() == 320 + 18_496 + 1_179_776 + 1_419


def test_dropout_acts_on_the_logits_in_training_only():
    keras.utils.set_random_seed(0)
    classifier = build_classifier((28, 28, 1), 11, "conv3", width=4, dense_units=64, dropout=0.5)
    assert classifier.get_layer("dropout").rate == 0.5
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype(np.float32)
    features = feature_model(classifier)
    np.testing.assert_allclose(classifier(x, training=False), classifier(x, training=False))
    assert not np.allclose(classifier(x, training=True), classifier(x, training=True))
    # The features come before the dropout: two training-mode calls agree on them.
    (f1, l1), (f2, l2) = features(x, training=True), features(x, training=True)
    np.testing.assert_allclose(f1, f2)
    assert not np.allclose(l1, l2)
    assert "dropout" not in [layer.name for layer in build_classifier((28, 28, 1), 11).layers]
    with pytest.raises(ConfigError, match="model.dropout"):
        Config.load(None, {"model.dropout": 1.0})


def test_generator_refuses_odd_sizes():
    with pytest.raises(ValueError, match="divisible by 4"):
        build_generator((30, 30, 1), 11)


def test_generator_init_at_the_data_mean():
    z = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
    y = np.full((16, 11), 1 / 11, np.float32)
    gray = build_generator((28, 28, 1), 11, latent_dim=8, width=16)([z, y])
    np.testing.assert_allclose(float(tf.reduce_mean(gray)), 0.5, atol=1e-3)
    dark = build_generator((28, 28, 1), 11, latent_dim=8, width=16, output_mean=[0.13])([z, y])
    np.testing.assert_allclose(float(tf.reduce_mean(dark)), 0.13, atol=1e-3)
    rgb = build_generator((32, 32, 3), 11, latent_dim=8, width=16,
                          output_mean=[0.2, 0.5, 0.8])([z, y])
    np.testing.assert_allclose(tf.reduce_mean(rgb, axis=(0, 1, 2)), [0.2, 0.5, 0.8], atol=1e-3)
    with pytest.raises(ValueError, match="output_mean needs 1 or 3 values"):
        build_generator((32, 32, 3), 11, output_mean=[0.2, 0.5])
    with pytest.raises(ConfigError, match="model.generator_init"):
        Config.load(None, {"model.generator_init": "black"})


def test_resize_generator_has_no_transposed_upsampling_and_draws_no_checkerboard():
    keras.utils.set_random_seed(0)
    z = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    y = np.full((4, 11), 1 / 11, np.float32)
    resize = build_generator((32, 32, 3), 11, latent_dim=8, width=16, upsampling="resize")
    transpose = build_generator((32, 32, 3), 11, latent_dim=8, width=16)
    assert resize([z, y]).shape == transpose([z, y]).shape == (4, 32, 32, 3)
    kinds = {layer.name: type(layer).__name__ for layer in resize.layers}
    assert kinds["up1"] == kinds["up2"] == "Conv2D"
    assert {type(layer).__name__ for layer in transpose.layers
            if layer.name in ("up1", "up2")} == {"Conv2DTranspose"}
    # One 3x3 kernel after bilinear upsampling of a constant map gives a constant map
    # away from the border; a stride-2 4x4 transposed kernel gives a period-2 pattern.
    constant = np.ones((1, 8, 8, 1), np.float32)
    up = keras.layers.UpSampling2D(2, interpolation="bilinear")(constant)
    conv = keras.layers.Conv2D(1, 3, padding="same", use_bias=False)
    smooth = np.asarray(conv(up))[0, 2:-2, 2:-2, 0]
    assert np.ptp(smooth) < 1e-5
    deconv = keras.layers.Conv2DTranspose(1, 4, strides=2, padding="same", use_bias=False)
    checker = np.asarray(deconv(constant))[0, 2:-2, 2:-2, 0]
    assert np.ptp(checker) > 1e-3
    with pytest.raises(ValueError, match="upsampling must be 'transpose' or 'resize'"):
        build_generator((32, 32, 3), 11, upsampling="nearest")
    with pytest.raises(ConfigError, match="model.generator_upsampling"):
        Config.load(None, {"model.generator_upsampling": "pixelshuffle"})


def test_swap_max_to_targets_the_class_and_keeps_the_values():
    v = tf.constant([[0.1, 2.0, -1.0, 0.5], [3.0, 0.0, 1.0, 2.0]])
    swapped = swap_max_to(v, tf.constant([3, 0])).numpy()
    assert swapped.argmax(axis=1).tolist() == [3, 0]
    np.testing.assert_allclose(swapped[0], [0.1, 0.5, -1.0, 2.0])
    np.testing.assert_allclose(swapped[1], [3.0, 0.0, 1.0, 2.0])  # already there: unchanged
    np.testing.assert_allclose(np.sort(swapped, axis=1), np.sort(v.numpy(), axis=1))


def _tiny_model(generator=True, interval=1, inversion_mode="inference", smoothness=0.0):
    keras.utils.set_random_seed(0)
    shape = (28, 28, 1)
    classifier = build_classifier(shape, 4, width=4, dense_units=8)
    gen = build_generator(shape, 4, latent_dim=4, width=16) if generator else None
    pool = GarbagePool(shape, 64)
    pool.fill_with_noise(32, [0.5], [0.5], np.random.default_rng(0))
    model = TIEModel(classifier, pool, gen, garbage_per_batch=4, generator_batch_size=8,
                     generator_interval=interval, inversion_mode=inversion_mode,
                     smoothness=smoothness)
    model.compile(keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3) if gen else None)
    return model


@pytest.mark.parametrize("with_generator", [True, False])
def test_one_train_step_changes_weights_and_gives_finite_losses(with_generator):
    model = _tiny_model(with_generator)
    x = np.random.default_rng(0).random((16, 28, 28, 1)).astype(np.float32)
    y = np.arange(16) % 3
    before_c = [w.numpy().copy() for w in model.classifier.trainable_weights]
    before_g = [w.numpy().copy() for w in model.generator.trainable_weights] \
        if with_generator else []
    # fit, not train_on_batch: the generator step is run by fit's GeneratorSteps callback
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False).history
    logs = {key: values[-1] for key, values in history.items()}
    assert all(np.isfinite(v) for v in logs.values())
    assert any(not np.allclose(a, b.numpy())
               for a, b in zip(before_c, model.classifier.trainable_weights))
    if with_generator:
        assert {"inv_kl", "inv_ce", "inv_cos"} <= set(logs)
        assert any(not np.allclose(a, b.numpy())
                   for a, b in zip(before_g, model.generator.trainable_weights))


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_generator_step_moves_batch_norm_statistics_only_in_training_mode(mode):
    model = _tiny_model(inversion_mode=mode)
    norms = [layer for layer in model.classifier.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    moving = [v.numpy().copy() for layer in norms
              for v in (layer.moving_mean, layer.moving_variance)]
    weights = [w.numpy().copy() for w in model.classifier.trainable_weights]
    generator = [w.numpy().copy() for w in model.generator.trainable_weights]
    logs = model.run_generator_step()
    assert all(np.isfinite(float(v)) for v in logs.values())
    after = [v.numpy() for layer in norms for v in (layer.moving_mean, layer.moving_variance)]
    changed = [not np.allclose(a, b) for a, b in zip(moving, after)]
    assert all(changed) if mode == "training" else not any(changed)
    # The generator step never trains the classifier, in either mode; it trains G.
    assert all(np.array_equal(a, b.numpy())
               for a, b in zip(weights, model.classifier.trainable_weights))
    assert any(not np.allclose(a, b.numpy())
               for a, b in zip(generator, model.generator.trainable_weights))


def test_total_variation_is_zero_on_flat_images_and_counts_neighbour_steps():
    from keras_tie.losses import total_variation

    flat = np.full((2, 4, 4, 3), 0.3, np.float32)
    stripes = np.zeros((1, 4, 4, 1), np.float32)
    stripes[:, :, 1::2] = 1.0  # columns alternate 0, 1: every column step is 1, no row step
    np.testing.assert_allclose(total_variation(flat).numpy(), [0.0, 0.0])
    np.testing.assert_allclose(total_variation(stripes).numpy(), [1.0])


def test_smoothness_prior_enters_the_inversion_loss_and_smooths_the_images():
    """tie.smoothness adds weight * TV to the generator's loss (logged as inv_tv): the same
    generator steps from the same start draw smoother images with it than without."""
    from keras_tie.losses import total_variation

    with pytest.raises(ConfigError, match="tie.smoothness"):
        Config.from_dict({"tie": {"smoothness": -1.0}})
    variation = {}
    for weight in (0.0, 100.0):
        model = _tiny_model(smoothness=weight)
        for _ in range(15):
            logs = model.run_generator_step()
        assert ("inv_tv" in logs) == (weight > 0)  # logged only when on
        z, y = model.sample_conditions(32, seed=tf.constant([1, 2]))
        variation[weight] = float(tf.reduce_mean(
            total_variation(model.generator([z, y], training=False))))
    assert variation[100.0] < variation[0.0]


def test_inversion_mode_is_checked():
    with pytest.raises(ConfigError, match="tie.inversion_mode.*'inference', 'training'"):
        Config.from_dict({"tie": {"inversion_mode": "train"}})
    with pytest.raises(ValueError, match="inversion_mode must be"):
        _tiny_model(inversion_mode="eval")


def test_pool_appends_then_retires_at_random():
    pool = GarbagePool((2, 2, 1), 5)
    rng = np.random.default_rng(0)
    assert pool.add(np.zeros((3, 2, 2, 1), np.float32), rng) == 0 and len(pool) == 3
    retired = pool.add(np.ones((4, 2, 2, 1), np.float32), rng)
    assert retired == 2 and len(pool) == 5
    stored = pool.numpy()
    assert (stored == 255).all(axis=(1, 2, 3)).sum() == 4  # all new images are in
    sample = pool.sample(10, tf.random.Generator.from_seed(0)).numpy()
    assert sample.shape == (10, 2, 2, 1) and sample.dtype == np.float32


def test_float16_pool_keeps_unclipped_noise_through_sampling_and_checkpoints(tmp_path):
    from keras_tie.training.checkpoint import latest_checkpoint, resume_from, save_checkpoint
    # Odd pixel count (3 x 3): the last int32 word holds one float16 and padding.
    pool = GarbagePool((3, 3, 1), 40, dtype="float16")
    pool.fill_with_noise(30, [0.3], [0.4], np.random.default_rng(0))
    noise = 0.3 + 0.4 * np.random.default_rng(0).standard_normal((30, 3, 3, 1), np.float32)
    stored = pool.numpy()
    assert stored.dtype == np.float16 and stored.min() < 0 and stored.max() > 1
    np.testing.assert_allclose(stored, noise, atol=2e-3)  # float16 rounding, no clipping
    pool.add(np.full((5, 3, 3, 1), 255, np.uint8), np.random.default_rng(1))  # uint8 = 0-255
    assert len(pool) == 35 and (pool.numpy()[30:] == 1.0).all()
    sample = pool.sample(400, tf.random.Generator.from_seed(0)).numpy()
    assert sample.dtype == np.float32 and sample.min() < 0 and sample.max() > 1
    assert np.isin(sample.reshape(400, -1)[:, 0], pool.numpy().reshape(35, -1)[:, 0]).all()
    save_checkpoint(str(tmp_path), 1, {"counter": tf.Variable(0)}, {"history": []}, pool)
    restored = GarbagePool((3, 3, 1), 40, dtype="float16")
    resume_from(latest_checkpoint(str(tmp_path)), {"counter": tf.Variable(0)}, restored)
    np.testing.assert_array_equal(restored.numpy(), pool.numpy())
    # The uint8 pool clips the same noise to [0, 1].
    clipped = GarbagePool((3, 3, 1), 40)
    clipped.fill_with_noise(30, [0.3], [0.4], np.random.default_rng(0))
    np.testing.assert_allclose(clipped.numpy() / 255.0, np.clip(noise, 0, 1), atol=0.5 / 255 + 1e-6)
    with pytest.raises(ValueError, match="dtype='float32'.*'uint8' or 'float16'"):
        GarbagePool((3, 3, 1), 4, dtype="float32")
    with pytest.raises(ConfigError, match="tie.initial_noise.*'clipped', 'unclipped'"):
        Config.from_dict({"tie": {"initial_noise": "raw"}})


def _pool_groups(retirement):
    """A pool of 2,000 filled with group 0, then offered groups 1-9 of 2,000 images each."""
    pool = GarbagePool((1, 1, 1), 2000, retirement)
    rng = np.random.default_rng(0)
    pool.set(np.zeros((2000, 1, 1, 1), np.uint8))
    for group in range(1, 10):
        pool.add(np.full((2000, 1, 1, 1), group, np.uint8), rng)
    return pool, np.bincount(pool.numpy().ravel(), minlength=10)


def test_pool_reservoir_keeps_a_uniform_sample_of_everything_offered():
    pool, counts = _pool_groups("reservoir")
    assert len(pool) == 2000 and pool.seen == 20000
    # Each group is a tenth of what was offered: 200 expected, binomial sd ~13.
    assert np.all(np.abs(counts - 200) < 60), counts
    # The random rule instead leans to the latest epoch: here it replaced everything.
    _, recent = _pool_groups("random")
    assert recent[9] == 2000
    with pytest.raises(ValueError, match="retirement"):
        GarbagePool((1, 1, 1), 10, "fifo")
    with pytest.raises(ConfigError, match="tie.pool_retirement"):
        Config.load(None, {"tie.pool_retirement": "fifo"})


def test_pool_seen_count_survives_a_checkpoint(tmp_path):
    from keras_tie.training.checkpoint import latest_checkpoint, resume_from, save_checkpoint
    pool, _ = _pool_groups("reservoir")
    counter = tf.Variable(3)
    save_checkpoint(str(tmp_path), 1, {"counter": counter}, {"history": []}, pool)
    restored = GarbagePool((1, 1, 1), 2000, "reservoir")
    resume_from(latest_checkpoint(str(tmp_path)), {"counter": counter}, restored)
    assert restored.seen == 20000
    np.testing.assert_array_equal(restored.numpy(), pool.numpy())


@pytest.mark.parametrize("keep,kept", [(2, ["epoch_0003", "epoch_0004"]), (0, [
    "epoch_0001", "epoch_0002", "epoch_0003", "epoch_0004"])])
def test_checkpoint_keep_prunes_all_but_the_newest(tmp_path, keep, kept):
    from keras_tie.training.checkpoint import RunCheckpoint, latest_checkpoint
    counter = tf.Variable(0)
    callback = RunCheckpoint(str(tmp_path), {"counter": counter}, lambda epoch, logs: {},
                             keep=keep)
    for epoch in range(4):
        counter.assign(epoch)
        callback.on_epoch_end(epoch)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("epoch_*")) == kept
    assert latest_checkpoint(str(tmp_path))[1]["epoch"] == 4
    with pytest.raises(ConfigError, match="checkpoint_keep.*0 \\(keep every"):
        Config.from_dict({"checkpoint_keep": -1})


def test_exclusion_adds_only_samples_above_the_threshold():
    model = _tiny_model()
    train_images = np.random.default_rng(0).integers(0, 255, (40, 28, 28, 1), dtype=np.uint8)
    callback = InversionExclusion(model, train_images, [10, 10, 20], steps_per_epoch=2,
                                  samples_per_class=5, threshold_lambda=0.5)
    callback.on_epoch_begin(0)
    assert model.gamma.numpy() == pytest.approx(10.0)
    # 3 ID classes x 10/10/20 + garbage 4 x 2 steps = 8: balanced weights
    np.testing.assert_allclose(model.class_weights.numpy(),
                               48 / (4 * np.array([10, 10, 20, 8])), rtol=1e-5)
    before = len(model._pool)
    logs = {}
    callback.on_epoch_end(0, logs)
    assert 0 <= logs["excluded"] <= 4 * 5
    assert len(model._pool) == before + logs["excluded"]
    assert 0.0 <= logs["tau"] <= 1.0 and 0.0 <= logs["inv_ue"] <= 1.0


def test_garbage_weight_scales_only_the_garbage_class():
    model = _tiny_model()
    callback = InversionExclusion(model, np.zeros((4, 28, 28, 1), np.uint8), [10, 10, 20], 2,
                                  garbage_weight=0.1)
    callback.on_epoch_begin(0)
    balanced = 48 / (4 * np.array([10, 10, 20, 8]))
    np.testing.assert_allclose(model.class_weights.numpy(), balanced * [1, 1, 1, 0.1],
                               rtol=1e-5)


def test_gamma_schedule_reaches_the_cap():
    model = _tiny_model()
    callback = InversionExclusion(model, np.zeros((4, 28, 28, 1), np.uint8), [4, 0, 0], 1,
                                  gamma_start=10, gamma_max=100)
    callback.on_epoch_begin(11)
    assert model.gamma.numpy() == pytest.approx(100.0)


def test_image_grid_layout():
    rows = np.zeros((3, 4, 5, 6, 1), np.float32)
    grid = image_grid(rows, pad=1)
    assert grid.shape == (3 * 6 + 1, 4 * 7 + 1, 1) and grid.dtype == np.uint8
    assert grid[0].min() == 255 and grid[1, 1, 0] == 0


def test_config_refuses_unknown_keys_wrong_types_and_bad_values(tmp_path):
    with pytest.raises(ConfigError, match="tie.alpah.*Did you mean 'tie.alpha'"):
        Config.from_dict({"tie": {"alpah": 0.1}})
    with pytest.raises(ConfigError, match="epochs.*type int"):
        Config.from_dict({"epochs": "ten"})
    with pytest.raises(ConfigError, match="method"):
        Config.from_dict({"method": "magic"})
    with pytest.raises(ConfigError, match="tie.initial_pool_size"):
        Config.from_dict({"tie": {"initial_pool_size": 10, "pool_capacity": 5}})
    with pytest.raises(ConfigError, match="tie.diversity.*'batch', 'class'"):
        Config.from_dict({"tie": {"diversity": "pairs"}})
    with pytest.raises(ConfigError, match="augment.*'none', 'flip'"):
        Config.from_dict({"augment": "rotate"})
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.load(str(bad))
    assert parse_override("tie.alpha=0.2") == ("tie.alpha", 0.2)
    config = Config.load(None, {"tie.alpha": 0.2, "epochs": 3})
    assert config.tie.alpha == 0.2 and config.epochs == 3
    assert Config.from_dict({"optimizer": {"classifier_lr": 1}}).optimizer.classifier_lr == 1.0
