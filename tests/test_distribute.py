"""Training under tf.distribute: a MirroredStrategy over two logical CPU devices computes what
one device computes, and the epoch-level inversion and exclusion happen once.

The CPU can only be split into logical devices before TensorFlow initialises
them, so the distributed runs happen in fresh processes
(tests/distributed_steps.py, the CLI), all started together by `launched`.
Two local worker processes on localhost ports test MultiWorkerMirroredStrategy.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from keras_tie.cli.main import cli
from keras_tie.config import ConfigError
from keras_tie.training import distribute

TESTS = os.path.dirname(os.path.abspath(__file__))
STEPS_SCRIPT = os.path.join(TESTS, "distributed_steps.py")


def _environment():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow",
                PYTHONPATH=os.pathsep.join([os.path.dirname(TESTS),
                                            os.environ.get("PYTHONPATH", "")]))


def _train_command(shared_data_dir, run_dir, *strategy):
    return [sys.executable, "-m", "keras_tie.cli.main", "train", "--dataset", "mnist",
            "--epochs", "1", "--batch-size", "64", "--limit", "256",
            "--data-dir", str(shared_data_dir), "--output", str(run_dir), "--quiet", *strategy,
            "--set", "tie.samples_per_class=10", "--set", "tie.generator_steps_per_epoch=2",
            "--set", "tie.initial_pool_size=64", "--set", "tie.pool_capacity=400",
            "--set", "tie.threshold_lambda=0"]


def _free_ports(count):
    import socket

    ports = []
    for _ in range(count):
        with socket.socket() as probe:
            probe.bind(("localhost", 0))
            ports.append(probe.getsockname()[1])
    return ports


@pytest.fixture(scope="module")
def launched(tmp_path_factory, shared_data_dir):
    """Every subprocess of this file, started at once (they are independent; on a shared CPU
    side by side is faster than one after the other): {name: (process, folder)}."""
    folder = tmp_path_factory.mktemp("distribute")
    env = _environment()
    started = {}

    def start(name, command, **extra_env):
        started[name] = subprocess.Popen(command, env=dict(env, **extra_env),
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         text=True)

    for replicas in (1, 2):
        start(f"steps_{replicas}", [sys.executable, STEPS_SCRIPT, "--replicas", str(replicas),
                                    "--output", str(folder / f"replicas_{replicas}.npz")])
    start("mirrored", _train_command(shared_data_dir, folder / "mirrored", "--strategy",
                                     "mirrored", "--cpu-devices", "2"))
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        start(f"worker_{index}", _train_command(shared_data_dir, folder / "multi_worker",
                                                "--strategy", "multi_worker"),
              TF_CONFIG=json.dumps(tf_config))
    yield started, folder
    for process in started.values():  # a failed test must not leave workers behind
        if process.poll() is None:
            process.kill()


def _finished(launched, name):
    """The output of subprocess `name`, after checking that it succeeded."""
    started, _ = launched
    output, _ = started[name].communicate(timeout=600)
    assert started[name].returncode == 0, output[-3000:]
    return output


@pytest.fixture(scope="module")
def one_and_two_replicas(launched):
    """The outputs of tests/distributed_steps.py with 1 and 2 replicas."""
    results = {}
    for replicas in (1, 2):
        _finished(launched, f"steps_{replicas}")
        results[replicas] = dict(np.load(launched[1] / f"replicas_{replicas}.npz"))
    return results


@pytest.mark.parametrize("model", ["tie", "flow_alpha2", "repair"])
@pytest.mark.slow
def test_mirrored_step_equals_the_single_device_step(one_and_two_replicas, model):
    """Same logged losses and metrics, same weights after the step (classifier and generator
    for TIE; flow with the nested-tape approximate-mass penalty; repair with the perceptual
    distance)."""
    one, two = one_and_two_replicas[1], one_and_two_replicas[2]
    keys = sorted(k for k in one if k.startswith(f"{model}/"))
    assert keys and keys == sorted(k for k in two if k.startswith(f"{model}/"))
    logs = [k for k in keys if "/log/" in k]
    assert len(logs) >= 3
    for key in logs:
        assert float(two[key]) == pytest.approx(float(one[key]), rel=2e-5, abs=1e-6), key
    for key in (k for k in keys if "/weight/" in k):
        np.testing.assert_allclose(two[key], one[key], rtol=1e-4, atol=2e-6, err_msg=key)
    if model == "tie":  # the generator step ran too
        assert float(one["tie/log/inv_loss"]) > 0


@pytest.mark.slow
def test_the_steps_changed_the_weights(one_and_two_replicas):
    """The comparison above is not between untouched initial weights: rebuilt with the same
    seed, the initial weights differ from those after the step."""
    import keras

    from keras_tie.models import build_classifier, build_generator

    keras.utils.set_random_seed(0)
    classifier = build_classifier((28, 28, 1), 4, "conv3", width=4, dense_units=8)
    generator = build_generator((28, 28, 1), 4, latent_dim=4, width=8)
    after = one_and_two_replicas[2]
    keys = sorted(k for k in after if k.startswith("tie/weight/"))
    initial = [w.numpy() for w in classifier.weights + generator.weights]
    assert len(keys) == len(initial)
    changed = [not np.allclose(after[k], w) for k, w in zip(keys, initial)]
    n_classifier = len(classifier.weights)
    assert any(changed[:n_classifier]) and any(changed[n_classifier:])


@pytest.fixture(scope="module")
def mirrored_run(launched):
    """run.json of `keras-tie train --strategy mirrored --cpu-devices 2` on 256 MNIST images."""
    _finished(launched, "mirrored")
    run_dir = launched[1] / "mirrored"
    assert (run_dir / "model.keras").stat().st_size > 0
    return json.loads((run_dir / "run.json").read_text())


@pytest.mark.slow
def test_cli_mirrored_training_grows_the_pool_once(mirrored_run):
    """run.json records 2 replicas, and the pool grew by exactly the epoch's excluded count
    (once, not once per replica)."""
    info = mirrored_run
    assert info["status"] == "complete"
    assert info["distribute"] == {"strategy": "mirrored", "replicas": 2, "workers": 1}
    epoch = info["history"][-1]
    assert 0 < epoch["excluded"] <= 11 * 10  # at most the 110 generated images
    assert epoch["pool_size"] == 64 + epoch["excluded"] == info["pool_size"]


@pytest.mark.slow
def test_two_local_workers_train_like_two_local_devices(launched, mirrored_run):
    """MultiWorkerMirroredStrategy, two worker processes on localhost (TF_CONFIG): the chief
    alone writes the run folder, and the run is the mirrored run's (same losses, same pool)."""
    chief, worker = _finished(launched, "worker_0"), _finished(launched, "worker_1")
    assert "Run folder" in chief and "the chief wrote the run folder" in worker
    info = json.loads((launched[1] / "multi_worker" / "run.json").read_text())
    assert info["distribute"] == {"strategy": "multi_worker", "replicas": 2, "workers": 2}
    ours, theirs = info["history"][-1], mirrored_run["history"][-1]
    for key in ("loss", "accuracy", "inv_loss", "tau"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-4), key
    assert ours["excluded"] == theirs["excluded"] and ours["pool_size"] == theirs["pool_size"]


