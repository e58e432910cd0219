"""The run recipe of methods `tie`, `static` and `plain` (keras_tie.training.runner drives it).

- `tie`: the paper's Training-Inversion-Exclusion (001_b369f55403bc771c.txt):
  an (n+1)-class `TIEModel` with its conditional generator, the garbage pool
  started with Gaussian noise, and `InversionExclusion` after every epoch;
- `static`: the same (n+1)-class model whose garbage class stays the
  initial noise (the paper's "No TIE" ablation; no generator);
- `plain`: the ordinary n-class classifier of the same backbone and recipe.

Besides the files of every run, a tie run saves generator.keras and the
inverted samples of every epoch (images/inverted_epoch_XXX.png).
"""

import math

import keras
import numpy as np
import tensorflow as tf

from keras_tie.inference import predict_probabilities, two_level_decision
from keras_tie.methods.tie.exclusion import InversionExclusion
from keras_tie.methods.tie.model import TIEModel
from keras_tie.methods.tie.pool import GarbagePool
from keras_tie.models import build_classifier, build_generator, resolve_backbone
from keras_tie.run_folder import GENERATOR_FILE, MODEL_FILE, run_path, save_model
from keras_tie.training import distribute
from keras_tie.training.optimizers import classifier_optimizer
from keras_tie.training.recipe import BaseRecipe, Plan

VALIDATION_BATCH_SIZE = 512


