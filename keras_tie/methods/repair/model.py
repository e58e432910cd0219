"""RepairModel: SR-OOD's repair network R_theta, trained with `fit()`, and its OOD score.

Training (SR-OOD paper, 003_f548187660c0ce3b.txt, Algorithm 1 and eq. 1-3),
on a batch of in-distribution pixels x in [0, 1]:

    u_i ~ U{1, ..., m}                      one erosion operator per image
    r_i = R_theta(T_{u_i}(x_i))             the repair
    loss = lambda_1 * mean_i l2(r_i, x_i) + lambda_2 * mean_i perceptual(r_i, x_i)

with lambda_1 = 1, lambda_2 = 0.8 (section IV-C). Test (Algorithm 2): one
fixed operator T*, and the OOD score S(x) = d(x, R_theta(T*(x))), d the
perceptual distance (or L2, the Table IV ablation); higher = more OOD.

The saved model (model.keras) is self-contained: the repair network, the
frozen perception network (the layers it reads), the operator set and T*.
"""

import keras
import tensorflow as tf

from keras_tie.methods.repair.distance import DISTANCES, l2_distance
from keras_tie.methods.repair.erosion import ErosionSet
from keras_tie.training import distribute

PAPER_LAMBDA_L2 = 1.0  # 003_f548187660c0ce3b.txt, section IV-C: lambda_1 = 1
PAPER_LAMBDA_PERCEPTUAL = 0.8  # ... and lambda_2 = 0.8


