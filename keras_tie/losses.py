"""Losses of TIE training: the inversion loss and class-weighted cross-entropy.

The inversion loss (001_b369f55403bc771c.txt, section 3) trains the generator
so that the classifier's output on a generated image matches the conditioning
vector y~ = softmax(v)::

    L_inv = alpha * KL(y~ || f(x^)) + beta * CE(argmax y~, f(x^)) + gamma * L_cos

- KL is computed between probability vectors: y~ (already a softmax) against
  the classifier's log-softmax; nothing is softmaxed twice.
- CE takes the hard target argmax(y~), the class the sample is "intended to be
  classified as"; with the soft target it would equal KL up to the constant
  entropy of y~, and the two terms would be one.
- L_cos is the mean pairwise cosine similarity of the classifier's
  penultimate features over the N(N-1) ordered pairs i != j (`diversity=
  "batch"`, the paper's term), or over the pairs whose target classes
  argmax(y~) agree (`diversity="class"`, our option: it asks for variety
  within a class, and leaves the separation between classes to the CE term,
  see docs/tie.md). The extracted
  paper text writes the summand as (1 - cos); minimising that would pull the
  features together, the opposite of the "feature-level diversity" the text
  says the term enforces, so we minimise the similarity itself.
"""

import tensorflow as tf


def inversion_loss(target_probabilities, logits, features, alpha=0.1, beta=1.0, gamma=10.0,
                   diversity="batch"):
    """The inversion loss and its three terms (each a scalar mean over the batch).

    Args:
        target_probabilities: y~, shape [N, K], rows summing to 1.
        logits: the classifier's logits on the generated images, [N, K].
        features: the classifier's penultimate features, [N, D].
        alpha, beta, gamma: term weights (paper: 0.1, 1, 10 rising to 100).
        diversity: `batch` (all pairs) or `class` (pairs with the same target).

    Returns:
        (total, kl, ce, cosine).
    """
    target = tf.convert_to_tensor(target_probabilities)
    log_p = tf.nn.log_softmax(logits, axis=-1)
    log_target = tf.math.log(tf.maximum(target, 1e-12))
    kl = tf.reduce_mean(tf.reduce_sum(target * (log_target - log_p), axis=-1))
    hard = tf.argmax(target, axis=-1)
    ce = tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=hard, logits=logits))
    if diversity == "class":
        cosine = mean_pairwise_cosine(features, groups=hard)
    elif diversity == "batch":
        cosine = mean_pairwise_cosine(features)
    else:
        raise ValueError(f"diversity must be 'batch' or 'class'. Received: {diversity!r}")
    total = alpha * kl + beta * ce + gamma * cosine
    return total, kl, ce, cosine


def total_variation(images):
    """Mean absolute difference between neighbouring pixels (rows and columns), per image.

    The anisotropic total variation of Mahendran and Vedaldi's inversion prior,
    divided by the number of differences, so it does not grow with the image
    size: 0 for a flat image, at most 2 for pixels in [0, 1].

    Args:
        images: [B, H, W, C] float tensor.

    Returns:
        [B] float tensor.
    """
    images = tf.convert_to_tensor(images)
    rows = tf.reduce_mean(tf.abs(images[:, 1:] - images[:, :-1]), axis=[1, 2, 3])
    columns = tf.reduce_mean(tf.abs(images[:, :, 1:] - images[:, :, :-1]), axis=[1, 2, 3])
    return rows + columns


def mean_pairwise_cosine(features, groups=None):
    """Mean cosine similarity over ordered pairs i != j of rows of `features`.

    With `groups` (an int vector, one entry per row) only the pairs of rows in
    the same group count; 0 when no such pair exists.
    """
    h = tf.math.l2_normalize(tf.reshape(features, [tf.shape(features)[0], -1]), axis=-1)
    similarity = tf.matmul(h, h, transpose_b=True)
    count = tf.shape(h)[0]
    pairs = tf.logical_not(tf.eye(count, dtype=tf.bool))
    if groups is not None:
        pairs &= tf.equal(groups[:, None], groups[None, :])
    pairs = tf.cast(pairs, h.dtype)
    return tf.reduce_sum(similarity * pairs) / tf.maximum(tf.reduce_sum(pairs), 1.0)


def weighted_cross_entropy(labels, logits, class_weights):
    """Mean over the batch of class_weights[y] * CE(y, logits) (Keras' class_weight rule)."""
    return tf.reduce_mean(weighted_cross_entropies(labels, logits, class_weights))


def weighted_cross_entropies(labels, logits, class_weights):
    """class_weights[y] * CE(y, logits) per example, `[B]` (the terms of `weighted_cross_entropy`,
    for a mean taken over a global batch split between replicas)."""
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.gather(class_weights, labels) * ce


def balanced_class_weights(counts):
    """w_c = total / (K * count_c): every class contributes equally to the loss.

    Classes with no samples get weight 0. This is scikit-learn's "balanced"
    rule, applied to the class counts of what the classifier sees in an epoch.
    """
    import numpy as np

    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)
