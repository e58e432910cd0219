"""The run recipe of `method = "flow"`: a RealNVP with the approximate-mass penalty.

`keras_tie.training.runner` drives it like every method. The run folder has
the classifier runs' layout::

    run.json            the resolved config, method "flow", dataset, image
                        shape, class names, parameter count, history, test
                        metrics (test bits/dim, nll, mass)
    model.keras         the trained RealNVP (keras_tie.run_folder.load_model)
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

import keras
import numpy as np
import tensorflow as tf

from keras_tie.config import ConfigError
from keras_tie.methods.flow.mass_trace import MassTrace
from keras_tie.methods.flow.model import FlowModel
from keras_tie.methods.flow.realnvp import RealNVP
from keras_tie.run_folder import MODEL_FILE, run_path, save_model
from keras_tie.training.recipe import BaseRecipe, Plan

EVALUATION_BATCH_SIZE = 128


class Recipe(BaseRecipe):
    """Builds, saves and tests a flow run of `config` on `data`."""

    def __init__(self, config, data, run_dir, verbose="auto"):
        super().__init__(config, data, run_dir, verbose)
        self.flow = None
        self.trace_sets = None

    def record(self):
        return {"input": "float32 pixels in [0, 1], shape [batch, H, W, C]; the model returns "
                         "log p(x) in nats of x in [0, 1]^D (score at (255 x + 0.5) / 256)"}

    def build(self, resume=False):
        from keras_tie.data import load

        config, data = self.config, self.data
        flow_config = config.flow
        info = data.info
        try:
            self.flow = RealNVP(info.image_shape, flow_config.scales, flow_config.blocks,
                                flow_config.width, flow_config.logit_boundary)
        except ValueError as error:
            raise ConfigError(f"flow.scales does not fit {config.dataset}: {error}") from error
        if _traced(flow_config):
            self.trace_sets = _trace_sets(config, info, load)
        model = FlowModel(self.flow, flow_config.alpha, config.seed)
        model.compile(keras.optimizers.Adam(flow_config.learning_rate,
                                            clipnorm=flow_config.clipnorm or None))
        model.optimizer.build(self.flow.trainable_variables)
        validation_data = None if data.held_images is None else \
            tf.data.Dataset.from_tensor_slices(
                data.held_images.astype(np.float32) / 255.0).batch(EVALUATION_BATCH_SIZE)
        # After the epoch timer, so epoch_seconds counts the training steps only, not the
        # trace's scoring.
        untimed, restore = [], None
        if self.trace_sets:
            (id_name, id_images), (ood_name, ood_images) = self.trace_sets
            trace = MassTrace(self.flow, id_images, ood_images, id_name, ood_name, self.run_dir)
            untimed.append(trace)

            def restore(state):
                trace.continue_from(state.get("history", []))
        record = {"flow": {"parameters": int(self.flow.count_params()),
                           "alpha": flow_config.alpha, "scores": ["approximate_mass", "nll"],
                           "trace_ood": self.trace_sets[1][0] if self.trace_sets else None}}
        return Plan(model, {"flow": self.flow, "optimizer": model.optimizer, "rng": model.rng},
                    record=record, untimed=untimed, validation_data=validation_data,
                    restore=restore)

    def finish(self, plan):
        save_model(self.flow, run_path(self.run_dir, MODEL_FILE))
        return evaluate_flow_test(plan.model, self.config), {}


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
