"""The CIFAR-10 path: the airbench backbone, bfloat16 mixed precision, SGD with warm-up, resume."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_tie.config import Config, ConfigError
from keras_tie.data import load
from keras_tie.inference import predict_probabilities
from keras_tie.models import build_classifier, build_generator, feature_model, float32_copy
from keras_tie.methods.tie.pool import GarbagePool
from keras_tie.training.runner import train
from keras_tie.methods.tie.model import TIEModel
from keras_tie.uncertainty import uncertainty


@pytest.fixture(scope="module")
def cifar_slice(shared_data_dir, cache_dir):
    os.environ["KERAS_TIE_CACHE_DIR"] = str(cache_dir)
    train_set = load("cifar10", split="train", data_dir=str(shared_data_dir), limit=64)
    return train_set.images.astype(np.float32) / 255.0, train_set.labels.astype(np.int32)


def test_airbench_builds_at_32x32x3_with_its_published_shape():
    classifier = build_classifier((32, 32, 3), 11, "airbench", width=64)
    convs = [layer for layer in classifier.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 64, 64, 256, 256, 256, 256]
    features, logits = feature_model(classifier)(np.zeros((2, 32, 32, 3), np.float32))
    assert features.shape == (2, 256) and logits.shape == (2, 11)
    # 3x3 kernels without biases, BatchNormalization (4 numbers a channel), the 256 -> 11 head.
    kernels = 9 * (3 * 32 + 32 * 64 + 64 * 64 + 64 * 256 + 3 * 256 * 256)
    norms = 4 * sum(c.filters for c in convs)
    assert classifier.count_params() == kernels + norms + 256 * 11 + 11 == 1_980_651
    with pytest.raises(ConfigError, match="model.backbone.*'airbench'"):
        Config.load(None, {"model.backbone": "airbnb"})


def test_airbench_feature_pooling_takes_the_max_or_the_mean_of_the_last_map():
    keras.utils.set_random_seed(0)
    by_pooling = {pooling: build_classifier((32, 32, 3), 11, "airbench", width=8, pooling=pooling)
                  for pooling in ("auto", "max", "avg")}
    images = np.random.default_rng(0).uniform(size=(3, 32, 32, 3)).astype(np.float32)
    for pooling, classifier in by_pooling.items():
        last_map = keras.Model(classifier.input,
                               classifier.get_layer("block3_conv2_relu").output)(images)
        features, _ = feature_model(classifier)(images)
        reduce = tf.reduce_mean if pooling == "avg" else tf.reduce_max  # auto: airbench's max
        np.testing.assert_allclose(features, reduce(last_map, axis=(1, 2)), rtol=1e-6)
    with pytest.raises(ValueError, match="pooling='avg' needs a backbone that pools globally"):
        build_classifier((32, 32, 3), 11, "conv5", width=8, pooling="avg")
    config = Config.load(None, {"model.backbone": "airbench", "model.feature_pooling": "avg"})
    assert config.model.feature_pooling == "avg"


def test_mixed_bfloat16_computes_in_bfloat16_and_keeps_float32_outputs():
    keras.utils.set_random_seed(0)
    classifier = build_classifier((32, 32, 3), 11, "airbench", width=8, precision="mixed_bfloat16")
    conv = classifier.get_layer("block1_conv1")
    assert conv.compute_dtype == "bfloat16" and conv.kernel.dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    x = np.random.default_rng(0).random((5, 32, 32, 3)).astype(np.float32)
    features, logits = feature_model(classifier)(x)
    assert features.dtype == "float32" and logits.dtype == "float32"
    probabilities = predict_probabilities(classifier, x)
    assert probabilities.dtype == np.float32
    assert uncertainty(probabilities).dtype == tf.float32
    # The float32 copy exports run: same weights, float32 everywhere, the same answers up to
    # bfloat16 round-off.
    copy = float32_copy(classifier)
    assert all(layer.dtype_policy.name == "float32" for layer in copy.layers)
    np.testing.assert_allclose(predict_probabilities(copy, x), probabilities, atol=0.05)
    assert float32_copy(copy) is copy
    with pytest.raises(ConfigError, match="model.precision"):
        Config.load(None, {"model.precision": "float16"})


@pytest.mark.slow
def test_one_tie_step_on_cifar10_images_in_bfloat16(cifar_slice):
    images, labels = cifar_slice
    keras.utils.set_random_seed(0)
    classifier = build_classifier((32, 32, 3), 11, "airbench", width=8,
                                  precision="mixed_bfloat16")
    generator = build_generator((32, 32, 3), 11, latent_dim=8, width=16)
    pool = GarbagePool((32, 32, 3), 64)
    pool.fill_with_noise(32, [0.5] * 3, [0.25] * 3, np.random.default_rng(0))
    model = TIEModel(classifier, pool, generator, garbage_per_batch=4, generator_batch_size=8)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=5e-3),
                  keras.optimizers.Adam(1e-3))
    before_c = [w.numpy().copy() for w in classifier.trainable_weights]
    before_g = [w.numpy().copy() for w in generator.trainable_weights]
    history = model.fit(images[:32], labels[:32], batch_size=32, epochs=1, verbose=0,
                        shuffle=False).history
    logs = {key: values[-1] for key, values in history.items()}
    assert {"loss", "inv_loss", "inv_kl", "inv_ce", "inv_cos"} <= set(logs)
    assert all(np.isfinite(v) for v in logs.values())
    assert all(w.dtype == "float32" for w in classifier.trainable_weights)
    assert any(not np.allclose(a, b.numpy())
               for a, b in zip(before_c, classifier.trainable_weights))
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(before_g, generator.trainable_weights))


class _Rates(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self.model.optimizer
        self.rates.append(float(optimizer.learning_rate))
        self.kind = (type(optimizer).__name__, bool(getattr(optimizer, "nesterov", False)),
                     optimizer.weight_decay)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_cifar10_preset_options_train_and_resume_on_the_warmup_cosine(tmp_path, shared_data_dir,
                                                                      cache_dir):
    os.environ["KERAS_TIE_CACHE_DIR"] = str(cache_dir)
    preset = Config.load(os.path.join(os.path.dirname(__file__), "..", "configs", "cifar10.toml"))
    assert (preset.model.backbone, preset.model.precision, preset.model.generator_upsampling) \
        == ("airbench", "mixed_bfloat16", "resize")
    config = preset.with_overrides({
        "epochs": 2, "batch_size": 32, "limit": 128, "data_dir": str(shared_data_dir),
        "model.width": 8, "optimizer.warmup_epochs": 0.5, "tie.samples_per_class": 8,
        "tie.generator_steps_per_epoch": 2, "tie.generator_batch_size": 8,
        "tie.initial_pool_size": 32, "tie.pool_capacity": 200, "tie.threshold_samples": 64})
    run_dir = str(tmp_path / "run")
    first = _Rates()
    with pytest.raises(KeyboardInterrupt):
        train(config, run_dir, verbose=0, callbacks=[first, _Interrupt()])
    assert first.kind == ("SGD", True, pytest.approx(5e-3))
    steps, warmup, peak = 128 // 32, 2, 0.1  # 0.5 of an epoch of 4 steps
    expected = [peak * t / warmup for t in range(warmup)] + [
        peak * 0.5 * (1 + np.cos(np.pi * t / (2 * steps - warmup)))
        for t in range(2 * steps - warmup)]
    np.testing.assert_allclose(first.rates, expected[:steps], rtol=1e-5, atol=1e-7)
    second = _Rates()
    resumed = train(None, run_dir, resume=True, verbose=0, callbacks=[second])
    np.testing.assert_allclose(second.rates, expected[steps:], rtol=1e-5, atol=1e-7)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert all(np.isfinite(h["loss"]) for h in resumed.history)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "complete" and info["backbone"] == "airbench"
    reloaded = keras.saving.load_model(os.path.join(run_dir, "model.keras"))
    assert reloaded.get_layer("block1_conv1").compute_dtype == "bfloat16"
    generator = keras.saving.load_model(os.path.join(run_dir, "generator.keras"))
    assert isinstance(generator.get_layer("up1"), keras.layers.Conv2D)  # resize, kept on resume
    assert not isinstance(generator.get_layer("up1"), keras.layers.Conv2DTranspose)
    for bad, match in (({"optimizer.warmup_epochs": 20.0}, "optimizer.warmup_epochs"),
                       ({"optimizer.classifier_schedule": "constant"}, "optimizer.warmup_epochs"),
                       ({"optimizer.weight_decay": -1.0}, "optimizer.weight_decay")):
        with pytest.raises(ConfigError, match=match):
            preset.with_overrides(bad)
