"""TIEModel: the (n+1)-class classifier and its inverting generator, trained by fit().

One `train_step` does what Algorithm 1 of the TIE paper
(001_b369f55403bc771c.txt) does within an epoch:

1. Classifier step: the batch of in-distribution images is joined by
   `garbage_per_batch` images drawn from the garbage pool, labelled n, and the
   classifier takes an Adam step on the class-weighted cross-entropy.
2. Generator step (after every `generator_interval`-th classifier step):
   z ~ N(0, I), v ~ N(0, I) in R^(n+1), y~ = softmax(v); the generator takes
   an Adam step on the inversion loss of the classifier's output on G(z, y~),
   the classifier's weights held fixed (in inference mode by default; with
   `inversion_mode="training"` its BatchNormalization uses, and its moving
   statistics absorb, the generated batch's statistics).

The paper runs the generator after the classifier's epoch; interleaving the two
inside the epoch is our choice: the generator keeps up with the classifier
step by step, the cost per epoch is the same, and `fit()` drives everything.
The epoch-level inversion, threshold and exclusion happen in the
`InversionExclusion` callback.

The generator step is run by the `GeneratorSteps` callback that `fit` adds,
not by a `tf.cond` inside `train_step`: under tf.distribute an optimizer
update is a synchronisation point, and TensorFlow refuses one inside control
flow of the replica function. Under a strategy with several replicas
(keras_tie/training/distribute.py) the classifier step is split between the
replicas, each taking its share of the global batch and of the pool draw,
with the loss a share of the global-batch mean and synchronised
BatchNormalization; the generator step, one small batch, is computed whole
on every replica from the same seed, its loss divided by the number of
replicas, so the summed gradients are those of one device.

With `generator=None` the model is the paper's "No TIE" baseline: an
(n+1)-class classifier whose garbage class is the static noise pool.
"""

import keras
import tensorflow as tf

from keras_tie.config import INVERSION_MODES
from keras_tie.losses import inversion_loss, total_variation, weighted_cross_entropies
from keras_tie.models import feature_model
from keras_tie.training import distribute

POOL_STREAM, GENERATOR_STREAM = 0, 1  # stream numbers of the stateless per-step draws


