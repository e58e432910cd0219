"""End-to-end loads of the real datasets in ../shared/data, checked against published figures."""

import time

import numpy as np
import pytest

from keras_tie.data import DatasetNotFoundError, folders, load

pytestmark = pytest.mark.slow

FASHION_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Published statistics, in [0, 1] units.
MNIST_TRAIN_MEAN, MNIST_TRAIN_STD = 0.1307, 0.3081
CIFAR10_TRAIN_MEAN = (0.4914, 0.4822, 0.4465)


@pytest.mark.parametrize(
    "name, class_names",
    [("mnist", tuple(str(d) for d in range(10))), ("fashion_mnist", FASHION_NAMES)],
)
def test_idx_datasets_have_published_counts_and_classes(name, class_names, shared_data_dir, cache_dir):
    for split, count in (("train", 60000), ("test", 10000)):
        ds = load(name, split=split, data_dir=shared_data_dir, cache_dir=cache_dir)
        assert ds.images.shape == (count, 28, 28, 1)
        assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int64
        assert len(ds) == count
        np.testing.assert_array_equal(np.bincount(ds.labels, minlength=11)[10:], [0])
        assert set(np.unique(ds.labels)) == set(range(10))
        assert ds.info.class_names == class_names
        assert ds.info.image_shape == (28, 28, 1) and ds.info.channels == 1 and ds.info.num_classes == 10
        assert ds.info.source == str(shared_data_dir / name)


def test_mnist_train_statistics_match_published(shared_data_dir, cache_dir):
    ds = load("mnist", split="train", data_dir=shared_data_dir, cache_dir=cache_dir)
    mean, std = ds.channel_stats()
    assert mean[0] == pytest.approx(MNIST_TRAIN_MEAN, abs=1e-4)
    assert std[0] == pytest.approx(MNIST_TRAIN_STD, abs=1e-4)
    assert ds.as_float().dtype == np.float32
    assert ds.as_float().max() == 1.0


def test_cifar10_is_decoded_once_then_served_from_cache(shared_data_dir, cache_dir, monkeypatch):
    ds = load("cifar10", split="train", data_dir=shared_data_dir, cache_dir=cache_dir)
    assert ds.images.shape == (50000, 32, 32, 3) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(ds.labels), [5000] * 10)
    assert ds.info.class_names == CIFAR10_NAMES
    mean, _ = ds.channel_stats()
    np.testing.assert_allclose(mean, CIFAR10_TRAIN_MEAN, atol=1e-3)
    assert len(list(cache_dir.glob("cifar10-*-train-*.npz"))) == 1

    # A second load must not decode: make decoding impossible and time it.
    def no_decoding(*args, **kwargs):
        raise AssertionError("the second load decoded the PNGs again instead of using the cache")

    monkeypatch.setattr(folders, "read_class_folders", no_decoding)
    start = time.perf_counter()
    again = load("cifar10", split="train", data_dir=shared_data_dir, cache_dir=cache_dir)
    assert time.perf_counter() - start < 3.0
    np.testing.assert_array_equal(again.images[:100], ds.images[:100])
    np.testing.assert_array_equal(again.labels, ds.labels)
    assert again.info == ds.info


def test_cifar10_test_split(shared_data_dir, cache_dir):
    ds = load("cifar10", split="test", data_dir=shared_data_dir, cache_dir=cache_dir)
    assert ds.images.shape == (10000, 32, 32, 3)
    np.testing.assert_array_equal(np.bincount(ds.labels), [1000] * 10)
    assert ds.info.channels == 3


def test_cifar100_has_only_a_test_split_here(shared_data_dir, cache_dir):
    ds = load("cifar100", split="test", data_dir=shared_data_dir, cache_dir=cache_dir)
    assert ds.images.shape == (10000, 32, 32, 3)
    np.testing.assert_array_equal(np.bincount(ds.labels), [100] * 100)
    assert ds.info.class_names[:3] == ("apple", "aquarium_fish", "baby")
    assert ds.info.class_names[-1] == "worm"
    with pytest.raises(DatasetNotFoundError, match="holds only the test split"):
        load("cifar100", split="train", data_dir=shared_data_dir, cache_dir=cache_dir)


def test_limit_takes_an_even_deterministic_slice(shared_data_dir, cache_dir):
    ds = load("mnist", split="test", data_dir=shared_data_dir, cache_dir=cache_dir, limit=100)
    again = load("mnist", split="test", data_dir=shared_data_dir, cache_dir=cache_dir, limit=100)
    np.testing.assert_array_equal(np.bincount(ds.labels), [10] * 10)
    np.testing.assert_array_equal(ds.images, again.images)


def test_to_tf_dataset_yields_float_batches(shared_data_dir, cache_dir):
    ds = load("mnist", split="test", data_dir=shared_data_dir, cache_dir=cache_dir, limit=250)
    batches = list(ds.to_tf_dataset(batch_size=100).as_numpy_iterator())
    assert [len(labels) for _, labels in batches] == [100, 100, 50]
    images, labels = batches[0]
    assert images.dtype == np.float32 and images.shape == (100, 28, 28, 1)
    assert labels.dtype == np.int64
    np.testing.assert_allclose(images, ds.images[:100] / 255.0, atol=1e-6)
    dropped = list(ds.to_tf_dataset(batch_size=100, drop_remainder=True).as_numpy_iterator())
    assert len(dropped) == 2

    def shuffled_labels():
        pipeline = ds.to_tf_dataset(batch_size=50, shuffle=True, seed=3)
        return np.concatenate([labels for _, labels in pipeline.as_numpy_iterator()])

    first = shuffled_labels()
    np.testing.assert_array_equal(first, shuffled_labels())
    assert not np.array_equal(first, ds.labels)
    np.testing.assert_array_equal(np.sort(first), np.sort(ds.labels))


def test_cross_dataset_conversion_through_load(shared_data_dir, cache_dir):
    kwargs = dict(split="test", data_dir=shared_data_dir, cache_dir=cache_dir, limit=20)
    cifar_as_mnist = load("cifar10", target_shape=(28, 28, 1), **kwargs)
    assert cifar_as_mnist.images.shape == (20, 28, 28, 1)
    assert cifar_as_mnist.images.dtype == np.float32
    assert cifar_as_mnist.info.image_shape == (28, 28, 1) and cifar_as_mnist.info.name == "cifar10"
    assert 0.0 <= cifar_as_mnist.images.min() and cifar_as_mnist.images.max() <= 1.0
    mnist_as_cifar = load("mnist", target_shape=(32, 32, 3), **kwargs)
    assert mnist_as_cifar.images.shape == (20, 32, 32, 3)
    np.testing.assert_array_equal(mnist_as_cifar.images[..., 0], mnist_as_cifar.images[..., 2])
    # as_float returns converted (already float) images as they are.
    assert mnist_as_cifar.as_float() is mnist_as_cifar.images
