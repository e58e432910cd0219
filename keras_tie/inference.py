"""Batched prediction and the two-level decision rule of TIE.

Two-level inference (001_b369f55403bc771c.txt, Algorithm 1, lines 24-32): for
p = f(x) over n + 1 classes and u = UE(p): argmax p = n (garbage) -> OOD
(level 1); else u > tau_T -> OOD (level 2); else the class argmax p. OOD is
reported as label -1.
"""

import weakref

import numpy as np
import tensorflow as tf

from keras_tie.uncertainty import uncertainty

OOD_LABEL = -1


def predict_logits(model, images, batch_size=1024):
    """Logits of `model` on `images` (uint8 pixels or float in [0, 1]), as a numpy array."""
    forward = _compiled_forward(model)
    outputs = []
    for start in range(0, len(images), batch_size):
        chunk = np.asarray(images[start: start + batch_size])
        chunk = chunk.astype(np.float32) / 255.0 if chunk.dtype == np.uint8 \
            else chunk.astype(np.float32)
        outputs.append(forward(tf.constant(chunk)).numpy())
    if not outputs:
        return np.zeros((0, int(model.outputs[0].shape[-1])), np.float32)
    return np.concatenate(outputs)


def predict_probabilities(model, images, batch_size=1024):
    """Softmax probabilities of `model` on `images`."""
    return tf.nn.softmax(predict_logits(model, images, batch_size), axis=-1).numpy()


def two_level_decision(probabilities, tau, garbage_index=None):
    """Labels under the two-level rule: the class, or -1 when rejected.

    Args:
        probabilities: [N, n + 1] softmax outputs of a TIE model.
        tau: tau_T, the UE threshold of the last epoch.
        garbage_index: index of the garbage class (default: the last).

    Returns:
        (labels, level) where level is 0 (accepted), 1 (garbage class) or
        2 (rejected by the UE threshold).
    """
    p = tf.convert_to_tensor(probabilities, tf.float32)
    garbage_index = int(p.shape[-1]) - 1 if garbage_index is None else garbage_index
    labels, level = two_level_rule(p, uncertainty(p), tau, garbage_index)
    return labels.numpy(), level.numpy()


def two_level_rule(probabilities, score, threshold, garbage_index):
    """The two-level rule as tensor ops, with any level-2 score; the exported graph calls it too.

    Args:
        probabilities: [N, K] softmax outputs.
        score: [N] level-2 score, higher = more OOD (UE of `probabilities` in
            the paper's rule).
        threshold: level 2 rejects `score > threshold` (tau_T for UE).
        garbage_index: index of the garbage class, or None for a model without
            one (then only level 2 applies).

    Returns:
        int32 tensors (labels, level): labels are the class or -1; level is
        0 (accepted), 1 (garbage class) or 2 (score above the threshold).
    """
    predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    level2 = score > threshold
    if garbage_index is None:
        return tf.where(level2, OOD_LABEL, predicted), tf.where(level2, 2, 0)
    level1 = tf.equal(predicted, garbage_index)
    level2 = tf.logical_and(tf.logical_not(level1), level2)
    labels = tf.where(level1 | level2, OOD_LABEL, predicted)
    level = tf.where(level1, 1, tf.where(level2, 2, 0))
    return labels, level


_FORWARDS = weakref.WeakKeyDictionary()


def _compiled_forward(model):
    """One traced inference function per model, reused across calls."""
    if model not in _FORWARDS:
        _FORWARDS[model] = tf.function(lambda x: model(x, training=False),
                                       reduce_retracing=True)
    return _FORWARDS[model]
