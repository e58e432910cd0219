"""Detectors against hand-computed values on tiny logits and tiny Keras models."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_tie.detectors import (
    ClassGaussians,
    Detector,
    Mahalanobis,
    ODIN,
    detector_names,
    energy_score,
    entropy_score,
    garbage_probability,
    garbage_score,
    get_detector,
    msp_score,
    register_detector,
    softmax_score,
    ue_score,
)
from keras_tie.detectors.registry import _FACTORIES
from keras_tie.models import build_classifier
from keras_tie.uncertainty import drop_garbage

E2 = math.e ** 2


def identity_model(width, outputs=None, kernel=None, bias=None):
    """Input [B, 1, 1, width] -> features = the pixels -> logits = pixels @ kernel + bias.

    With the default identity kernel the logits are the input itself, so a test
    feeds logits (or features) in directly as "pixels".
    """
    outputs = outputs or width
    inputs = keras.Input((1, 1, width))
    features = keras.layers.Activation("linear", name="features")(
        keras.layers.Flatten()(inputs))
    dense = keras.layers.Dense(outputs, name="logits")
    logits = dense(features)
    kernel = np.eye(width, outputs, dtype=np.float32) if kernel is None else kernel
    dense.set_weights([np.asarray(kernel, np.float32),
                       np.zeros(outputs, np.float32) if bias is None else bias])
    return keras.Model(inputs, logits)


def as_pixels(rows):
    rows = np.asarray(rows, np.float32)
    return rows.reshape(len(rows), 1, 1, rows.shape[1])


# ---------------------------------------------------------------- softmax scores

def test_softmax_scores_hand_computed():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    p_top = E2 / (E2 + 2)  # softmax(2, 0, 0)[0]
    p_low = 1 / (E2 + 2)
    np.testing.assert_allclose(msp_score(logits), [-p_top, -1 / 3], rtol=1e-12)
    np.testing.assert_allclose(energy_score(logits), [-math.log(E2 + 2), -math.log(3)],
                               rtol=1e-12)
    # T = 2: -2 * logsumexp(1, 0, 0) = -2 log(e + 2)
    assert energy_score(logits[:1], temperature=2.0)[0] == pytest.approx(
        -2 * math.log(math.e + 2), rel=1e-12)
    # UE = K/(K-1) * (1 - sum p^2), K = 3
    expected_ue = 1.5 * (1 - p_top ** 2 - 2 * p_low ** 2)
    np.testing.assert_allclose(ue_score(logits), [expected_ue, 1.0], rtol=1e-12)
    expected_entropy = -(p_top * math.log(p_top) + 2 * p_low * math.log(p_low))
    np.testing.assert_allclose(entropy_score(logits), [expected_entropy, math.log(3)],
                               rtol=1e-12)
    # garbage logit log 2 next to two zeros: 2 / (1 + 1 + 2)
    assert garbage_score(np.array([[0.0, 0.0, math.log(2)]]), 2)[0] == pytest.approx(0.5)


def test_higher_score_means_more_ood_for_every_softmax_score():
    confident, uniform = [[8.0, 0.0, 0.0]], [[0.0, 0.0, 0.0]]
    for score in (msp_score, energy_score, ue_score, entropy_score):
        assert score(np.array(uniform))[0] > score(np.array(confident))[0], score.__name__


def test_msp_tells_apart_confident_images_float32_would_tie():
    # max softmax 1 - 9.4e-14 and 1 - 1.4e-11: both round to exactly 1.0 in float32.
    scores = msp_score(np.array([[30.0, 0.0], [25.0, 0.0]], np.float32))
    assert scores[0] < scores[1] < -0.999


def test_detector_on_a_model_equals_the_pure_functions():
    logits = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], np.float32)
    model = identity_model(3)
    for name, function in (("msp", msp_score), ("ue", ue_score), ("entropy", entropy_score),
                           ("energy", energy_score)):
        np.testing.assert_allclose(get_detector(name, model).score(as_pixels(logits)),
                                   function(logits), rtol=1e-6)


def test_level2_variants_drop_the_garbage_output():
    logits = np.array([[1.0, 2.0, 0.5, 4.0], [0.0, -1.0, 3.0, -2.0]], np.float32)
    model = identity_model(4)
    pixels = as_pixels(logits)
    id_outputs = logits[:, :3]
    for name, function in (("msp", msp_score), ("ue", ue_score), ("entropy", entropy_score),
                           ("energy", energy_score)):
        level2 = get_detector(name, model, garbage_index=3).score(pixels)
        level1 = get_detector(f"{name}@n+1", model, garbage_index=3).score(pixels)
        np.testing.assert_allclose(level2, function(id_outputs), rtol=1e-6)
        np.testing.assert_allclose(level1, function(logits), rtol=1e-6)
        assert not np.allclose(level1, level2)
    # Dropping the logit is the same as dropping the probability and renormalising.
    renormalised = drop_garbage(tf.nn.softmax(logits.astype(np.float64))).numpy()
    np.testing.assert_allclose(get_detector("msp", model, garbage_index=3).score(pixels),
                               -renormalised.max(axis=1), rtol=1e-9)
    garbage = get_detector("garbage", model, garbage_index=3).score(pixels)
    np.testing.assert_allclose(garbage, tf.nn.softmax(logits.astype(np.float64))[:, 3],
                               rtol=1e-6)



def test_softmax_score_is_the_one_definition_in_float32_graphs_too():
    # What the exported graph runs: traced, float32 logits, the graph's own softmax passed in.
    logits = np.array([[1.0, 2.0, 0.5, 4.0], [0.0, -1.0, 3.0, -2.0]], np.float32)
    functions = {"msp": msp_score, "ue": ue_score, "entropy": entropy_score,
                 "energy": energy_score}

    @tf.function
    def graph(name, outputs):
        l = tf.constant(logits)
        return softmax_score(name, l, outputs, garbage_index=3,
                             probabilities=tf.nn.softmax(l, axis=-1))

    for name, function in functions.items():
        level2, level1 = graph(name, "n"), graph(name, "n+1")
        assert level2.dtype == tf.float32
        np.testing.assert_allclose(level2, function(logits[:, :3]), rtol=1e-6)
        np.testing.assert_allclose(level1, function(logits), rtol=1e-6)
    np.testing.assert_allclose(garbage_probability(tf.constant(logits), 3),
                               garbage_score(logits, 3), rtol=1e-6)
    # A stale `probabilities` is never used for the n variant, which has its own softmax.
    wrong = tf.ones((2, 4)) / 4
    np.testing.assert_allclose(softmax_score("msp", logits, "n", 3, probabilities=wrong),
                               msp_score(logits[:, :3]), rtol=1e-6)
    with pytest.raises(ValueError, match="score must be one of"):
        softmax_score("odin", logits)
    with pytest.raises(ValueError, match="outputs must be one of"):
        softmax_score("msp", logits, "n+2")

def test_garbage_scores_refuse_a_plain_model():
    model = identity_model(3)
    with pytest.raises(ValueError, match="garbage class"):
        get_detector("garbage", model)
    with pytest.raises(ValueError, match="msp@n\\+1.*has none"):
        get_detector("msp@n+1", model)
    with pytest.raises(ValueError, match="last output"):
        get_detector("msp", model, garbage_index=0)


# ---------------------------------------------------------------- registry

def test_registry_names_errors_and_a_custom_detector():
    names = detector_names()
    for name in ("ue", "ue@n+1", "msp", "msp@n+1", "energy", "energy@n+1", "entropy",
                 "entropy@n+1", "odin", "odin@n+1", "garbage", "mahalanobis", "mahalanobis++"):
        assert name in names
    with pytest.raises(ValueError, match="Available: .*mahalanobis"):
        get_detector("mahalanobys", identity_model(3))
    with pytest.raises(ValueError, match="Bad parameters for score 'odin'.*tmperature"):
        get_detector("odin", identity_model(3), tmperature=10)
    with pytest.raises(ValueError, match="already registered"):
        register_detector("msp", lambda model, **params: None)

    class Brightness(Detector):
        """Needs no classifier: the mean pixel value."""

        def score_batch(self, x):
            return tf.reduce_mean(x, axis=[1, 2, 3])

    register_detector("test_brightness", lambda model, **params: Brightness(**params))
    try:
        detector = get_detector("test_brightness")
        assert detector.name == "test_brightness"
        images = np.array([[[[0]]], [[[255]]], [[[51]]]], np.uint8)  # uint8 -> / 255
        np.testing.assert_allclose(detector.fit(images).score(images, batch_size=2),
                                   [0.0, 1.0, 0.2], rtol=1e-6)
        assert detector.score(images[:0]).shape == (0,)
    finally:
        del _FACTORIES["test_brightness"]


# ---------------------------------------------------------------- ODIN

def odin_by_hand(kernel, x, temperature, epsilon):
    """ODIN for logits = x @ kernel, with the gradient written out."""
    x = np.asarray(x, np.float64)
    logits = x @ kernel / temperature
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    k = p.argmax(1)
    # d/dx log softmax_k(x W / T) = (W[:, k] - sum_j p_j W[:, j]) / T
    gradient = (kernel.T[k] - p @ kernel.T) / temperature
    perturbed = x - epsilon * np.sign(-gradient)
    tempered = perturbed @ kernel / temperature
    q = np.exp(tempered - tempered.max(1, keepdims=True))
    q /= q.sum(1, keepdims=True)
    return -q.max(1), -p.max(1)


def test_odin_equals_the_hand_computed_perturbation():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(4, 3)).astype(np.float32)
    x = rng.uniform(size=(6, 4)).astype(np.float32)
    model = identity_model(4, 3, kernel)
    for temperature, epsilon in ((1000.0, 0.0014), (2.0, 0.05)):
        odin = ODIN(model, temperature=temperature, epsilon=epsilon)
        expected, unperturbed = odin_by_hand(kernel.astype(np.float64), x, temperature, epsilon)
        scores = odin.score(as_pixels(x))
        np.testing.assert_allclose(scores, expected, rtol=1e-5)
        # The change itself, which at T = 1000 is far below the tolerance above.
        np.testing.assert_allclose(scores - unperturbed, expected - unperturbed, rtol=1e-2)
        # The perturbation raises the max softmax: the score (its negative) drops.
        assert np.all(scores < unperturbed)
    assert ODIN(model).get_config() == {"temperature": 1000.0, "epsilon": 0.0014,
                                        "outputs": "n"}


def test_odin_perturbation_raises_the_max_softmax_of_a_tiny_cnn():
    keras.utils.set_random_seed(0)
    model = build_classifier((8, 8, 1), 4, backbone="conv3", width=2, dense_units=8)
    x = np.random.default_rng(1).uniform(size=(32, 8, 8, 1)).astype(np.float32)
    odin = ODIN(model, temperature=1.0, epsilon=0.01)
    before = msp_score(model(x).numpy())
    after = odin.score(x, batch_size=10)
    assert np.mean(after < before) > 0.9  # first order: the max softmax rises almost surely
    # epsilon 0 is temperature scaling alone, and shares the plain forward pass.
    still = ODIN(model, temperature=10.0, epsilon=0.0)
    assert still.from_outputs
    np.testing.assert_allclose(still.score(x), msp_score(model(x).numpy() / 10.0), rtol=1e-5)


def test_odin_level2_variant_uses_the_id_outputs_only():
    kernel = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
    model = identity_model(3, 4, kernel)
    x = np.random.default_rng(3).uniform(size=(5, 3)).astype(np.float32)
    level2 = get_detector("odin", model, garbage_index=3, temperature=2.0, epsilon=0.05)
    expected, _ = odin_by_hand(kernel[:, :3].astype(np.float64), x, 2.0, 0.05)
    np.testing.assert_allclose(level2.score(as_pixels(x)), expected, rtol=1e-5)


# ---------------------------------------------------------------- Mahalanobis

def gaussian_features(seed=0, per_class=12, dim=4, classes=3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    features = centres[labels] + rng.normal(size=(len(labels), dim))
    return features.astype(np.float32), labels


def test_mahalanobis_equals_a_direct_numpy_computation():
    features, labels = gaussian_features()
    model = identity_model(4, 3)
    detector = Mahalanobis(model).fit(as_pixels(features), labels, batch_size=1000)

    f = features.astype(np.float64)
    means = np.stack([f[labels == c].mean(0) for c in range(3)])
    centred = f - means[labels]
    covariance = centred.T @ centred / len(f)
    precision = np.linalg.inv(covariance)
    np.testing.assert_allclose(detector.means, means, rtol=1e-6)
    np.testing.assert_allclose(detector.covariance, covariance, rtol=1e-6, atol=1e-9)

    queries = np.random.default_rng(5).normal(scale=4.0, size=(7, 4)).astype(np.float32)
    q = queries.astype(np.float64)
    distances = np.stack([np.einsum("nd,de,ne->n", q - m, precision, q - m) for m in means], 1)
    np.testing.assert_allclose(detector.distances(q), distances, rtol=1e-6)
    np.testing.assert_allclose(detector.score(as_pixels(queries)), distances.min(1), rtol=1e-6)


def test_mahalanobis_streaming_fit_equals_the_one_shot_fit():
    features, labels = gaussian_features(seed=1, per_class=20)
    features += 50.0  # far from the origin: the sum of outer products must not lose digits
    model = identity_model(4, 3)
    streamed = Mahalanobis(model).fit(as_pixels(features), labels, batch_size=7)
    one_shot = Mahalanobis(model).fit(as_pixels(features), labels, batch_size=len(labels))
    from_features = Mahalanobis(model).fit_features(features, labels)
    for other in (one_shot, from_features):
        np.testing.assert_allclose(streamed.means, other.means, rtol=1e-12)
        np.testing.assert_allclose(streamed.covariance, other.covariance, rtol=1e-9,
                                   atol=1e-12)
    queries = as_pixels(features[::5] + 0.5)
    np.testing.assert_allclose(streamed.score(queries), one_shot.score(queries), rtol=1e-9)


def test_class_gaussians_skip_ood_labels_and_handle_a_dead_unit():
    features, labels = gaussian_features(seed=2)
    features[:, 3] = 0.0  # a ReLU unit that never fires on the training set
    gaussians = ClassGaussians(3)
    gaussians.update(features, labels)
    gaussians.update(np.full((5, 4), 99.0), np.full(5, -1))  # OOD-labelled: ignored
    means, covariance, counts = gaussians.result()
    np.testing.assert_array_equal(counts, [12, 12, 12])
    assert np.all(means[:, 3] == 0) and covariance[3, 3] == 0
    detector = Mahalanobis(identity_model(4, 3)).fit_statistics(means, covariance, counts)
    scores = detector.score(as_pixels(features))
    assert np.all(np.isfinite(scores))  # the pseudo-inverse ignores the dead direction


def test_mahalanobis_input_preprocessing_moves_towards_the_closest_class():
    features, labels = gaussian_features(seed=3)
    model = identity_model(4, 3)
    plain = Mahalanobis(model).fit(as_pixels(features), labels)
    processed = Mahalanobis(model, epsilon=0.05).fit(as_pixels(features), labels)
    assert not processed.from_outputs
    queries = as_pixels(features[:10] + 1.0)
    assert np.all(processed.score(queries) < plain.score(queries))


def test_mahalanobis_pp_is_mahalanobis_on_unit_norm_features():
    features, labels = gaussian_features(seed=4)
    model = identity_model(4, 3)
    pp = get_detector("mahalanobis++", model).fit(as_pixels(features), labels)
    assert pp.normalize and pp.get_config()["normalize"] is True
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    by_hand = Mahalanobis(model).fit_features(unit, labels)
    np.testing.assert_allclose(pp.means, by_hand.means, rtol=1e-6)
    queries = np.random.default_rng(6).normal(scale=4.0, size=(9, 4)).astype(np.float32)
    unit_queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    np.testing.assert_allclose(pp.score(as_pixels(queries)),
                               by_hand.distances(unit_queries).min(1), rtol=1e-6)
    # Scale-free: a feature vector and 10x it get the same score; Lee et al.'s score differs.
    np.testing.assert_allclose(pp.score(as_pixels(queries)), pp.score(as_pixels(10 * queries)),
                               rtol=1e-5)
    plain = Mahalanobis(model).fit(as_pixels(features), labels)
    assert not np.allclose(plain.score(as_pixels(queries)), plain.score(as_pixels(10 * queries)))
    # Input pre-processing works on the normalised distance too.
    processed = get_detector("mahalanobis++", model, epsilon=0.05).fit(as_pixels(features),
                                                                       labels)
    near = as_pixels(features[:10] + 1.0)
    assert np.all(processed.score(near) < pp.score(near))


def test_fit_together_equals_separate_fits():
    from keras_tie.detectors.mahalanobis import fit_together

    features, labels = gaussian_features(seed=5, per_class=15)
    model = identity_model(4, 3)
    pair = fit_together([Mahalanobis(model), get_detector("mahalanobis++", model)],
                        as_pixels(features), labels, batch_size=7)
    alone = [Mahalanobis(model).fit(as_pixels(features), labels),
             get_detector("mahalanobis++", model).fit(as_pixels(features), labels)]
    for together, single in zip(pair, alone):
        np.testing.assert_allclose(together.means, single.means, rtol=1e-9)
        np.testing.assert_allclose(together.precision, single.precision, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="one model and feature layer"):
        fit_together([Mahalanobis(model), Mahalanobis(identity_model(4, 3))],
                     as_pixels(features), labels)


def test_mahalanobis_errors():
    model = identity_model(4, 3)
    with pytest.raises(ValueError, match="not fitted"):
        Mahalanobis(model).score(as_pixels(np.zeros((1, 4))))
    with pytest.raises(ValueError, match="one class label per training image"):
        Mahalanobis(model).fit(as_pixels(np.zeros((2, 4))))
    no_features = keras.Sequential([keras.Input((1, 1, 4)), keras.layers.Flatten(),
                                    keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="no layer named 'features'"):
        Mahalanobis(no_features)
