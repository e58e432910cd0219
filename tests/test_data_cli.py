"""`keras-tie data list` and `keras-tie data info`, through click's CliRunner."""

import pytest
from click.testing import CliRunner

from keras_tie.cli.data import data


@pytest.fixture
def runner(monkeypatch, tmp_path):
    # No network, no user cache: the commands must work offline and leave ~/.cache alone.
    monkeypatch.setenv("KERAS_TIE_OFFLINE", "1")
    monkeypatch.setenv("KERAS_TIE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    return CliRunner()


def row(output, name):
    (line,) = [line for line in output.splitlines() if line.split()[:1] == [name]]
    return line.split()


def test_list_shows_what_is_available(runner, shared_data_dir, monkeypatch):
    monkeypatch.setenv("KERAS_TIE_DATA_DIR", str(shared_data_dir))
    result = runner.invoke(data, ["list"])
    assert result.exit_code == 0, result.output
    assert row(result.output, "mnist")[1:4] == ["real", "yes", str(shared_data_dir / "mnist")]
    assert row(result.output, "digits")[1:3] == ["embedded", "yes"]
    assert row(result.output, "svhn_cropped")[1:3] == ["real", "no"]
    assert "train_32x32.mat" in " ".join(row(result.output, "svhn_cropped"))


def test_list_without_a_data_dir_says_so(runner, monkeypatch):
    monkeypatch.delenv("KERAS_TIE_DATA_DIR", raising=False)
    result = runner.invoke(data, ["list"])
    assert result.exit_code == 0, result.output
    assert row(result.output, "mnist")[2] == "no"
    assert "KERAS_TIE_DATA_DIR" in result.output


def test_info_mnist(runner, shared_data_dir, cache_dir):
    args = ["info", "mnist", "--data-dir", str(shared_data_dir), "--cache-dir", str(cache_dir)]
    result = runner.invoke(data, args)
    assert result.exit_code == 0, result.output
    assert "28x28x1" in result.output and "classes:      10" in result.output
    assert row(result.output, "train")[1:] == ["60000", "0.1307"]
    assert row(result.output, "test")[1] == "10000"
    assert f"source:       {shared_data_dir / 'mnist'}" in result.output


def test_info_one_split_of_cifar100(runner, shared_data_dir, cache_dir):
    args = ["info", "cifar100", "--data-dir", str(shared_data_dir), "--cache-dir", str(cache_dir)]
    result = runner.invoke(data, args + ["--split", "test"])
    assert result.exit_code == 0, result.output
    assert row(result.output, "test")[1] == "10000" and "(80 more)" in result.output
    both = runner.invoke(data, args)
    assert both.exit_code == 0, both.output
    assert row(both.output, "train")[1:4] == ["-", "not", "available"]


def test_info_unknown_name_is_a_usage_error(runner):
    result = runner.invoke(data, ["info", "cifar-11"])
    assert result.exit_code == 2
    assert "Known names: mnist, fashion_mnist" in result.output and "Did you mean 'cifar10'?" in result.output
    assert "Traceback" not in result.output


def test_info_of_a_missing_dataset_fails_without_traceback(runner, tmp_path):
    result = runner.invoke(data, ["info", "svhn_cropped", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "Error: Dataset 'svhn_cropped'" in result.output and "train_32x32.mat" in result.output
    assert isinstance(result.exception, SystemExit)
