"""OOD metrics against scikit-learn, brute force and the separable / reversed cases."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from keras_tie import metrics


def random_scores(seed, id_count=300, ood_count=200, rounding=None):
    rng = np.random.default_rng(seed)
    id_scores = rng.normal(0.0, 1.0, id_count)
    ood_scores = rng.normal(1.0, 1.2, ood_count)
    if rounding is not None:  # ties within and across the two sets
        id_scores, ood_scores = np.round(id_scores, rounding), np.round(ood_scores, rounding)
    return id_scores, ood_scores


def brute_force_rates(id_scores, ood_scores):
    """(TPR, FPR) of every threshold t (accept score <= t), written out."""
    thresholds = np.concatenate([[-np.inf], np.unique(np.concatenate([id_scores, ood_scores]))])
    tpr = np.array([np.mean(id_scores <= t) for t in thresholds])
    fpr = np.array([np.mean(ood_scores <= t) for t in thresholds])
    return tpr, fpr


@pytest.mark.parametrize("seed,rounding", [(0, None), (1, None), (2, 1)])
def test_metrics_match_scikit_learn_and_brute_force(seed, rounding):
    id_scores, ood_scores = random_scores(seed, rounding=rounding)
    result = metrics.ood_metrics(id_scores, ood_scores)
    is_ood = np.concatenate([np.zeros(len(id_scores)), np.ones(len(ood_scores))])
    scores = np.concatenate([id_scores, ood_scores])

    # AUROC: the same with OOD positive ranked by the score; and the Mann-Whitney probability.
    assert result["auroc"] == pytest.approx(roc_auc_score(is_ood, scores), abs=1e-12)
    pairs = ood_scores[:, None] - id_scores[None, :]
    assert result["auroc"] == pytest.approx(np.mean(pairs > 0) + 0.5 * np.mean(pairs == 0),
                                            abs=1e-12)
    assert result["aupr_in"] == pytest.approx(average_precision_score(1 - is_ood, -scores))
    assert result["aupr_out"] == pytest.approx(average_precision_score(is_ood, scores))
    assert result["aupr_in"] != pytest.approx(result["aupr_out"])

    tpr, fpr = brute_force_rates(id_scores, ood_scores)
    assert result["fpr_at_95_tpr"] == pytest.approx(fpr[tpr >= 0.95].min(), abs=1e-12)
    assert result["tnr_at_95_tpr"] == pytest.approx(1 - fpr[tpr >= 0.95].min(), abs=1e-12)
    assert result["detection_error"] == pytest.approx(np.min(0.5 * (1 - tpr) + 0.5 * fpr),
                                                      abs=1e-12)
    assert result["id_count"] == len(id_scores) and result["ood_count"] == len(ood_scores)


def test_separable_and_reversed_cases():
    low = np.linspace(0.0, 1.0, 40)
    high = np.linspace(2.0, 3.0, 30)
    separable = metrics.ood_metrics(low, high)  # every OOD score above every ID score
    assert separable["auroc"] == 1.0 and separable["fpr_at_95_tpr"] == 0.0
    assert separable["tnr_at_95_tpr"] == 1.0 and separable["detection_error"] == 0.0
    assert separable["aupr_in"] == pytest.approx(1.0)
    assert separable["aupr_out"] == pytest.approx(1.0)
    reversed_ = metrics.ood_metrics(high, low)
    assert reversed_["auroc"] == 0.0 and reversed_["fpr_at_95_tpr"] == 1.0
    assert reversed_["tnr_at_95_tpr"] == 0.0
    assert reversed_["detection_error"] == 0.5  # best is to accept all or nothing


def test_fpr_at_exactly_95_percent_tpr():
    # 20 ID scores 1..20: accepting 19 of them (TPR 0.95) needs t = 19.
    id_scores = np.arange(1.0, 21.0)
    ood_scores = np.array([18.5, 19.5, 30.0, 40.0])  # 18.5 is accepted at t = 19
    assert metrics.fpr_at_tpr(id_scores, ood_scores) == 0.25
    assert metrics.threshold_at_tpr(id_scores) == 19.0
    rates = metrics.rates_at_threshold(id_scores, ood_scores, 19.0)
    assert rates == {"id_accepted": 0.95, "ood_accepted": 0.25, "ood_rejected": 0.75}


def test_threshold_at_tpr_accepts_at_least_the_target():
    scores = np.random.default_rng(3).normal(size=1001)
    threshold = metrics.threshold_at_tpr(scores)
    assert np.mean(scores <= threshold) >= 0.95
    assert np.mean(scores < threshold) < 0.95  # and it is the smallest such score
    assert metrics.threshold_at_tpr(np.arange(100.0)) == 94.0



def test_threshold_at_tpr_on_a_small_array_with_ties():
    # Sorted: 0.1 0.2 0.3 0.3 0.3 0.4 0.5 0.6 0.7 0.9.
    scores = np.array([0.5, 0.1, 0.9, 0.3, 0.3, 0.3, 0.7, 0.2, 0.6, 0.4])
    assert metrics.threshold_at_tpr(scores) == 0.9  # ceil(0.95 * 10) = 10th smallest
    assert metrics.threshold_at_tpr(scores, 0.9) == 0.7  # 9th
    # The 3rd smallest is a tied 0.3: the ties are accepted together, 5 of 10 for a 30% target.
    assert metrics.threshold_at_tpr(scores, 0.3) == 0.3
    assert metrics.rates_at_threshold(scores, [], 0.3)["id_accepted"] == 0.5
    # 0.07 * 100 is 7.000000000000001 in floating point: still the 7th smallest.
    assert metrics.threshold_at_tpr(np.arange(100.0), 0.07) == 6.0
    for tpr in (0.0, 1.5):
        with pytest.raises(ValueError, match=f"tpr must be in \\(0, 1\\]. Received: tpr={tpr}"):
            metrics.threshold_at_tpr(scores, tpr)
    with pytest.raises(ValueError, match="Received: 0 scores"):
        metrics.threshold_at_tpr([])


def test_balanced_indices():
    id_index, ood_index = metrics.balanced_indices(1000, 300, seed=4, key="cifar10")
    assert len(id_index) == len(ood_index) == 300
    np.testing.assert_array_equal(ood_index, np.arange(300))  # the smaller side is whole
    assert len(np.unique(id_index)) == 300 and np.all(np.diff(id_index) > 0)
    again, _ = metrics.balanced_indices(1000, 300, seed=4, key="cifar10")
    np.testing.assert_array_equal(id_index, again)
    other, _ = metrics.balanced_indices(1000, 300, seed=4, key="gaussian")
    assert not np.array_equal(id_index, other)
    _, ood_index = metrics.balanced_indices(50, 80, seed=4)
    assert len(ood_index) == 50 and ood_index.max() < 80


def test_pr_curves_and_bad_input():
    id_scores, ood_scores = random_scores(5)
    recall, precision = metrics.pr_curve(id_scores, ood_scores, "OOD")
    assert recall[0] == 1.0 and precision[-1] == 1.0
    with pytest.raises(ValueError, match="positive"):
        metrics.pr_curve(id_scores, ood_scores, "both")
    with pytest.raises(ValueError, match="at least one OOD score"):
        metrics.ood_metrics(id_scores, [])
    with pytest.raises(ValueError, match="1 of 3 in-distribution scores are NaN"):
        metrics.auroc([0.0, np.nan, 1.0], ood_scores)
    assert metrics.accuracy([1, 2, 3], [1, 2, 0]) == pytest.approx(2 / 3)


def test_paired_bootstrap_of_auroc():
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
    from paired_auroc import bootstrap_auroc, interval

    rng = np.random.default_rng(0)
    id_scores, ood_scores = rng.normal(0, 1, 400), rng.normal(1, 1, 300)
    noisy = ood_scores + rng.normal(0, 2, 300)  # run b: the same images, a worse score
    scores = {"a": {"s": {"id": id_scores, "ood": ood_scores}},
              "b": {"s": {"id": id_scores, "ood": noisy},
                    "same": {"id": id_scores, "ood": ood_scores}}}
    point, draws = bootstrap_auroc(scores, "id", "ood", 200, seed=1)
    assert point[("a", "s")] == pytest.approx(metrics.auroc(id_scores, ood_scores))
    assert all(d.shape == (200,) for d in draws.values())
    # Paired: the same score on the same images gives the same AUROC on every resample.
    np.testing.assert_array_equal(draws[("a", "s")], draws[("b", "same")])
    low, high = interval(draws[("a", "s")])
    assert low < point[("a", "s")] < high
    difference = draws[("a", "s")] - draws[("b", "s")]
    assert interval(difference)[0] > 0  # the noisier score is measurably worse
    with pytest.raises(ValueError, match="same images"):
        bootstrap_auroc({"a": {"s": {"id": id_scores, "ood": ood_scores}},
                         "b": {"s": {"id": id_scores[:10], "ood": ood_scores}}},
                        "id", "ood", 100, seed=0)


def test_resampled_auroc_equals_auroc_on_each_resample_with_ties():
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
    from paired_auroc import resampled_auroc

    id_scores, ood_scores = random_scores(3, rounding=1)  # ties within and across the sets
    rng = np.random.default_rng(4)
    id_draws = rng.integers(0, len(id_scores), (7, len(id_scores)))
    ood_draws = rng.integers(0, len(ood_scores), (7, len(ood_scores)))
    expected = [metrics.auroc(id_scores[i], ood_scores[o]) for i, o in zip(id_draws, ood_draws)]
    np.testing.assert_allclose(resampled_auroc(id_scores, ood_scores, id_draws, ood_draws,
                                               chunk=3), expected, atol=1e-12)