@keras.saving.register_keras_serializable(package="keras_tie")
class RepairModel(keras.Model):
    """Erodes, repairs, and scores by the distance between an image and its repair.

    `train_step` draws one operator per image from `operators`, repairs the
    eroded batch and takes one optimizer step on
    `lambda_l2 * L2 + lambda_perceptual * perceptual` (the perception
    network is frozen). `test_step` reports the same losses with the
    operators assigned in turn (image i gets operator i mod m), so a
    validation loss is deterministic. Metrics: `loss`, `l2`, `perceptual`.
    The training operators are drawn from a stateless seed keyed by the
    optimizer step, for the global batch; under a tf.distribute strategy each
    replica takes its rows and its loss is its share of the global-batch mean
    (keras_tie/training/distribute.py), so the summed gradients are those of
    one device.

    `call(x)` returns the repair R(T*(x)) with the test operator;
    `repair_distance(x)` the OOD score.

    Args:
        network: the repair network (eroded pixels -> pixels in [0, 1];
            `keras_tie.methods.repair.unet.build_repair_unet`).
        operators: the erosion operator names T (`keras_tie.methods.repair.operators`).
        perceptual: a `PerceptualDistance`, or None: then the loss and the
            score use L2 only (`lambda_perceptual` must be 0).
        lambda_l2, lambda_perceptual: loss weights (paper: 1 and 0.8).
        test_operator: T*, the operator of `call` and of the score; default
            the first of `operators`, until `keras_tie.methods.repair.selection`
            chooses one.
        seed: seed of the operator draws (stateless, keyed by the optimizer
            step).

    Example:

    ```python
    model = RepairModel(build_repair_unet((32, 32, 3)), ["down2", "down4"],
                        PerceptualDistance.from_network(classifier))
    model.compile(keras.optimizers.Adam(1e-3))
    model.fit(images, epochs=1, batch_size=64)          # float pixels in [0, 1]
    scores = model.repair_distance(x, "down4")          # higher = more OOD
    ```

    Reference:
        Sun, Zhang, Zhang, Ren, Zhu, Zhang, Cui, Li. SR-OOD: Out-of-distribution
        detection via sample repairing.
    """

    def __init__(self, network, operators, perceptual=None, lambda_l2=PAPER_LAMBDA_L2,
                 lambda_perceptual=PAPER_LAMBDA_PERCEPTUAL, test_operator=None, seed=0,
                 **kwargs):
        super().__init__(**kwargs)
        if lambda_l2 < 0 or lambda_perceptual < 0 or lambda_l2 + lambda_perceptual == 0:
            raise ValueError(f"The loss weights are >= 0 and not both 0. Received: "
                             f"lambda_l2={lambda_l2}, lambda_perceptual={lambda_perceptual}")
        if perceptual is None and lambda_perceptual > 0:
            raise ValueError(
                "lambda_perceptual > 0 needs a perception network. Received: perceptual=None, "
                f"lambda_perceptual={lambda_perceptual}. Pass perceptual= or set it to 0.")
        self.network = network
        self.image_shape = tuple(int(d) for d in network.inputs[0].shape[1:])
        self.erosions = ErosionSet(list(operators), self.image_shape)
        self.operators = tuple(self.erosions.names)
        if perceptual is not None and perceptual.image_shape != self.image_shape:
            raise ValueError(
                f"The perception network takes {perceptual.image_shape} images and the repair "
                f"network {self.image_shape}. Use a network trained on the same dataset.")
        self.perceptual = perceptual
        self.lambda_l2 = float(lambda_l2)
        self.lambda_perceptual = float(lambda_perceptual)
        self.seed = int(seed)
        self.test_operator = test_operator or self.operators[0]
        self._erosion(self.test_operator)  # a name outside the grammar fails now
        self.rng = tf.random.Generator.from_seed(self.seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.l2_tracker = keras.metrics.Mean(name="l2")
        self.perceptual_tracker = keras.metrics.Mean(name="perceptual")
        self.built = True  # both networks are built; nothing to build on load

    @property
    def metrics(self):
        return [self.loss_tracker, self.l2_tracker, self.perceptual_tracker]

    @property
    def default_distance(self):
        """`perceptual` when there is a perception network, else `l2`."""
        return "perceptual" if self.perceptual is not None else "l2"

    # -- inference ------------------------------------------------------------

    def call(self, inputs, training=False):
        return self.network(self.erode(inputs), training=training)

    def erode(self, x, operator=None):
        """T(x) for one operator applied to the whole batch.

        Args:
            x: float pixels in [0, 1].
            operator: an operator name (default the test operator), or an
                int32 scalar tensor indexing `operators`, so that one traced
                function serves every operator of the set.
        """
        if tf.is_tensor(operator):
            x = tf.convert_to_tensor(x, tf.float32)
            return self.erosions.apply(x, tf.fill([tf.shape(x)[0]], operator))
        erosions, index = self._erosion(operator or self.test_operator)
        return erosions.apply(x, index)

    def repair(self, x, operator=None):
        """R(T(x)): the repair of the eroded batch."""
        return self.network(self.erode(x, operator), training=False)

    def repair_distance(self, x, operator=None, distance=None):
        """The OOD score d(x, R(T(x))), `[B]`; higher = more OOD.

        Args:
            x: float pixels in [0, 1].
            operator: T (default the test operator T*; see `erode`).
            distance: `perceptual` or `l2` (default `default_distance`).
        """
        distance = self.check_distance(distance)
        x = tf.convert_to_tensor(x, tf.float32)
        repaired = self.repair(x, operator)
        if distance == "l2":
            return l2_distance(x, repaired)
        return self.perceptual(x, repaired)

    def repair_distances(self, x, operator=None):
        """{"l2": [B], "per_layer": [B, L] (with a perception network)} of one repair."""
        x = tf.convert_to_tensor(x, tf.float32)
        repaired = self.repair(x, operator)
        out = {"l2": l2_distance(x, repaired)}
        if self.perceptual is not None:
            out["per_layer"] = self.perceptual.per_layer(x, repaired)
        return out

    def check_distance(self, distance):
        """The distance to use: `distance`, or the default; refuses what cannot be computed."""
        distance = distance or self.default_distance
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}. Received: "
                             f"distance={distance!r}")
        if distance == "perceptual" and self.perceptual is None:
            raise ValueError(
                "This repair model has no perception network, so only distance='l2' is "
                "available. Train with repair.perceptual = a classifier run folder (or a .keras "
                "file) to score by the perceptual distance. Received: distance='perceptual'")
        return distance

    # -- training -------------------------------------------------------------

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if not distribute.skip_symbolic_build(self):  # see distribute.skip_symbolic_build
            super()._maybe_symbolic_build(iterator, data_batch)

    def train_step(self, data):
        x = tf.convert_to_tensor(_images(data), tf.float32)
        seed = distribute.step_seed(self.seed, self.optimizer.iterations, 0)
        operators = self.erosions.sample(seed, distribute.global_count(tf.shape(x)[0], tf.int32))
        eroded = self.erosions.apply(x, distribute.replica_rows(operators))
        variables = self.network.trainable_variables
        with tf.GradientTape() as tape:
            repaired = self.network(eroded, training=True)
            loss, l2, perceptual = self._repair_losses(x, repaired)
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return self._update_metrics(loss, l2, perceptual)

    def test_step(self, data):
        x = tf.convert_to_tensor(_images(data), tf.float32)
        index = tf.math.floormod(tf.range(tf.shape(x)[0]), len(self.erosions))
        repaired = self.network(self.erosions.apply(x, index), training=False)
        return self._update_metrics(*self._repair_losses(x, repaired))

    def _repair_losses(self, x, repaired):
        """(loss, l2, perceptual): this replica's shares of the global-batch means."""
        l2 = distribute.global_mean(l2_distance(x, repaired))
        perceptual = (distribute.global_mean(self.perceptual(x, repaired))
                      if self.perceptual is not None else tf.zeros([]))
        return self.lambda_l2 * l2 + self.lambda_perceptual * perceptual, l2, perceptual

    def _update_metrics(self, loss, l2, perceptual):
        self.loss_tracker.update_state(distribute.all_replicas_sum(loss))
        self.l2_tracker.update_state(distribute.all_replicas_sum(l2))
        self.perceptual_tracker.update_state(distribute.all_replicas_sum(perceptual))
        return distribute.step_logs(self.metrics)

    def _erosion(self, operator):
        """(ErosionSet, index) of an operator, in the training set or a one-off set."""
        if operator in self.operators:
            return self.erosions, self.operators.index(operator)
        cache = self.__dict__.setdefault("_one_off_erosions", {})
        if operator not in cache:
            cache[operator] = ErosionSet([operator], self.image_shape)
        return cache[operator], 0

    # -- serialisation --------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update(
            network=keras.saving.serialize_keras_object(self.network),
            operators=list(self.operators),
            perceptual=None if self.perceptual is None
            else keras.saving.serialize_keras_object(self.perceptual),
            lambda_l2=self.lambda_l2, lambda_perceptual=self.lambda_perceptual,
            test_operator=self.test_operator, seed=self.seed)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        if config.get("perceptual") is not None:
            config["perceptual"] = keras.saving.deserialize_keras_object(config["perceptual"])
        return cls(**config)


def _images(data):
    """The images of a batch that may be `x`, `(x,)` or `(x, y[, w])`."""
    return data[0] if isinstance(data, (tuple, list)) else data
