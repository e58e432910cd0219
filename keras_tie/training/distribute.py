"""Training under tf.distribute: choosing a strategy, and the replica-aware maths of train_step.

`keras-tie train --strategy` picks one of STRATEGIES:

- `default`: no distribution (one device, what TensorFlow places ops on).
- `mirrored`: `tf.distribute.MirroredStrategy` over the machine's GPUs, or,
  without GPUs, over its logical CPU devices (`--cpu-devices N` splits the CPU
  into N, for tests). One replica per device, variables mirrored.
- `multi_worker`: `tf.distribute.MultiWorkerMirroredStrategy`, the cluster
  described by the TF_CONFIG environment variable (README, "Several machines").

How Keras 3 (TensorFlow backend) runs a custom `train_step` under a strategy
(keras/src/backend/tensorflow/trainer.py and optimizer.py): `fit` splits each
global batch of the tf.data pipeline between the replicas, calls `train_step`
once per replica inside `strategy.run`, and `optimizer.apply_gradients`
all-reduces the gradients by SUM before one update of the mirrored variables.
The per-step logs are the MEAN over replicas of what `train_step` returns.
So every loss a train_step differentiates must be the replica's share of the
global-batch loss: `global_mean` divides the replica's sum by the number of
examples in the global batch (an all-reduce of the local counts), and the
summed gradients are then exactly those of the global mean on one device.
Metric trackers are given the global value (`all_replicas_sum` of the shares),
so every replica reports the same number and any reduction of the logs is
right.

Random draws that shape a step (pool samples, dequantisation noise, erosion
operators, generator inputs) come from stateless generators keyed by
(seed, optimizer step, stream): the global batch's draw is made on every
replica and each takes its own rows (`replica_rows`), so a step sees the same
numbers on one device or on several, and a resumed run repeats them.

BatchNormalization layers of the classifier use the global batch's
statistics (`synchronize_batch_norm`), or a replica's shard would be
normalised by its own. Keras metric variables are summed across replicas on
every update, so a `Mean` tracker fed a replica's own per-example values
(accuracy hits, the mass) holds the exact global mean.

Keras 3.15's `fit` under MultiWorkerMirroredStrategy needs two workarounds,
both here: its symbolic build reduces a (x, y) batch, which the strategy
refuses (`skip_symbolic_build`: our models are built up front), and it
reduces logs along axis 0, which a scalar lacks (`step_logs`).

With one replica (the default strategy) every function here reduces to the
plain single-device expression.
"""

import json
import os
import warnings

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


class StrategyError(ValueError):
    """A strategy that cannot be set up here (unknown name, no TF_CONFIG, devices fixed)."""


def make_strategy(name="default", cpu_devices=0):
    """The `tf.distribute.Strategy` called `name`.

    Args:
        name: one of STRATEGIES.
        cpu_devices: with `mirrored` on a machine without GPUs, split the CPU
            into this many logical devices first (0: leave it as it is). Must
            be called before TensorFlow has initialised its devices, i.e.
            before the first op runs.

    Raises:
        StrategyError: an unknown name, `multi_worker` without TF_CONFIG, or
            `cpu_devices` once TensorFlow's devices are initialised.
    """
    if name not in STRATEGIES:
        raise StrategyError(f"strategy must be one of {STRATEGIES}. Received: strategy={name!r}")
    if cpu_devices:
        split_cpu(cpu_devices)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "multi_worker":
        tf_config_cluster()  # a clear error before TensorFlow's own
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    if len(devices) == 1:
        warnings.warn(
            f"--strategy mirrored found one device ({devices[0]}): training runs on it with one "
            "replica, as with --strategy default. Use a machine with several GPUs, or "
            "--cpu-devices N to split the CPU (for tests).", stacklevel=2)
    return tf.distribute.MirroredStrategy(devices)


def split_cpu(count):
    """Splits the first physical CPU into `count` logical devices (before TF initialises them)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    wanted = [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, wanted)
    except RuntimeError as error:
        raise StrategyError(
            f"Cannot split the CPU into {count} logical devices: TensorFlow has already "
            f"initialised its devices ({error}). Received: cpu_devices={count}. Split it before "
            "the first TensorFlow op runs (the CLI does so).") from error


def tf_config_cluster():
    """The parsed TF_CONFIG of a multi-worker run; a StrategyError when absent or unusable."""
    text = os.environ.get("TF_CONFIG", "")
    if not text:
        raise StrategyError(
            "--strategy multi_worker needs the TF_CONFIG environment variable, which lists the "
            "workers and this process's place among them, e.g. TF_CONFIG='{\"cluster\": "
            "{\"worker\": [\"host1:12345\", \"host2:12345\"]}, \"task\": {\"type\": \"worker\", "
            "\"index\": 0}}' (README, \"Several machines\"). Received: TF_CONFIG unset.")
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        task = config["task"]
        if task["type"] not in ("worker", "chief") or not workers:
            raise ValueError(f"task type {task['type']!r}")
    except (ValueError, KeyError, TypeError) as error:
        raise StrategyError(
            "TF_CONFIG must be JSON with cluster.worker (a list of host:port) and task.type / "
            f"task.index. Received: TF_CONFIG={text!r} ({error})") from error
    return config


def is_chief(strategy=None):
    """True in the process that writes the run folder: always, except on non-chief workers of a
    multi-worker run (the chief is task type `chief`, else worker 0, as Keras and TF do)."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None:  # a one-process "cluster"
        return True
    return task_type == "chief" or (task_type == "worker" and task_id == 0
                                    and "chief" not in resolver.cluster_spec().as_dict())


