"""Synthetic OOD sets and convert_images, on tiny hand-made inputs."""

import numpy as np
import pytest

from keras_tie.data import Dataset, DatasetError, DatasetInfo, convert_images, load, restandardize


def reference(images):
    images = np.asarray(images, dtype=np.uint8)
    info = DatasetInfo("ref", "train", ("a",), images.shape[1:], 1, "test")
    return Dataset(images, np.zeros(len(images), dtype=np.int64), info)


@pytest.mark.parametrize("name", ["gaussian", "uniform"])
def test_noise_shapes_dtype_labels_and_seeds(name):
    ds = load(name, split="test", like=(28, 28, 1), count=50, seed=3)
    assert ds.images.shape == (50, 28, 28, 1) and ds.images.dtype == np.float32
    np.testing.assert_array_equal(ds.labels, np.full(50, -1))
    assert ds.info.num_classes == 0 and ds.info.source == "synthetic" and ds.info.name == name
    same, other = (load(name, split="test", like=(28, 28, 1), count=50, seed=s) for s in (3, 4))
    np.testing.assert_array_equal(ds.images, same.images)
    assert not np.array_equal(ds.images, other.images)
    assert ds.as_float() is ds.images


def test_gaussian_is_unclipped_n_half_one_by_default():
    ds = load("gaussian", split="test", like=(32, 32, 3), count=300, seed=0)
    assert ds.images.mean() == pytest.approx(0.5, abs=0.01)
    assert ds.images.std() == pytest.approx(1.0, abs=0.01)
    assert ds.images.min() < -2 and ds.images.max() > 3
    clipped = load("gaussian", split="test", like=(32, 32, 3), count=300, seed=0, clip=True)
    assert clipped.images.min() == 0.0 and clipped.images.max() == 1.0


def test_uniform_is_in_unit_range():
    ds = load("uniform", split="test", like=DatasetInfo("r", "train", (), (8, 8, 1), 0, "x"), count=500)
    assert 0.0 <= ds.images.min() and ds.images.max() < 1.0
    assert ds.images.mean() == pytest.approx(0.5, abs=0.01)


def test_sphere_norms_equal_the_largest_reference_norm():
    # 2x2x1 images: all 255 has norm sqrt(4) = 2 in [0, 1] units; the others are smaller.
    ref = reference([np.full((2, 2, 1), 255), np.zeros((2, 2, 1)), np.full((2, 2, 1), 100)])
    ds = load("sphere", split="test", like=ref, count=20, seed=0)
    assert ds.images.shape == (20, 2, 2, 1)
    np.testing.assert_allclose(np.linalg.norm(ds.images.reshape(20, -1), axis=1), 2.0, rtol=1e-6)
    # Directions are spread out, not one point repeated.
    assert np.ptp(ds.images[:, 0, 0, 0]) > 0.5
    given = load("sphere", split="test", like=(4, 4, 3), radius=3.5, count=5)
    np.testing.assert_allclose(np.linalg.norm(given.images.reshape(5, -1), axis=1), 3.5, rtol=1e-6)


def test_synthetic_sets_need_a_reference():
    with pytest.raises(DatasetError, match="gaussian needs a reference.*Received: like=None"):
        load("gaussian", split="test")
    with pytest.raises(DatasetError, match="sphere needs the reference training images"):
        load("sphere", split="test", like=(28, 28, 1))


def test_convert_gray_to_rgb_tiles_and_scales():
    images = np.array([[[0], [255]], [[51], [102]]], dtype=np.uint8)[None]  # 1x2x2x1
    out = convert_images(images, (2, 2, 3))
    assert out.dtype == np.float32 and out.shape == (1, 2, 2, 3)
    np.testing.assert_allclose(out[0, :, :, 1], [[0.0, 1.0], [0.2, 0.4]], atol=1e-6)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_convert_rgb_to_gray_uses_luma_weights():
    images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    images[0, ..., 0] = 255  # pure red
    images[1, ..., 1] = 255  # pure green
    out = convert_images(images, (4, 4, 1))
    np.testing.assert_allclose(out[0], 0.2989, atol=1e-3)
    np.testing.assert_allclose(out[1], 0.5870, atol=1e-3)


@pytest.mark.parametrize(
    "source_shape, target_shape", [((32, 32, 3), (28, 28, 1)), ((28, 28, 1), (32, 32, 3))]
)
def test_convert_resizes_and_keeps_the_range(source_shape, target_shape):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, *source_shape), dtype=np.uint8)
    images[0] = 128  # a constant image stays constant through any resize
    # (to 1e-4: tf.image.rgb_to_grayscale's weights 0.2989 + 0.5870 + 0.1140 sum to 0.9999)
    out = convert_images(images, target_shape, batch_size=2)
    assert out.shape == (5, *target_shape) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    np.testing.assert_allclose(out[0], 128 / 255, atol=1e-4)
    # float input in [0, 1] units gives the same result as uint8
    np.testing.assert_allclose(convert_images(images / 255.0, target_shape), out, atol=1e-5)


def test_convert_rejects_bad_shapes():
    with pytest.raises(DatasetError, match="Received: target_shape=\\(28, 28, 2\\)"):
        convert_images(np.zeros((1, 28, 28, 1), dtype=np.uint8), (28, 28, 2))
    with pytest.raises(DatasetError, match="Received: images.shape=\\(28, 28, 1, 1, 1\\)"):
        convert_images(np.zeros((28, 28, 1, 1, 1), dtype=np.uint8), (28, 28, 1))


def test_synthetic_with_a_target_shape_is_generated_at_that_shape():
    ds = load("uniform", split="test", like=(28, 28, 1), count=3, target_shape=(32, 32, 3))
    assert ds.images.shape == (3, 32, 32, 3)


def test_restandardize_matches_target_statistics_per_channel():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (50, 4, 4, 3)).astype(np.float32) * [1.0, 0.5, 0.2]
    mean, variance = [0.3, 0.5, 0.1], [0.04, 0.09, 0.01]
    out = restandardize(images, mean, variance)
    assert out.dtype == np.float32 and out.shape == images.shape
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), mean, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=(0, 1, 2)), variance, rtol=1e-4)
    # An affine map per channel: the order of pixels within a channel is kept.
    np.testing.assert_array_equal(np.argsort(out[..., 1], axis=None),
                                  np.argsort(images[..., 1], axis=None))
    # A set restandardised to its own statistics is unchanged.
    own = restandardize(images, images.mean(axis=(0, 1, 2)), images.var(axis=(0, 1, 2)))
    np.testing.assert_allclose(own, images, atol=1e-6)
    # uint8 pixels are read in [0, 1] units first, as convert_images reads them.
    pixels = rng.integers(0, 256, (10, 3, 3, 1), dtype=np.uint8)
    np.testing.assert_allclose(restandardize(pixels, 0.2, 0.01),
                               restandardize(pixels / np.float32(255), 0.2, 0.01), atol=1e-6)


def test_restandardize_refuses_constant_channels_and_bad_targets():
    with pytest.raises(DatasetError, match="every channel of images must vary"):
        restandardize(np.zeros((2, 2, 2, 1), np.float32), 0.5, 0.1)
    with pytest.raises(DatasetError, match="variance positive.*Received"):
        restandardize(np.ones((2, 2, 2, 1), np.float32), 0.5, 0.0)
    with pytest.raises(DatasetError, match="uint8 or float .N, H, W, C. array"):
        restandardize(np.ones((2, 2, 2, 1), np.int64), 0.5, 0.1)
