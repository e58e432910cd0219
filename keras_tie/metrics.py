"""OOD detection metrics from detector scores (higher score = more likely OOD).

In-distribution is the **positive** class, as in the ODIN and energy papers:
a threshold t accepts an image as in-distribution when its score is <= t,
TPR is the share of ID images accepted and FPR the share of OOD images
accepted. Internally the ID-ness -score is passed to scikit-learn.

- AUROC: area under the ROC curve (the same with either class positive).
- AUPR-In: average precision with ID positive, ranked by -score.
- AUPR-Out: average precision with OOD positive, ranked by score.
  Both use scikit-learn's `average_precision_score` (step interpolation, no
  trapezoids, which would be optimistic).
- FPR@95%TPR: the smallest FPR of any threshold that accepts >= 95% of ID.
- TNR@95%TPR: 1 - FPR@95%TPR.
- Detection error: min over thresholds of 0.5 (1 - TPR) + 0.5 FPR (ODIN's
  P_e, equal priors).

The AUPRs depend on the ratio of ID to OOD examples (a random detector's
AUPR-Out is the OOD share); the approximate-mass paper
(004_f7d5548531a0fef9.txt, section 5, "Methodology") equalises the counts so
that numbers are comparable across OOD sets: `balanced_indices` subsamples
the larger side, seeded.
"""

import math
import zlib

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

TPR_LEVEL = 0.95  # FPR@95%TPR, the ODIN / energy / TIE papers' operating point
# k / n compared with the level: 19 / 20 and 0.95 can differ in the last bit.
_TPR_TOLERANCE = 1e-12
METRIC_NAMES = ("auroc", "aupr_in", "aupr_out", "fpr_at_95_tpr", "tnr_at_95_tpr",
                "detection_error")
POSITIVE_CLASS = {"auroc": "ID", "aupr_in": "ID", "aupr_out": "OOD", "fpr_at_95_tpr": "ID",
                  "tnr_at_95_tpr": "ID", "detection_error": "ID"}


def _check(id_scores, ood_scores):
    id_scores = np.asarray(id_scores, np.float64).ravel()
    ood_scores = np.asarray(ood_scores, np.float64).ravel()
    for side, scores in (("in-distribution", id_scores), ("OOD", ood_scores)):
        if scores.size == 0:
            raise ValueError(f"OOD metrics need at least one {side} score. Received: 0")
        bad = int(np.count_nonzero(np.isnan(scores)))
        if bad:
            raise ValueError(f"{bad} of {scores.size} {side} scores are NaN.")
    return id_scores, ood_scores


def _id_positive(id_scores, ood_scores):
    """(labels with ID = 1, ID-ness = -score) for scikit-learn."""
    labels = np.concatenate([np.ones(len(id_scores)), np.zeros(len(ood_scores))])
    return labels, -np.concatenate([id_scores, ood_scores])


def roc(id_scores, ood_scores):
    """(FPR, TPR, thresholds on the score) with ID positive; accept when score <= threshold."""
    id_scores, ood_scores = _check(id_scores, ood_scores)
    fpr, tpr, thresholds = roc_curve(*_id_positive(id_scores, ood_scores),
                                     drop_intermediate=False)
    return fpr, tpr, -thresholds


def auroc(id_scores, ood_scores):
    """Area under the ROC curve."""
    return float(roc_auc_score(*_id_positive(*_check(id_scores, ood_scores))))


def aupr_in(id_scores, ood_scores):
    """Average precision with in-distribution positive."""
    return float(average_precision_score(*_id_positive(*_check(id_scores, ood_scores))))


def aupr_out(id_scores, ood_scores):
    """Average precision with OOD positive."""
    id_scores, ood_scores = _check(id_scores, ood_scores)
    labels, id_ness = _id_positive(id_scores, ood_scores)
    return float(average_precision_score(1 - labels, -id_ness))


def fpr_at_tpr(id_scores, ood_scores, tpr=TPR_LEVEL):
    """Smallest share of OOD accepted by a threshold that accepts >= `tpr` of ID."""
    fpr, tprs, _ = roc(id_scores, ood_scores)
    return float(fpr[np.argmax(tprs >= tpr - _TPR_TOLERANCE)])


def tnr_at_tpr(id_scores, ood_scores, tpr=TPR_LEVEL):
    """Largest share of OOD rejected by a threshold that accepts >= `tpr` of ID."""
    return 1.0 - fpr_at_tpr(id_scores, ood_scores, tpr)