def describe(strategy=None):
    """{"strategy", "replicas", "workers"} of `strategy`, for run.json."""
    strategy = strategy or tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        name = "multi_worker"
    elif isinstance(strategy, tf.distribute.MirroredStrategy):
        name = "mirrored"
    else:
        name = "default"
    workers = 1
    resolver = getattr(strategy, "cluster_resolver", None)
    if name == "multi_worker" and resolver is not None:
        workers = max(len(resolver.cluster_spec().as_dict().get("worker", [])), 1)
    return {"strategy": name, "replicas": int(strategy.num_replicas_in_sync), "workers": workers}


def check_batch_size(batch_size, strategy=None):
    """Refuses a global batch that does not split evenly between the replicas.

    Even shards are what makes a replica's rows of a global random draw
    (`replica_rows`) the rows its images came with.
    """
    replicas = (strategy or tf.distribute.get_strategy()).num_replicas_in_sync
    if batch_size % replicas:
        from keras_tie.config import ConfigError

        raise ConfigError(
            f"batch_size is the global batch and must split evenly between the "
            f"{replicas} replicas. Received: batch_size={batch_size}. Use a multiple of "
            f"{replicas}.")


# -- inside train_step --------------------------------------------------------


def num_replicas():
    """Replicas in sync (1 without a strategy), as a Python int."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def all_replicas_sum(value):
    """The sum of `value` over the replicas (the value itself with one replica).

    Used on numbers that are not differentiated (counts, metric values).
    """
    context = tf.distribute.get_replica_context()
    if num_replicas() == 1 or context is None:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(value))


def global_mean(values):
    """This replica's share of the mean of `values` over the global batch.

    sum(local values) / (number of values on all replicas): summed over the
    replicas (as `apply_gradients` sums gradients) it is the global mean.
    With one replica it is `tf.reduce_mean(values)`.
    """
    values = tf.convert_to_tensor(values)
    if num_replicas() == 1:
        return tf.reduce_mean(values)
    count = all_replicas_sum(tf.cast(tf.size(values), values.dtype))
    return tf.reduce_sum(values) / count


def global_count(count, dtype=tf.float32):
    """The number of examples in the global batch, from this replica's `count`."""
    return all_replicas_sum(tf.cast(count, dtype))


def replica_rows(values):
    """This replica's contiguous rows of `values`, a tensor drawn for the global batch.

    Replica r of N gets rows [r * G // N, (r + 1) * G // N) of G rows; the
    distributed dataset gives replica r the r-th slice of each global batch
    the same way, so with an even split the rows line up with its images.
    """
    replicas = num_replicas()
    if replicas == 1:
        return values
    context = tf.distribute.get_replica_context()
    replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
    rows = tf.shape(values)[0]
    start = replica * rows // replicas
    end = (replica + 1) * rows // replicas
    return values[start:end]


def step_seed(seed, step, stream):
    """A stateless seed (shape [2], int64) from (run seed, optimizer step, stream number)."""
    return tf.stack([tf.cast(seed, tf.int64),
                     tf.cast(step, tf.int64) * 16 + tf.cast(stream, tf.int64)])


def synchronize_batch_norm(model):
    """Makes every BatchNormalization layer of `model` use the global batch's statistics.

    Under a strategy with several replicas each replica would otherwise
    normalise with the statistics of its own shard; `synchronized=True`
    (Keras, TensorFlow backend) all-reduces them, so a step computes what it
    computes on one device. Costs one small all-reduce per layer per step.
    No-op with one replica.
    """
    if num_replicas() == 1:
        return model
    import keras

    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
    return model


def train_as_worker(train, config, run_dir, resume, callbacks, strategy):
    """Runs `train` on a non-chief worker of a multi-worker run, into a temporary folder.

    Every worker runs the same code (the collectives of each step need all of
    them), but only the chief's run folder is kept: a worker writes its
    checkpoints and logs to a temporary folder, deleted afterwards. With
    `resume` the worker starts from a copy of the chief's run folder, which
    must be readable there (a shared filesystem).
    """
    import shutil
    import tempfile

    resolver = strategy.cluster_resolver
    scratch = tempfile.mkdtemp(prefix=f"keras_tie_{resolver.task_type}{resolver.task_id}_")
    try:
        if resume:
            if not os.path.isdir(run_dir):
                raise FileNotFoundError(
                    f"Cannot resume on worker {resolver.task_id}: {run_dir} is not readable "
                    "here. A multi-worker --resume needs the run folder on a filesystem every "
                    "worker sees.")
            shutil.copytree(run_dir, scratch, dirs_exist_ok=True)
        return train(config, scratch, resume, 0, callbacks, strategy)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def skip_symbolic_build(model, iterator=None, data_batch=None):
    """Whether `fit` may skip Keras' symbolic build of `model` (its networks and optimizers
    are built already).

    Keras 3 (`TensorFlowTrainer._maybe_symbolic_build`) reduces the first
    batch with `strategy.reduce("MEAN", (x, y))` before building; under
    MultiWorkerMirroredStrategy that reduce refuses a tuple batch. Our
    training models build everything up front, so there is nothing to build.
    """
    optimizers = [getattr(model, "optimizer", None), getattr(model, "generator_optimizer", None)]
    return model.built and all(o is None or o.built for o in optimizers)


def step_logs(metrics):
    """{name: result} of `metrics`, shaped for Keras' reduction of per-replica logs.

    Scalars, except in a multi-worker run: there Keras 3
    (`keras/src/backend/tensorflow/trainer.py`, `reduce_per_replica`) reduces
    each log with `strategy.reduce("MEAN", value, axis=0)`, which refuses a
    scalar, so each value goes as shape [1] and comes out a scalar.
    """
    results = {m.name: m.result() for m in metrics}
    strategy = tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
            strategy.extended._in_multi_worker_mode():
        results = {name: tf.reshape(value, [1]) for name, value in results.items()}
    return results