class Recipe(BaseRecipe):
    """Builds, saves and tests a tie, static or plain run of `config` on `data`."""

    def __init__(self, config, data, run_dir, verbose="auto"):
        super().__init__(config, data, run_dir, verbose)
        self.num_classes = data.info.num_classes
        self.with_garbage = config.method != "plain"
        self.num_outputs = self.num_classes + 1 if self.with_garbage else self.num_classes
        self.mean, self.variance = data.normalization()
        self.classifier = None
        self.exclusion = None

    def record(self):
        return classifier_record(self.config, self.data, self.num_outputs, self.mean,
                                 self.variance, self.with_garbage)

    def build(self, resume=False):
        config, data = self.config, self.data
        self.classifier = build_config_classifier(config, data.info, self.num_outputs,
                                                  self.mean, self.variance)
        distribute.synchronize_batch_norm(self.classifier)  # global-batch statistics
        validation_data = classifier_validation_data(data)
        optimizer = classifier_optimizer(config, data.steps_per_epoch)
        if not self.with_garbage:
            model = self.classifier
            model.compile(optimizer,
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          metrics=["accuracy"])
            model.optimizer.build(model.trainable_variables)
            return Plan(model, {"classifier": model, "optimizer": model.optimizer},
                        validation_data=validation_data)

        tie = config.tie
        pool = GarbagePool(data.info.image_shape, tie.pool_capacity, tie.pool_retirement,
                           "float16" if tie.initial_noise == "unclipped" else "uint8")
        pool.fill_with_noise(tie.initial_pool_size, self.mean, np.sqrt(self.variance),
                             np.random.default_rng([config.seed, 0, 0]))
        cvae_callbacks = []
        if tie.cvae_run:  # CVAE outliers seed (and may top up) the pool: docs/cvae.md
            from keras_tie.methods.cvae.tie_pool import tie_pool_callbacks

            cvae_callbacks = tie_pool_callbacks(config, pool, data.images, data.labels,
                                                data.info.name)
        generator = None
        if config.method == "tie":
            generator = build_generator(
                data.info.image_shape, self.num_outputs, config.model.latent_dim,
                config.model.generator_width, config.model.bn_momentum,
                output_mean=self.mean if config.model.generator_init == "data_mean" else None,
                upsampling=config.model.generator_upsampling)
        garbage_per_batch = tie.garbage_per_batch or max(config.batch_size // self.num_classes, 1)
        interval = max(data.steps_per_epoch // max(tie.generator_steps_per_epoch, 1), 1)
        model = TIEModel(self.classifier, pool, generator, garbage_per_batch,
                         tie.generator_batch_size, interval, tie.alpha, tie.beta, config.seed,
                         tie.diversity, tie.inversion_mode, tie.smoothness)
        model.compile(optimizer, keras.optimizers.Adam(config.optimizer.generator_lr)
                      if generator is not None else None)
        self.exclusion = InversionExclusion.from_config(
            model, config, data.images, np.bincount(data.labels, minlength=self.num_classes),
            data.steps_per_epoch, self.run_dir)
        trackables = {"classifier": self.classifier, "optimizer": model.optimizer,
                      "rng": model.rng, "class_weights": model.class_weights,
                      "gamma": model.gamma}
        if generator is not None:
            trackables.update(generator=generator, generator_optimizer=model.generator_optimizer)

        def restore(state):
            self.exclusion.tau = state.get("tau")

        # The inversion and exclusion (and the CVAE top-up after them) count in the epoch time.
        return Plan(model, trackables, timed=[self.exclusion, *cvae_callbacks],
                    validation_data=validation_data, pool=pool,
                    state=lambda: {"tau": self.exclusion.tau}, restore=restore)

    def finish(self, plan):
        tau = self.exclusion.tau if self.exclusion is not None else None
        save_model(self.classifier, run_path(self.run_dir, MODEL_FILE))
        if self.config.method == "tie":
            save_model(plan.model.generator, run_path(self.run_dir, GENERATOR_FILE))
        test_metrics = classifier_test_metrics(self.classifier, self.config, self.data.info,
                                               tau, self.with_garbage)
        return test_metrics, {"tau": tau,
                              "pool_size": len(plan.pool) if plan.pool is not None else None}


def build_config_classifier(config, info, num_outputs, mean, variance):
    """The classifier of `config.model` for `info`'s images, standardising by (mean, variance)."""
    m = config.model
    return build_classifier(info.image_shape, num_outputs, m.backbone, m.width, m.dense_units,
                            mean, variance, m.bn_momentum, m.dropout, precision=m.precision,
                            pooling=m.feature_pooling)


def classifier_record(config, data, num_outputs, mean, variance, with_garbage=True):
    """The run.json fields of a classifier run (tie, static, plain, cvae)."""
    num_classes = data.info.num_classes
    return {"num_classes": num_classes, "num_outputs": num_outputs,
            "garbage_index": num_classes if with_garbage else None,
            "normalization": {"mean": mean.tolist(), "variance": variance.tolist()},
            "backbone": resolve_backbone(config.model.backbone, data.info.image_shape)}


def classifier_validation_data(data):
    """(pixels in [0, 1], label) batches of the held-out images, or None without them."""
    if data.held_images is None:
        return None
    return tf.data.Dataset.from_tensor_slices(
        (data.held_images.astype(np.float32) / 255.0, data.held_labels)
    ).batch(VALIDATION_BATCH_SIZE)


def classifier_test_metrics(classifier, config, info, tau, with_garbage):
    """Test-split accuracy and, with a garbage class, what the rejection rules cost on ID data."""
    from keras_tie.data import DatasetError, load

    try:
        test_set = load(config.dataset, split="test", data_dir=config.data_dir or None,
                        limit=config.limit or None)
    except DatasetError as error:
        return {"skipped": str(error)}
    probabilities = predict_probabilities(classifier, test_set.images)
    predicted = probabilities.argmax(axis=-1)
    metrics = {"test_images": len(test_set),
               "accuracy": float(np.mean(predicted == test_set.labels))}
    if with_garbage:
        metrics["sent_to_garbage"] = float(np.mean(predicted == info.num_classes))
        if tau is not None:
            decided, _ = two_level_decision(probabilities, tau)
            metrics["rejected_two_level"] = float(np.mean(decided == -1))
            metrics["accuracy_accepted"] = float(
                np.mean(decided[decided >= 0] == test_set.labels[decided >= 0])) \
                if np.any(decided >= 0) else math.nan
    return metrics