def detection_error(id_scores, ood_scores):
    """min over thresholds of 0.5 * (1 - TPR) + 0.5 * FPR."""
    fpr, tpr, _ = roc(id_scores, ood_scores)
    return float(np.min(0.5 * (1.0 - tpr) + 0.5 * fpr))


def ood_metrics(id_scores, ood_scores, tpr=TPR_LEVEL):
    """Every metric of `METRIC_NAMES` plus the counts, as a dict of floats."""
    id_scores, ood_scores = _check(id_scores, ood_scores)
    fpr = fpr_at_tpr(id_scores, ood_scores, tpr)
    return {"auroc": auroc(id_scores, ood_scores),
            "aupr_in": aupr_in(id_scores, ood_scores),
            "aupr_out": aupr_out(id_scores, ood_scores),
            "fpr_at_95_tpr": fpr,
            "tnr_at_95_tpr": 1.0 - fpr,
            "detection_error": detection_error(id_scores, ood_scores),
            "id_count": int(id_scores.size),
            "ood_count": int(ood_scores.size)}


def threshold_at_tpr(id_scores, tpr=TPR_LEVEL):
    """The smallest threshold t that accepts (score <= t) at least `tpr` of `id_scores`.

    Fitted on held-out in-distribution scores, it is the deployment threshold:
    an image whose score exceeds it is declared OOD. The evaluation and the
    export (`keras_tie.export.calibrate_threshold`) both call it.

    It is the k-th smallest score, k = ceil(tpr * N): tied scores are accepted
    or rejected together, so ties at t can accept more than `tpr`. A product
    tpr * N that floating point puts a hair above an integer (0.07 * 100 =
    7.000000000000001) is read as that integer, rather than asking for one
    image more as `np.quantile(..., method="inverted_cdf")` does.

    Raises:
        ValueError: no scores, a NaN score, or `tpr` outside (0, 1].
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1]. Received: tpr={tpr}")
    scores = np.sort(np.asarray(id_scores, np.float64).ravel())
    if scores.size == 0 or np.isnan(scores).any():
        raise ValueError(f"threshold_at_tpr needs finite held-out ID scores. "
                         f"Received: {scores.size} scores")
    k = max(math.ceil(tpr * scores.size - 1e-9), 1)
    return float(scores[k - 1])


def rates_at_threshold(id_scores, ood_scores, threshold):
    """{id_accepted (TPR), ood_accepted (FPR), ood_rejected (TNR)} at a fixed threshold."""
    id_scores = np.asarray(id_scores, np.float64)
    ood_scores = np.asarray(ood_scores, np.float64)
    ood_accepted = float(np.mean(ood_scores <= threshold)) if ood_scores.size else math.nan
    return {"id_accepted": float(np.mean(id_scores <= threshold)) if id_scores.size else math.nan,
            "ood_accepted": ood_accepted, "ood_rejected": 1.0 - ood_accepted}


def balanced_indices(id_count, ood_count, seed, key=""):
    """(ID indices, OOD indices), the larger side subsampled to the smaller's size.

    The subsample is drawn without replacement from numpy's default_rng seeded
    with (seed, crc32(key)), so each OOD set (`key`) has its own, reproducible
    draw; the indices are sorted. The smaller side is kept whole.
    """
    rng = np.random.default_rng([int(seed), zlib.crc32(key.encode("utf-8"))])
    size = min(id_count, ood_count)

    def draw(count):
        if count == size:
            return np.arange(count)
        return np.sort(rng.choice(count, size, replace=False))

    return draw(id_count), draw(ood_count)


def accuracy(predicted, labels):
    """Share of `predicted` equal to `labels` (NaN for no examples)."""
    predicted = np.asarray(predicted)
    labels = np.asarray(labels)
    return float(np.mean(predicted == labels)) if labels.size else math.nan


def pr_curve(id_scores, ood_scores, positive="ID"):
    """(recall, precision) with `positive` ("ID" ranked by -score, or "OOD" ranked by score)."""
    id_scores, ood_scores = _check(id_scores, ood_scores)
    labels, id_ness = _id_positive(id_scores, ood_scores)
    if positive == "ID":
        precision, recall, _ = precision_recall_curve(labels, id_ness)
    elif positive == "OOD":
        precision, recall, _ = precision_recall_curve(1 - labels, -id_ness)
    else:
        raise ValueError(f"positive must be 'ID' or 'OOD'. Received: positive={positive!r}")
    return recall, precision
