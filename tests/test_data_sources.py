"""Names, the tfds fallback offline, list_datasets, digits, and the deterministic splits."""

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from keras_tie.data import (
    DatasetError,
    DatasetNotFoundError,
    UnknownDatasetError,
    dataset_names,
    list_datasets,
    load,
    splits,
    tfds_source,
)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No tfds data, and a probe aimed at a closed local port: offline without the network."""
    with socket.socket() as s:  # a port nobody listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(tfds_source, "PROBE_ADDRESS", ("127.0.0.1", port))
    monkeypatch.setattr(tfds_source, "_network", None)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.delenv("KERAS_TIE_DATA_DIR", raising=False)
    monkeypatch.delenv("KERAS_TIE_OFFLINE", raising=False)


def test_unknown_name_lists_the_known_names_and_the_closest():
    with pytest.raises(UnknownDatasetError) as raised:
        load("mnsit")
    message = str(raised.value)
    assert "Received: name='mnsit'" in message and "Did you mean 'mnist'?" in message
    for name in dataset_names():
        assert name in message
    assert "folder:PATH" in message and "idx:PATH" in message
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, DatasetError)


def test_dataset_names_cover_the_issue():
    assert set(dataset_names()) == {
        "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn_cropped", "kmnist", "emnist_letters",
        "tiny_imagenet", "omniglot", "dtd", "notmnist", "gaussian", "uniform", "sphere", "digits",
    }  # fmt: skip


def test_bad_split_and_misplaced_options():
    with pytest.raises(DatasetError, match="Received: split='validation'"):
        load("digits", split="validation")
    with pytest.raises(DatasetError, match="only apply to the synthetic sets.*Received: count=5"):
        load("digits", count=5)


def test_offline_without_local_files_fails_fast_and_says_where_to_put_what(tmp_path, offline):
    start = time.perf_counter()
    with pytest.raises(DatasetNotFoundError) as raised:
        load("svhn_cropped", split="test", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    assert time.perf_counter() - start < 15
    message = str(raised.value)
    assert "'svhn_cropped'" in message
    assert str(tmp_path / "data" / "svhn_cropped") in message and "test_32x32.mat" in message
    assert "tensorflow-datasets 'svhn_cropped' is not prepared in " + str(tmp_path / "tfds") in message
    assert "offline" in message


def test_offline_without_a_data_dir_names_the_environment_variable(tmp_path, offline):
    with pytest.raises(DatasetNotFoundError, match="KERAS_TIE_DATA_DIR.*train-images-idx3-ubyte.gz"):
        load("kmnist", cache_dir=tmp_path / "cache")


def test_dataset_missing_from_tfds_does_not_probe(tmp_path, offline, monkeypatch):
    monkeypatch.setattr(tfds_source, "network_status", lambda refresh=False: pytest.fail("probed"))
    expected = "(?s)tiny-imagenet-200.zip.*tensorflow-datasets: has no tiny_imagenet"
    with pytest.raises(DatasetNotFoundError, match=expected):
        load("tiny_imagenet", data_dir=tmp_path, cache_dir=tmp_path / "cache")


def test_probe_is_bounded_by_its_timeout_and_runs_once(monkeypatch):
    calls = []

    def hanging_connection(address, timeout=None):
        calls.append(address)
        time.sleep(3)
        raise OSError("gave up")

    monkeypatch.setattr(socket, "create_connection", hanging_connection)
    monkeypatch.setattr(tfds_source, "PROBE_TIMEOUT_S", 0.2)
    monkeypatch.setattr(tfds_source, "_network", None)
    monkeypatch.delenv("KERAS_TIE_OFFLINE", raising=False)
    start = time.perf_counter()
    online, reason = tfds_source.network_status()
    assert time.perf_counter() - start < 1.5
    assert not online and "no answer within 0.2 s" in reason
    assert tfds_source.network_status() == (online, reason) and len(calls) == 1


def test_offline_environment_variable_skips_the_probe(monkeypatch):
    monkeypatch.setenv("KERAS_TIE_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("probed"))
    assert tfds_source.network_status() == (False, "KERAS_TIE_OFFLINE is set")


def test_prepared_tfds_copy_counts_as_available_offline(tmp_path, offline):
    for version in ("3.0.0", "3.1.0"):
        folder = tmp_path / "tfds" / "emnist" / "letters" / version
        folder.mkdir(parents=True)
        (folder / "dataset_info.json").write_text(json.dumps({}))
    newest = tmp_path / "tfds" / "emnist" / "letters" / "3.1.0"
    assert tfds_source.prepared_dir("emnist/letters") == str(newest)
    record = {r.name: r for r in list_datasets(data_dir=tmp_path)}["emnist_letters"]
    assert record.available and "3.1.0" in record.where


def test_list_datasets_reports_local_files(shared_data_dir, offline):
    records = {r.name: r for r in list_datasets(data_dir=shared_data_dir)}
    assert records["mnist"].available and records["mnist"].where == str(shared_data_dir / "mnist")
    assert records["cifar100"].available and "test split only" in records["cifar100"].where
    assert not records["svhn_cropped"].available
    assert "train_32x32.mat" in records["svhn_cropped"].reason and "offline" in records["svhn_cropped"].reason
    assert records["digits"].available and records["digits"].kind == "embedded"
    assert records["gaussian"].kind == "synthetic" and records["folder:PATH"].kind == "user"


def test_import_and_list_do_not_import_tensorflow(shared_data_dir):
    code = (
        "import sys, time\n"
        "start = time.perf_counter()\n"
        "import keras_tie.data as data\n"
        f"records = data.list_datasets({str(shared_data_dir)!r})\n"
        "print(time.perf_counter() - start)\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
        "assert 'tensorflow_datasets' not in sys.modules, 'tensorflow_datasets imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        env={"KERAS_TIE_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) < 10


def test_digits_are_28x28_with_disjoint_stratified_splits():
    train, test = load("digits", split="train"), load("digits", split="test")
    assert train.images.shape[1:] == (28, 28, 1) and train.images.dtype == np.uint8
    assert train.info.num_classes == 10 and train.info.source == "scikit-learn"
    assert len(train) + len(test) == 1797
    assert (len(train), len(test)) == (1438, 359)
    assert set(np.unique(test.labels)) == set(range(10))
    assert train.images.max() == 255 and train.images.min() == 0
    # 8x8 digits hold 0..16 per pixel; a full pixel block upscales to 255.
    train_rows = {img.tobytes() for img in train.images}
    shared = sum(img.tobytes() in train_rows for img in test.images)
    assert shared <= 2  # load_digits has a few duplicate images, never more


def test_stratified_split_is_per_class_and_deterministic():
    labels = np.repeat([0, 1], 10)
    train, test = splits.stratified_split(labels)
    np.testing.assert_array_equal(np.bincount(labels[test]), [2, 2])
    assert not set(train) & set(test) and len(train) + len(test) == 20
    again_train, _ = splits.stratified_split(labels)
    np.testing.assert_array_equal(train, again_train)


def test_stratified_subset_takes_classes_in_turn():
    labels = np.array([0, 0, 0, 1, 1, 2])
    # rank 0 of classes 0, 1, 2 (indices 0, 3, 5), then rank 1 of class 0 (index 1)
    np.testing.assert_array_equal(splits.stratified_subset(labels, 4), [0, 1, 3, 5])
    np.testing.assert_array_equal(splits.stratified_subset(labels, 100), np.arange(6))
    with pytest.raises(DatasetError, match="Received: limit=-1"):
        splits.stratified_subset(labels, -1)


def test_prepared_tfds_copy_is_loaded_and_cached(tmp_path, offline):
    tfds = pytest.importorskip("tensorflow_datasets")
    prepared = tmp_path / "tfds" / "dtd" / "3.0.1"
    prepared.mkdir(parents=True)
    (prepared / "dataset_info.json").write_text("{}")
    kwargs = dict(split="test", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    # mock_data serves random examples with dtd's real features (images of any size, 47 classes).
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = load("dtd", **kwargs)
    assert ds.info.source == "tensorflow-datasets"
    assert ds.images.shape == (6, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.info.num_classes == 47 and ds.info.class_names[0] == "banded"
    cached = load("dtd", **kwargs)  # no mock now: only the cache can answer
    np.testing.assert_array_equal(cached.images, ds.images)
