"""Scores computed from a classifier's logits: UE, MSP, energy, entropy, garbage probability.

Each score is written once, as TensorFlow ops on logits `[N, K]`
(`softmax_score`, `garbage_probability`) returning `[N]` in which
**higher = more OOD**:

    ue(l)        = UE(softmax(l))                 (TIE paper, section 4.4)
    msp(l)       = -max_i softmax(l)_i            (Hendrycks & Gimpel, 2017)
    energy(l; T) = -T * logsumexp(l / T)          (Liu et al., 2020; T = 1)
    entropy(l)   = -sum_i p_i log p_i, p = softmax(l)
    garbage(l)   = softmax(l)_n                   (probability of the garbage class)

The detectors (the `*_score` functions and the classes below) call them on
float64 logits: a confident in-distribution image has a max softmax within
1e-8 of 1, which float32 would round to exactly 1 and so tie with every other
confident image. The exported SavedModel (`keras_tie.export.scores`) calls the
same functions on its float32 graph tensors, so evaluation and deployment
score alike.

Two variants (TIE paper, section 6.3) for a model with a garbage class:
`outputs="n"` drops the garbage logit first, so the softmax is renormalised
over the n in-distribution outputs (level 2 of the TIE protocol; the plain
names `ue`, `msp`, ... in the registry); `outputs="n+1"` uses all n + 1
outputs (level 1; the names `ue@n+1`, `msp@n+1`, ...). Dropping the logit and
taking the softmax of the rest equals `uncertainty.drop_garbage` of the full
softmax. A plain classifier has only the `n` variant.
"""

import numpy as np
import tensorflow as tf

from keras_tie.detectors.detector import ClassifierDetector
from keras_tie.uncertainty import confidence, entropy, uncertainty

ID_OUTPUTS = "n"
ALL_OUTPUTS = "n+1"
OUTPUTS = (ID_OUTPUTS, ALL_OUTPUTS)

# The softmax-family scores by name, each with a one-line description; `{over}`
# is where the variant's outputs are named (`describe`).
SOFTMAX_SCORES = {
    "ue": "UE of the softmax {over} (TIE paper, section 4.4)",
    "msp": "negative maximum softmax probability {over} (Hendrycks & Gimpel, 2017)",
    "energy": "free energy -logsumexp(logits) {over} (Liu et al., 2020; T = 1)",
    "entropy": "Shannon entropy (nats) of the softmax {over}",
}
_OVER = {ID_OUTPUTS: "over the n in-distribution outputs, garbage logit dropped",
         ALL_OUTPUTS: "over all outputs"}


def softmax_score(score, logits, outputs=ID_OUTPUTS, garbage_index=None, temperature=1.0,
                  probabilities=None):
    """One softmax-family score of `logits` as TensorFlow ops; higher = more OOD.

    Args:
        score: `ue`, `msp`, `energy` or `entropy`.
        logits: `[N, K]` tensor or array; the result has its dtype.
        outputs: `n` drops the garbage logit (when there is one) and
            renormalises over the rest; `n+1` scores all K outputs.
        garbage_index: index of the garbage class (the last output), or None.
        temperature: energy only: T of -T * logsumexp(l / T).
        probabilities: `softmax(logits)` when the caller has it already (the
            exported graph does); used when the variant scores all outputs.

    Returns:
        A tensor `[N]`.
    """
    if score not in SOFTMAX_SCORES:
        raise ValueError(f"score must be one of {sorted(SOFTMAX_SCORES)}. "
                         f"Received: score={score!r}")
    if outputs not in OUTPUTS:
        raise ValueError(f"outputs must be one of {OUTPUTS}. Received: outputs={outputs!r}")
    drops_garbage = outputs == ID_OUTPUTS and garbage_index is not None
    logits = select_outputs(tf.convert_to_tensor(logits), outputs, garbage_index)
    if score == "energy":
        return -temperature * tf.reduce_logsumexp(logits / temperature, axis=-1)
    if probabilities is None or drops_garbage:
        probabilities = tf.nn.softmax(logits, axis=-1)
    if score == "ue":
        return uncertainty(probabilities)
    if score == "msp":
        return -confidence(probabilities)
    return entropy(probabilities)


def garbage_probability(logits, garbage_index, probabilities=None):
    """Softmax probability of the garbage class over all outputs, as TensorFlow ops."""
    if probabilities is None:
        probabilities = tf.nn.softmax(logits, axis=-1)
    return probabilities[..., garbage_index]


