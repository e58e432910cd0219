import numpy as np
import pytest
import tensorflow as tf

from keras_tie.losses import (balanced_class_weights, inversion_loss, mean_pairwise_cosine,
                              weighted_cross_entropy)


def test_inversion_loss_terms_on_known_inputs():
    target = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    logits = np.log(np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]], np.float32))
    features = np.array([[1.0, 0.0], [1.0, 1.0]], np.float32)
    total, kl, ce, cos = (t.numpy() for t in inversion_loss(target, logits, features,
                                                             alpha=0.1, beta=1.0, gamma=10.0))
    p = np.exp(logits)
    expected_kl = np.mean(np.sum(target * np.log(target / p), axis=1))
    expected_ce = np.mean([-np.log(0.5), -np.log(0.6)])
    expected_cos = 1 / np.sqrt(2)  # the one pair, counted both ways, divided by N(N-1) = 2
    assert kl == pytest.approx(expected_kl, rel=1e-5)
    assert ce == pytest.approx(expected_ce, rel=1e-5)
    assert cos == pytest.approx(expected_cos, rel=1e-5)
    assert total == pytest.approx(0.1 * expected_kl + expected_ce + 10 * expected_cos, rel=1e-5)


def test_kl_is_zero_when_the_classifier_matches_the_condition():
    target = np.array([[0.6, 0.3, 0.1]], np.float32)
    _, kl, _, _ = inversion_loss(target, np.log(target), np.ones((1, 4), np.float32))
    assert kl.numpy() == pytest.approx(0.0, abs=1e-6)


def test_pairwise_cosine_extremes():
    same = np.ones((5, 3), np.float32)
    orthogonal = np.eye(4, dtype=np.float32)
    assert mean_pairwise_cosine(same).numpy() == pytest.approx(1.0, abs=1e-6)
    assert mean_pairwise_cosine(orthogonal).numpy() == pytest.approx(0.0, abs=1e-6)


def test_balanced_class_weights():
    weights = balanced_class_weights([100, 300, 0, 600])
    # total 1000 over 3 present classes: 1000 / (3 * count)
    np.testing.assert_allclose(weights, [1000 / 300, 1000 / 900, 0.0, 1000 / 1800], rtol=1e-6)
    # every present class contributes the same total weight
    counts = np.array([100, 300, 600])
    contributions = counts * weights[[0, 1, 3]]
    np.testing.assert_allclose(contributions, contributions[0], rtol=1e-6)


def test_weighted_cross_entropy_uses_the_label_weight():
    labels = tf.constant([0, 1])
    logits = tf.math.log(tf.constant([[0.5, 0.5], [0.25, 0.75]]))
    loss = weighted_cross_entropy(labels, logits, tf.constant([2.0, 0.0])).numpy()
    assert loss == pytest.approx(2.0 * -np.log(0.5) / 2, rel=1e-6)


def test_class_diversity_counts_only_pairs_of_the_same_target():
    features = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 1.0]], np.float32)
    groups = tf.constant([0, 0, 1, 2])
    # one same-group pair (rows 0 and 1), counted both ways
    assert mean_pairwise_cosine(features, groups).numpy() == pytest.approx(1 / np.sqrt(2),
                                                                          rel=1e-5)
    assert mean_pairwise_cosine(features[2:], tf.constant([0, 1])).numpy() == 0.0
    target = np.array([[0.8, 0.2], [0.7, 0.3], [0.1, 0.9], [0.4, 0.6]], np.float32)
    _, _, _, cos = inversion_loss(target, np.zeros((4, 2), np.float32), features,
                                  diversity="class")
    # targets 0, 0, 1, 1: pairs (0, 1) and (2, 3)
    assert cos.numpy() == pytest.approx((1 / np.sqrt(2) + 1.0) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="diversity"):
        inversion_loss(target, np.zeros((4, 2), np.float32), features, diversity="pairs")
