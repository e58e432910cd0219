"""The SR-OOD score: the distance between an image and its repair (higher = more OOD).

    repair(x) = d(x, R(T*(x)))        d = perceptual (default) or l2

(003_f548187660c0ce3b.txt, Algorithm 2.) In-distribution images come back
close to themselves; OOD images come back as something else, in-distribution
looking, and so far from the input. `model` is a `RepairModel`, as
`keras-tie train --method repair` saves it in model.keras; it carries its
perception network and its test operator T*. Needs no labels and no fit.
"""

import weakref

import numpy as np
import tensorflow as tf

from keras_tie.detectors.detector import Detector


class RepairDistance(Detector):
    """The repair distance of a `RepairModel` as an OOD score.

    Args:
        model: a `RepairModel` (model.keras of a repair run).
        operator: the erosion T applied before the repair (an operator name;
            default the model's test operator T*, chosen when it was
            trained). An operator outside the model's training set is
            allowed (it is recorded); the network never learned to undo it.
        distance: `perceptual` (LPIPS-style, on the model's perception
            network) or `l2` (mean squared pixel difference: the paper's
            Table IV ablation). Default: perceptual when the model has a
            perception network, else l2.
        name: see `Detector`.

    Example:

    ```python
    model = keras_tie.run_folder.load_model("runs/cifar10_repair/model.keras")
    detector = get_detector("repair", model, distance="l2")
    scores = detector.score(svhn.images)                 # higher = more OOD
    ```
    """

    def __init__(self, model, operator=None, distance=None, name=None):
        super().__init__(name or "repair")
        if model is None or not callable(getattr(model, "repair_distance", None)):
            raise ValueError(
                "The repair score needs a repair model (the model.keras of `keras-tie train "
                "--method repair`), not a classifier or a flow. Received: "
                f"model={getattr(model, 'name', model)!r}")
        self.model = model
        self.operator = operator or model.test_operator
        self.distance = model.check_distance(distance)
        model.erode(np.zeros((1, *model.image_shape), np.float32), self.operator)  # bad name: now

    def score_batch(self, x):
        return repair_distance_function(self.model, self.operator, self.distance)(x).numpy()

    def get_config(self):
        config = {"operator": self.operator, "distance": self.distance,
                  "trained_operators": list(self.model.operators),
                  "test_operator": self.model.test_operator}
        if self.distance == "perceptual":
            config["layers"] = list(self.model.perceptual.layer_names)
        return config


_FUNCTIONS = weakref.WeakKeyDictionary()


def repair_distance_function(model, operator, distance):
    """x -> repair distance, traced once per (model, distance) for the operators of the
    model's set (the operator is a tensor argument), once per operator for the others."""
    per_model = _FUNCTIONS.setdefault(model, {})
    images = tf.TensorSpec([None, *model.image_shape], tf.float32)
    if operator in model.operators:
        key = ("in_set", distance)
        if key not in per_model:
            per_model[key] = tf.function(
                lambda x, index: model.repair_distance(x, index, distance),
                input_signature=[images, tf.TensorSpec([], tf.int32)])
        index = tf.constant(model.operators.index(operator), tf.int32)
        return lambda x: per_model[key](x, index)
    key = (operator, distance)
    if key not in per_model:
        per_model[key] = tf.function(lambda x: model.repair_distance(x, operator, distance),
                                     input_signature=[images])
    return per_model[key]


def repair_factory(model, garbage_index=None, **params):
    """The registry factory of `repair`; refuses a garbage class, which repair models lack."""
    if garbage_index is not None:
        raise ValueError("repair scores a repair model, which has no garbage class. Received: "
                         f"garbage_index={garbage_index}")
    return RepairDistance(model, **params)
