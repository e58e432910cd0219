import numpy as np
import pytest

from keras_tie.inference import two_level_decision
from keras_tie.uncertainty import confidence, drop_garbage, entropy, margin, uncertainty


def ue_by_definition(p):
    """UE written as in the TIE paper, section 4.4, one row at a time."""
    p = np.asarray(p, np.float64)
    k = len(p)
    delta = np.eye(k)[np.argmax(p)]
    return 1 - np.sum((p - 1 / k) ** 2) / np.sum((delta - 1 / k) ** 2)


def test_ue_matches_the_paper_formula_on_random_rows():
    rng = np.random.default_rng(0)
    for k in (2, 3, 11, 101):
        p = rng.dirichlet(np.full(k, 0.3), size=50)
        expected = [ue_by_definition(row) for row in p]
        np.testing.assert_allclose(uncertainty(p.astype(np.float32)).numpy(), expected,
                                   atol=1e-5)


def test_ue_hand_computed_values():
    # K = 3, p = (0.5, 0.3, 0.2): sum p^2 = 0.38, UE = 3/2 * 0.62 = 0.93.
    assert uncertainty(np.array([[0.5, 0.3, 0.2]], np.float32)).numpy()[0] == \
        pytest.approx(0.93, abs=1e-6)
    # K = 2, p = (0.9, 0.1): sum p^2 = 0.82, UE = 2 * 0.18 = 0.36.
    assert uncertainty(np.array([0.9, 0.1], np.float32)).numpy() == pytest.approx(0.36, abs=1e-6)


def test_ue_bounds_one_hot_and_uniform():
    one_hot = np.eye(11, dtype=np.float32)
    uniform = np.full((1, 11), 1 / 11, np.float32)
    np.testing.assert_allclose(uncertainty(one_hot).numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(uncertainty(uniform).numpy(), 1.0, atol=1e-6)
    p = np.random.default_rng(1).dirichlet(np.ones(11), size=1000).astype(np.float32)
    ue = uncertainty(p).numpy()
    assert ue.min() >= 0.0 and ue.max() <= 1.0


def test_summaries():
    p = np.array([[0.7, 0.2, 0.1]], np.float32)
    assert confidence(p).numpy()[0] == pytest.approx(0.7)
    assert margin(p).numpy()[0] == pytest.approx(0.5)
    assert entropy(p).numpy()[0] == pytest.approx(-np.sum(p * np.log(p)), rel=1e-6)
    np.testing.assert_allclose(drop_garbage(p).numpy(), [[0.7 / 0.9, 0.2 / 0.9]], rtol=1e-6)


def test_two_level_rule_on_a_hand_made_batch():
    p = np.array([
        [0.05, 0.05, 0.90],   # argmax = garbage -> level 1
        [0.90, 0.05, 0.05],   # confident class 0 -> accepted
        [0.40, 0.35, 0.25],   # class 0 but UE high -> level 2
    ], np.float32)
    labels, level = two_level_decision(p, tau=0.5)
    assert labels.tolist() == [-1, 0, -1]
    assert level.tolist() == [1, 0, 2]
