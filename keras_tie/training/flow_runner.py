"""Runs `method = "flow"`: a RealNVP with the approximate-mass penalty, into a run folder.

`keras_tie.training.runner.train` hands flow configs here once the config
(and, with --resume, the run.json it continues) is settled. The run folder
has the classifier runs' layout::

    run.json            the resolved config, method "flow", dataset, image
                        shape, class names, parameter count, history, test
                        metrics (test bits/dim, nll, mass)
    model.keras         the trained RealNVP (keras.saving.load_model, after
                        importing keras_tie.models.realnvp)
    history.csv         one row per epoch (Keras CSVLogger)
    mass_trace.png      the approximate mass of ID and OOD test images per
                        epoch (the paper's Figure 1; flow.trace_ood)
    logs/               TensorBoard scalars
    checkpoints/        resumable checkpoints: flow, optimizer, the
                        dequantisation noise generator (checkpoint.py)

Saving: the flow is written with `model.save` as a `.keras` file: `RealNVP`
and `CouplingNet` are registered serializable classes whose `get_config`
rebuilds the architecture, and the file carries the weights.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from keras_tie._io import write_json
from keras_tie.config import ConfigError
from keras_tie.models.realnvp import RealNVP
from keras_tie.training.callbacks import EpochTimer
from keras_tie.training.checkpoint import latest_checkpoint, resume_from
from keras_tie.training.flow_model import FlowModel
from keras_tie.training.mass_trace import MassTrace

RUN_FILE = "run.json"
MODEL_FILE = "model.keras"
EVALUATION_BATCH_SIZE = 128


def train_flow(config, run_dir, resume=False, verbose="auto", callbacks=()):
    """Trains the flow of `config` into `run_dir` (created by the caller).

    Args:
        config: a `Config` with method "flow".
        run_dir: the run folder.
        resume: continue from the folder's last checkpoint.
        verbose: passed to `fit`.
        callbacks: extra Keras callbacks.

    Returns:
        A `keras_tie.training.runner.RunResult` (tau is None).
    """
    from keras_tie.data import load
    from keras_tie.training.runner import (
        RunResult,
        _plain,
        _save_model,
        epoch_batches,
        load_training_data,
        run_callbacks,
        run_record,
    )

    flow_config = config.flow
    train_set, images, labels, held_images, _ = load_training_data(config)
    info = train_set.info
    validation_data = None if held_images is None else tf.data.Dataset.from_tensor_slices(
        held_images.astype(np.float32) / 255.0).batch(EVALUATION_BATCH_SIZE)
    try:
        flow = RealNVP(info.image_shape, flow_config.scales, flow_config.blocks,
                       flow_config.width, flow_config.logit_boundary)
    except ValueError as error:
        raise ConfigError(f"flow.scales does not fit {config.dataset}: {error}") from error
    trace_sets = _trace_sets(config, info, load) if _traced(flow_config) else None

    checkpoint = latest_checkpoint(run_dir) if resume else None
    model = FlowModel(flow, flow_config.alpha, config.seed)
    model.compile(keras.optimizers.Adam(flow_config.learning_rate,
                                        clipnorm=flow_config.clipnorm or None))
    model.optimizer.build(flow.trainable_variables)
    trackables = {"flow": flow, "optimizer": model.optimizer, "rng": model.rng}
    steps_per_epoch = len(images) // config.batch_size
    dataset = epoch_batches(images, labels, config.batch_size, config.seed,
                            checkpoint[1]["epoch"] if checkpoint else 0, config.epochs,
                            config.augment)

    run_file = os.path.join(run_dir, RUN_FILE)
    run_info = run_record(
        config, info, len(images), steps_per_epoch,
        input="float32 pixels in [0, 1], shape [batch, H, W, C]; the model returns log p(x) in "
              "nats of x in [0, 1]^D (score at (255 x + 0.5) / 256)",
        flow={"parameters": int(flow.count_params()), "alpha": flow_config.alpha,
              "scores": ["approximate_mass", "nll"],
              "trace_ood": trace_sets[1][0] if trace_sets else None})
    write_json(run_file, run_info)

    initial_epoch, history, _ = resume_from(checkpoint, trackables)

    def checkpoint_state(epoch, logs):
        history.append(dict(_plain(logs), epoch=epoch))
        return {"history": history}

    # The timer comes first, so epoch_seconds counts the training steps only,
    # not the trace's scoring.
    fit_callbacks = [EpochTimer()]
    if trace_sets:
        (id_name, id_images), (ood_name, ood_images) = trace_sets
        fit_callbacks.append(MassTrace(flow, id_images, ood_images, id_name, ood_name, run_dir,
                                       history))
    fit_callbacks += run_callbacks(run_dir, trackables, checkpoint_state, config, resume,
                                   callbacks)
    if initial_epoch < config.epochs:
        model.fit(dataset, epochs=config.epochs, initial_epoch=initial_epoch,
                  steps_per_epoch=steps_per_epoch, callbacks=fit_callbacks, verbose=verbose,
                  shuffle=False, validation_data=validation_data)

    _save_model(flow, os.path.join(run_dir, MODEL_FILE))
    test_metrics = evaluate_flow_test(model, config)
    run_info.update(status="complete", epochs_completed=len(history), history=history,
                    test_metrics=test_metrics)
    write_json(run_file, run_info)
    return RunResult(run_dir, config, history, None, test_metrics)


def evaluate_flow_test(model, config):
    """Test-split loss, nll (nats per image), bits/dim and mean mass, on dequantised images."""
    from keras_tie.data import DatasetError, load

    try:
        test_set = load(config.dataset, split="test", data_dir=config.data_dir or None,
                        limit=config.limit or None)
    except DatasetError as error:
        return {"skipped": str(error)}
    images = tf.data.Dataset.from_tensor_slices(
        test_set.images.astype(np.float32) / 255.0).batch(EVALUATION_BATCH_SIZE)
    # Reseeded, so the test metrics do not depend on how far training drew the noise.
    model.rng.reset_from_seed(config.seed + 1)
    results = model.evaluate(images, verbose=0, return_dict=True)
    return {"test_images": len(test_set), **{k: float(v) for k, v in results.items()}}


def _traced(flow_config):
    return bool(flow_config.trace_ood) and flow_config.trace_images > 0


def _trace_sets(config, info, load):
    """((ID name, ID test images), (OOD name, OOD images)) for `MassTrace`."""
    count = config.flow.trace_images
    ood_name = config.flow.trace_ood
    if ood_name == config.dataset:
        raise ConfigError(
            f"flow.trace_ood is the training set itself. Received: flow.trace_ood={ood_name!r} "
            f"with dataset={config.dataset!r}. Choose another set, e.g. "
            f"--set flow.trace_ood={'fashion_mnist' if config.dataset == 'mnist' else 'mnist'}")
    data_dir = config.data_dir or None
    id_test = load(config.dataset, split="test", data_dir=data_dir, limit=count)
    from keras_tie.data import registry

    if registry.resolve(ood_name).kind == registry.SYNTHETIC:
        ood = load(ood_name, split="test", like=info.image_shape, count=count, seed=config.seed)
    else:
        ood = load(ood_name, split="test", data_dir=data_dir, limit=count,
                   target_shape=info.image_shape)
    return (config.dataset, id_test.images), (ood_name, ood.images)
