"""ODIN: temperature scaling plus input pre-processing (Liang et al., ICLR 2018).

With S(x; T) = softmax(f(x) / T) and y = argmax S, ODIN perturbs the input
against the gradient of the loss -log S_y, which raises the max softmax, and
more for in-distribution images than for OOD ones::

    x' = x - epsilon * sign(-grad_x log S_y(x; T))
    score(x) = -max_i S_i(x'; T)          (negated: higher = more OOD)

The perturbed pixels are not clipped to [0, 1], as in the paper.
"""

import numpy as np
import tensorflow as tf

from keras_tie.detectors.detector import ClassifierDetector, batch_signature
from keras_tie.detectors.softmax import ID_OUTPUTS, check_outputs, msp_score

# Liang et al. 2018, section 4 ("we set T = 1000") and their released code's
# CIFAR-10 noise magnitude 0.0014. That code divides the gradient sign by the
# normalisation std before perturbing the standardised input, so epsilon is
# already in [0, 1] pixel units (0.0014 * 255 = 0.36 grey levels); keras-tie
# classifiers standardise inside the model, so the same number applies to the
# [0, 1] pixels they take.
ODIN_TEMPERATURE = 1000.0
ODIN_EPSILON = 0.0014


class ODIN(ClassifierDetector):
    """ODIN score of a classifier, in either variant (see `softmax.py`).

    Args:
        model: classifier taking float pixels in [0, 1] and returning logits.
        temperature: T (default 1000, Liang et al. 2018).
        epsilon: perturbation size in [0, 1] pixel units (default 0.0014;
            0 gives temperature scaling alone).
        outputs: `n` (the garbage logit dropped, softmax over the n ID
            outputs: TIE level 2) or `n+1` (all outputs; needs a garbage class).
        garbage_index: index of the garbage class (the last output), or None.
        name: see `Detector`.

    Reference:
        Liang, Li, Srikant. Enhancing the reliability of out-of-distribution
        image detection in neural networks. ICLR 2018.
    """

    def __init__(self, model, temperature=ODIN_TEMPERATURE, epsilon=ODIN_EPSILON,
                 outputs=ID_OUTPUTS, garbage_index=None, name=None):
        super().__init__(model, garbage_index, name or "odin")
        check_outputs(outputs, self.garbage_index, "odin")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0. Received: temperature={temperature}")
        if not epsilon >= 0:
            raise ValueError(f"epsilon must be >= 0. Received: epsilon={epsilon}")
        self.temperature = float(temperature)
        self.epsilon = float(epsilon)
        self.outputs = outputs
        self._perturbed_logits = tf.function(self._perturbed_logits_fn,
                                             input_signature=[batch_signature(model)])

    @property
    def from_outputs(self):
        return self.epsilon == 0.0

    def _selected_logits(self, x):
        logits = self.model(x, training=False)
        if self.outputs == ID_OUTPUTS and self.garbage_index is not None:
            logits = logits[:, :self.garbage_index]
        return logits

    def _perturbed_logits_fn(self, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            tempered = self._selected_logits(x) / self.temperature
            log_max_softmax = tf.reduce_max(tf.nn.log_softmax(tempered, axis=-1), axis=-1)
            # Each image's log S_y depends on that image alone (inference mode), so
            # the gradient of the batch sum is every image's own gradient.
            total = tf.reduce_sum(log_max_softmax)
        gradient = tape.gradient(total, x)
        perturbed = x - self.epsilon * tf.sign(-gradient)
        return self._selected_logits(perturbed)

    def perturb_logits(self, x):
        """Logits (of the variant's outputs) of the perturbed batch `x` (float pixels)."""
        return self._perturbed_logits(tf.convert_to_tensor(x, tf.float32)).numpy()

    def score_batch(self, x):
        return msp_score(np.asarray(self.perturb_logits(x), np.float64) / self.temperature)

    def score_outputs(self, features, logits):
        if self.epsilon != 0.0:
            raise ValueError("ODIN with epsilon > 0 perturbs the input, so it cannot score "
                             "precomputed logits; call score(images).")
        if self.outputs == ID_OUTPUTS and self.garbage_index is not None:
            logits = logits[:, :self.garbage_index]
        return msp_score(np.asarray(logits, np.float64) / self.temperature)

    def get_config(self):
        return {"temperature": self.temperature, "epsilon": self.epsilon,
                "outputs": self.outputs}