# -- choosing a strategy ------------------------------------------------------


def test_unknown_strategy_and_multi_worker_without_tf_config_are_refused(monkeypatch):
    with pytest.raises(distribute.StrategyError, match="Received: strategy='ring'"):
        distribute.make_strategy("ring")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(distribute.StrategyError, match="needs the TF_CONFIG"):
        distribute.make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}}')
    with pytest.raises(distribute.StrategyError, match="cluster.worker"):
        distribute.make_strategy("multi_worker")


def test_cli_explains_strategy_mistakes(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    result = CliRunner().invoke(cli, ["train", "--strategy", "multi_worker"])
    assert result.exit_code == 2 and "TF_CONFIG" in result.output
    result = CliRunner().invoke(cli, ["train", "--cpu-devices", "2"])
    assert result.exit_code == 2 and "--strategy mirrored" in result.output


def test_batch_size_must_split_evenly_between_replicas():
    class TwoReplicas:
        num_replicas_in_sync = 2

    distribute.check_batch_size(64, TwoReplicas())
    with pytest.raises(ConfigError, match="Received: batch_size=65"):
        distribute.check_batch_size(65, TwoReplicas())


def test_with_one_replica_the_helpers_are_the_plain_expressions():
    import tensorflow as tf

    values = tf.constant([1.0, 2.0, 6.0])
    assert float(distribute.global_mean(values)) == pytest.approx(3.0)
    assert float(distribute.all_replicas_sum(tf.constant(5.0))) == 5.0
    assert distribute.replica_rows(values) is values
    assert distribute.describe() == {"strategy": "default", "replicas": 1, "workers": 1}
    assert distribute.is_chief()