def describe(score, outputs):
    """One line naming the score and the outputs it is taken over."""
    return SOFTMAX_SCORES[score].format(over=_OVER[outputs])


def _float64(logits):
    return tf.constant(np.asarray(logits, np.float64))


def ue_score(logits):
    """TIE uncertainty UE of softmax(logits): 0 for one-hot, 1 for uniform."""
    return softmax_score("ue", _float64(logits)).numpy()


def msp_score(logits):
    """Negative maximum softmax probability."""
    return softmax_score("msp", _float64(logits)).numpy()


def energy_score(logits, temperature=1.0):
    """Free energy -T * logsumexp(logits / T)."""
    return softmax_score("energy", _float64(logits), temperature=temperature).numpy()


def entropy_score(logits):
    """Shannon entropy (nats) of softmax(logits)."""
    return softmax_score("entropy", _float64(logits)).numpy()


def garbage_score(logits, garbage_index):
    """Softmax probability of the garbage class over all outputs."""
    return garbage_probability(_float64(logits), garbage_index).numpy()


def select_outputs(logits, outputs, garbage_index):
    """The logits a variant scores: without the garbage logit (`n`) or all of them (`n+1`)."""
    if outputs == ALL_OUTPUTS or garbage_index is None:
        return logits
    return logits[..., :garbage_index]  # the garbage class is the last output


def check_outputs(outputs, garbage_index, score):
    """Refuses unknown variants, and `n+1` on a model without a garbage class."""
    if outputs not in OUTPUTS:
        raise ValueError(f"outputs must be one of {OUTPUTS}. Received: outputs={outputs!r}")
    if outputs == ALL_OUTPUTS and garbage_index is None:
        raise ValueError(
            f"The {score}@n+1 variant scores all n+1 outputs of a model with a garbage class, "
            f"but this model has none (garbage_index=None). Use {score!r} (the n outputs), or "
            "pass garbage_index= for a TIE or static model.")


class SoftmaxDetector(ClassifierDetector):
    """UE, MSP, energy or entropy of a classifier's softmax, in either variant.

    Args:
        model: classifier returning logits.
        score: `ue`, `msp`, `energy` or `entropy`.
        outputs: `n` (drop the garbage logit and renormalise: TIE level 2) or
            `n+1` (all outputs: TIE level 1; needs a garbage class).
        garbage_index: index of the garbage class (the last output), or None.
        temperature: energy only: T of -T * logsumexp(l / T) (default 1, as in
            Liu et al., 2020).
        name: see `Detector`.

    Example:

    ```python
    detector = SoftmaxDetector(model, "msp", outputs="n", garbage_index=10)
    scores = detector.score(test_images)        # higher = more OOD
    ```
    """

    def __init__(self, model, score, outputs=ID_OUTPUTS, garbage_index=None, temperature=1.0,
                 name=None):
        super().__init__(model, garbage_index, name or score)
        if score not in SOFTMAX_SCORES:
            raise ValueError(f"score must be one of {sorted(SOFTMAX_SCORES)}. "
                             f"Received: score={score!r}")
        check_outputs(outputs, self.garbage_index, score)
        if score != "energy" and temperature != 1.0:
            raise ValueError(f"temperature applies to the energy score only. Received: "
                             f"score={score!r}, temperature={temperature}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0. Received: temperature={temperature}")
        self.score_name = score
        self.outputs = outputs
        self.temperature = float(temperature)

    def score_outputs(self, features, logits):
        return softmax_score(self.score_name, _float64(logits), self.outputs,
                             self.garbage_index, self.temperature).numpy()

    def get_config(self):
        config = {"score": self.score_name, "outputs": self.outputs}
        if self.score_name == "energy":
            config["temperature"] = self.temperature
        return config


class GarbageDetector(ClassifierDetector):
    """Probability of the garbage class: TIE's level-1 score (needs a garbage class).

    Args:
        model: classifier with n + 1 outputs, the garbage class last.
        garbage_index: its index (n); None is refused.
        name: see `Detector`.
    """

    def __init__(self, model, garbage_index=None, name=None):
        super().__init__(model, garbage_index, name or "garbage")
        if self.garbage_index is None:
            raise ValueError(
                "The garbage score needs a model with a garbage class (method tie or static). "
                "This one has none: pass garbage_index= (run.json's garbage_index) for an "
                "(n+1)-output model, or use a softmax score such as 'msp' for a plain model. "
                "Received: garbage_index=None")

    def score_outputs(self, features, logits):
        return garbage_score(logits, self.garbage_index)

    def get_config(self):
        return {"outputs": ALL_OUTPUTS}
