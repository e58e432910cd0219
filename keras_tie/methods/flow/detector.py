"""Scores of a normalizing flow: the approximate mass and the negative log-likelihood.

Higher = more OOD for both:

    approximate_mass(x) = || d log p(x) / dx ||      (Grathwohl et al., 2020;
                                                      Chali et al., CVPRW 2023)
    nll(x)              = -log p(x) + D log 256       (nats per image)

The approximate-mass paper (004_f7d5548531a0fef9.txt, section 2) expects OOD
inputs to have a larger mass than ID inputs; a flow trained with its penalty
(`FlowModel`, alpha > 0) keeps that ordering. Both are computed at the centre
of each pixel's dequantisation bin, `(255 x + 1/2) / 256`, with no noise, so
a score is deterministic (`keras_tie.methods.flow.approximate_mass.bin_midpoint`).

`model` is a flow: a Keras model `x -> log p(x)` with an `image_shape`
attribute (keras-tie's `RealNVP`, as `keras-tie train --method flow` saves
it). The mass needs the gradient with respect to the input, so it can live
in a SavedModel but not in a TFLite model (docs/export.md).
"""

import numpy as np

from keras_tie.methods.flow.approximate_mass import score_function
from keras_tie.detectors.detector import Detector

FLOW_SCORES = ("approximate_mass", "nll")


class FlowDetector(Detector):
    """The approximate mass or the negative log-likelihood of a flow as an OOD score.

    Args:
        model: the flow (`RealNVP`, pixels in [0, 1] -> log p(x)).
        score: `approximate_mass` or `nll`.
        name: see `Detector`.

    Example:

    ```python
    flow = keras_tie.run_folder.load_model("runs/fashion_mnist_flow/model.keras")
    detector = get_detector("approximate_mass", flow)
    scores = detector.score(mnist.images)   # higher = more OOD
    ```
    """

    def __init__(self, model, score="approximate_mass", name=None):
        super().__init__(name or score)
        if score not in FLOW_SCORES:
            raise ValueError(f"score must be one of {FLOW_SCORES}. Received: score={score!r}")
        if model is None or not hasattr(model, "image_shape") or not callable(model):
            raise ValueError(
                f"The {score} score needs a flow: a Keras model x -> log p(x) with an "
                "image_shape attribute, such as the model.keras of `keras-tie train --method "
                f"flow`. Received: model={getattr(model, 'name', model)!r}")
        self.model = model
        self.score_name = score

    def score_batch(self, x):
        # The nll needs no gradient: a forward pass only.
        scores = score_function(self.model, with_mass=self.score_name == "approximate_mass")(x)
        return np.asarray(scores[self.score_name])

    def get_config(self):
        return {"score": self.score_name, "evaluated_at": "bin midpoint (255 x + 0.5) / 256"}


def flow_factory(score):
    """The registry factory of a flow score; refuses a garbage class, which flows do not have."""

    def build(model, garbage_index=None, **params):
        if garbage_index is not None:
            raise ValueError(f"{score} scores a flow, which has no garbage class. Received: "
                             f"garbage_index={garbage_index}")
        return FlowDetector(model, score, **params)

    return build
