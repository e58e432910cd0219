"""Uncertainty of a softmax output: UE of the TIE paper, and the usual summaries.

UE (001_b369f55403bc771c.txt, section 4.4) measures how far a probability
vector p over K classes is from one-hot, relative to the uniform vector::

    UE(p) = 1 - sum_i (p_i - 1/K)^2 / sum_i (delta_ik - 1/K)^2,  k = argmax p

The denominator is (1 - 1/K)^2 + (K - 1)/K^2 = (K - 1)/K for every k, and
sum_i (p_i - 1/K)^2 = sum_i p_i^2 - 1/K, so UE(p) = K/(K-1) * (1 - sum_i p_i^2):
0 on a one-hot vector, 1 on the uniform one. This module writes that once; the
exclusion step, the two-level rule, the detectors and the export all call it.
"""

import tensorflow as tf


def uncertainty(probabilities):
    """UE of the TIE paper for each row of `probabilities` (shape [..., K]).

    Args:
        probabilities: softmax outputs; the last axis is the class axis. K is
            its length (n + 1 for a TIE model's full output).

    Returns:
        A float tensor of shape [...] with values in [0, 1].
    """
    p = tf.convert_to_tensor(probabilities)
    if not p.dtype.is_floating:
        p = tf.cast(p, tf.float32)
    k = tf.cast(tf.shape(p)[-1], p.dtype)
    ue = k / (k - 1.0) * (1.0 - tf.reduce_sum(tf.square(p), axis=-1))
    # Rounding can leave 1 - sum p^2 a hair outside [0, (K-1)/K].
    return tf.clip_by_value(ue, 0.0, 1.0)


def entropy(probabilities):
    """Shannon entropy (nats) of each row."""
    p = tf.convert_to_tensor(probabilities)
    return -tf.reduce_sum(tf.math.multiply_no_nan(tf.math.log(p), p), axis=-1)


def confidence(probabilities):
    """Largest probability of each row (the MSP)."""
    return tf.reduce_max(probabilities, axis=-1)


def margin(probabilities):
    """Difference between the two largest probabilities of each row."""
    top2 = tf.math.top_k(probabilities, k=2).values
    return top2[..., 0] - top2[..., 1]


def drop_garbage(probabilities):
    """Level 2 of the TIE rule: drop the last (garbage) output and renormalise."""
    p = tf.convert_to_tensor(probabilities)[..., :-1]
    return p / tf.maximum(tf.reduce_sum(p, axis=-1, keepdims=True), 1e-12)