class TIEModel(keras.Model):
    """Trains a classifier with a garbage class, and optionally its inverting generator.

    Args:
        classifier: functional model, pixels in [0, 1] -> n + 1 logits, with a
            `features` layer.
        generator: functional model [z, y~] -> pixels, or None (static garbage).
        pool: the `GarbagePool` the garbage samples are drawn from.
        garbage_per_batch: pool samples added to each classifier batch.
        generator_batch_size: batch of the generator step.
        generator_interval: one generator step every this many train steps.
        alpha, beta: inversion loss weights (gamma is the `gamma` variable,
            set per epoch by the callback).
        diversity: pairs of the cosine-diversity term (`batch` or `class`).
        inversion_mode: the classifier's mode in the generator step:
            `inference` (moving BatchNorm statistics, no dropout) or
            `training` (batch statistics, moving statistics updated by the
            generated batch, dropout on; `TIEConfig.inversion_mode`).
        smoothness: weight of the total-variation prior added to the
            inversion loss (`TIEConfig.smoothness`; 0 = the paper's loss);
            logged as `inv_tv` when on.
        seed: seed of the per-step draws (pool samples, z, v; stateless,
            keyed by the optimizer step) and of the in-graph random generator
            of the epoch-level inversion.

    The model itself is not saved as a whole: `classifier` and `generator`
    are, as plain functional models.
    """

    def __init__(self, classifier, pool, generator=None, garbage_per_batch=12,
                 generator_batch_size=128, generator_interval=1, alpha=0.1, beta=1.0,
                 seed=0, diversity="batch", inversion_mode="inference", smoothness=0.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier
        self.generator = generator
        self._pool = pool
        self.num_outputs = int(classifier.outputs[0].shape[-1])
        self.garbage_index = self.num_outputs - 1
        self.garbage_per_batch = int(garbage_per_batch)
        self.generator_batch_size = int(generator_batch_size)
        self.generator_interval = max(int(generator_interval), 1)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.diversity = diversity
        if inversion_mode not in INVERSION_MODES:
            raise ValueError(f"inversion_mode must be one of {INVERSION_MODES}. "
                             f"Received: inversion_mode={inversion_mode!r}")
        self.inversion_mode = inversion_mode
        self.smoothness = float(smoothness)
        self.latent_dim = int(generator.inputs[0].shape[-1]) if generator is not None else 0
        self._features = feature_model(classifier)
        self.seed = int(seed)
        self.rng = tf.random.Generator.from_seed(seed)
        distribute.synchronize_batch_norm(classifier)  # no-op on one replica
        self._generator_function = None
        self.class_weights = tf.Variable(tf.ones([self.num_outputs]), trainable=False,
                                         name="class_weights")
        self.gamma = tf.Variable(10.0, trainable=False, name="gamma")
        self.generator_optimizer = None

        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        self.garbage_tracker = keras.metrics.Mean(name="garbage_accuracy")
        self.inv_tracker = keras.metrics.Mean(name="inv_loss")
        self.kl_tracker = keras.metrics.Mean(name="inv_kl")
        self.ce_tracker = keras.metrics.Mean(name="inv_ce")
        self.cos_tracker = keras.metrics.Mean(name="inv_cos")
        self.tv_tracker = keras.metrics.Mean(name="inv_tv")
        self.built = True  # the networks are built (see distribute.skip_symbolic_build)

    def compile(self, optimizer, generator_optimizer=None, **kwargs):
        """Two optimizers: `optimizer` for the classifier, `generator_optimizer` for G."""
        super().compile(optimizer=optimizer, **kwargs)
        self.generator_optimizer = generator_optimizer
        if self.generator is not None:
            if generator_optimizer is None:
                raise ValueError("A TIEModel with a generator needs a generator_optimizer.")
            # Built up front: its variables must exist before the conditional
            # generator step is traced.
            generator_optimizer.build(self.generator.trainable_variables)
        self.optimizer.build(self.classifier.trainable_variables)

    @property
    def metrics(self):
        trackers = [self.loss_tracker, self.accuracy_tracker, self.garbage_tracker]
        if self.generator is not None:
            trackers += [self.inv_tracker, self.kl_tracker, self.ce_tracker, self.cos_tracker]
            if self.smoothness > 0:
                trackers.append(self.tv_tracker)
        return trackers

    def call(self, inputs, training=False):
        return self.classifier(inputs, training=training)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, with the interleaved generator steps (`GeneratorSteps`) added."""
        if self.generator is not None:
            kwargs["callbacks"] = [GeneratorSteps(), *(kwargs.get("callbacks") or [])]
        return super().fit(*args, **kwargs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if not distribute.skip_symbolic_build(self):  # see distribute.skip_symbolic_build
            super()._maybe_symbolic_build(iterator, data_batch)

    def train_step(self, data):
        images, labels = data[0], tf.cast(data[1], tf.int32)
        batch = tf.shape(images)[0]
        # The global batch's garbage draw; this replica takes its rows of it.
        seed = distribute.step_seed(self.seed, self.optimizer.iterations, POOL_STREAM)
        garbage = distribute.replica_rows(self._pool.sample(self.garbage_per_batch, seed))
        x = tf.concat([images, garbage], axis=0)
        y = tf.concat([labels, tf.fill([tf.shape(garbage)[0]], self.garbage_index)], axis=0)
        with tf.GradientTape() as tape:
            logits = self.classifier(x, training=True)
            loss = distribute.global_mean(weighted_cross_entropies(y, logits,
                                                                   self.class_weights))
        variables = self.classifier.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        hits = tf.cast(tf.equal(predicted, y), tf.float32)
        self.loss_tracker.update_state(distribute.all_replicas_sum(loss))
        self.accuracy_tracker.update_state(hits[:batch])
        self.garbage_tracker.update_state(hits[batch:])
        return distribute.step_logs(self.metrics)

    def run_generator_step(self):
        """One generator step on every replica (compiled once); returns the inversion metrics."""
        if self._generator_function is None:
            strategy = self.distribute_strategy

            def step():
                strategy.run(self.generator_step)
                trackers = [self.inv_tracker, self.kl_tracker, self.ce_tracker,
                            self.cos_tracker] + ([self.tv_tracker] if self.smoothness > 0 else [])
                return {m.name: m.result() for m in trackers}

            self._generator_function = tf.function(step)
        return self._generator_function()

    def generator_step(self):
        """One Adam step of the generator on the inversion loss; returns the loss.

        z and v are drawn from a stateless seed keyed by the generator's step,
        so every replica draws the same batch; each differentiates its
        1 / replicas share of the loss, and the summed gradients are those of
        the whole batch on one device.
        """
        seed = distribute.step_seed(self.seed, self.generator_optimizer.iterations,
                                    GENERATOR_STREAM)
        z, y_soft = self.sample_conditions(self.generator_batch_size, seed=seed)
        with tf.GradientTape() as tape:
            generated = self.generator([z, y_soft], training=True)
            features, logits = self._features(generated,
                                              training=self.inversion_mode == "training")
            total, kl, ce, cos = inversion_loss(y_soft, logits, features, self.alpha,
                                                self.beta, self.gamma, self.diversity)
            if self.smoothness > 0:  # tie.smoothness: a total-variation prior on the images
                tv = tf.reduce_mean(total_variation(generated))
                total = total + self.smoothness * tv
            share = total / distribute.num_replicas()
        variables = self.generator.trainable_variables
        self.generator_optimizer.apply_gradients(zip(tape.gradient(share, variables),
                                                     variables))
        self.inv_tracker.update_state(total)
        self.kl_tracker.update_state(kl)
        self.ce_tracker.update_state(ce)
        self.cos_tracker.update_state(cos)
        if self.smoothness > 0:
            self.tv_tracker.update_state(tv)
        return total

    def sample_conditions(self, count, target=None, seed=None):
        """z ~ N(0, I) and y~ = softmax(v), v ~ N(0, I) (TIE paper, section 3).

        With `target` (a class index or an int tensor of shape [count]) the
        largest component of v is swapped into the target's position, so
        argmax y~ = target while y~ keeps the shape of a random softmax.
        z and v come from `self.rng`, or, given a stateless `seed`, from it.
        """
        if seed is None:
            z = self.rng.normal([count, self.latent_dim])
            v = self.rng.normal([count, self.num_outputs])
        else:
            z = tf.random.stateless_normal([count, self.latent_dim], seed)
            v = tf.random.stateless_normal([count, self.num_outputs], seed + [0, 8])
        if target is not None:
            v = swap_max_to(v, target)
        return z, tf.nn.softmax(v, axis=-1)

    def test_step(self, data):
        images, labels = data[0], tf.cast(data[1], tf.int32)
        logits = self.classifier(images, training=False)
        loss = distribute.global_mean(weighted_cross_entropies(labels, logits,
                                                               self.class_weights))
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        self.loss_tracker.update_state(distribute.all_replicas_sum(loss))
        self.accuracy_tracker.update_state(tf.cast(tf.equal(predicted, labels), tf.float32))
        return distribute.step_logs([self.loss_tracker, self.accuracy_tracker])


def swap_max_to(v, target):
    """Swaps, in each row of v, the largest entry with the entry at `target`."""
    count, width = tf.shape(v)[0], tf.shape(v)[1]
    target = tf.broadcast_to(tf.cast(target, tf.int32), [count])
    top = tf.argmax(v, axis=-1, output_type=tf.int32)
    rows = tf.range(count)
    top_value = tf.gather_nd(v, tf.stack([rows, top], axis=1))
    target_value = tf.gather_nd(v, tf.stack([rows, target], axis=1))
    columns = tf.range(width)[None, :]
    v = tf.where(columns == target[:, None], top_value[:, None], v)
    return tf.where((columns == top[:, None]) & (top[:, None] != target[:, None]),
                    target_value[:, None], v)


class GeneratorSteps(keras.callbacks.Callback):
    """Runs the generator step after every `generator_interval`-th classifier step of `fit`.

    Added by `TIEModel.fit`. The step's metrics (`inv_loss`, `inv_kl`, ...)
    go into the batch logs. The classifier's step count is read once when
    training starts (it continues on resume) and counted in Python after that,
    so deciding costs no device-to-host read per batch.
    """

    def on_train_begin(self, logs=None):
        self._step = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        model = self.model
        self._step += 1
        if model.generator is not None and self._step % model.generator_interval == 0:
            results = model.run_generator_step()
            if logs is not None:
                logs.update(results)
