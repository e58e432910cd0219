"""OOD scores the exported graph computes, and where their thresholds come from.

An exported model decides in its graph with the two-level rule
(`keras_tie.inference.two_level_rule`): level 1 rejects an image whose most
probable class is the garbage class; level 2 rejects it when its *score* is
above the *threshold* shipped in the model. Higher score = more likely OOD.

A score is TensorFlow ops on the classifier's outputs, so the same graph runs
in TF Serving and, converted, in TFLite. Built in:

| name | score | default threshold |
|---|---|---|
| `ue` (alias `ue@n+1`) | UE of the full softmax (all n + 1 outputs): the paper's level-2 score | tau_T of the run (run.json) |
| `garbage` | softmax probability of the garbage class (needs one) | 0.5 |

A threshold given explicitly always wins. A score without a default (UE of a
plain run, which has no tau_T; a score registered without one) gets a
calibrated threshold: the value that accepts `CALIBRATION_ID_ACCEPTANCE` of
in-distribution images.

Further scores register with `register_export_score`, e.g. a Mahalanobis score
with `needs_features=True` and its class means and precision as constants.
Scores that take gradients with respect to the input (ODIN, Mahalanobis with
input pre-processing, approximate mass) cannot be exported: TFLite has no
gradient ops, and keras-tie ships one graph for TF Serving and TFLite.
"""

import dataclasses
import math
from collections.abc import Callable

import numpy as np

# The operating point of OOD benchmarks (FPR at 95% TPR): 95% of in-distribution
# images accepted.
CALIBRATION_ID_ACCEPTANCE = 0.95

# A garbage probability above 1/2 is always the largest, so with level 1 in the
# rule this threshold adds no rejections: the default rule is level 1 alone.
GARBAGE_THRESHOLD = 0.5

# Scores that need the gradient of the network with respect to its input.
GRADIENT_SCORES = {
    "odin": "ODIN perturbs the input along the gradient of the softmax loss",
    "mahalanobis_preprocessing": "Mahalanobis input pre-processing perturbs the input along "
                                 "the gradient of the class distance",
    "mass": "the approximate mass is the norm of the gradient of a flow's log-likelihood",
    "approximate_mass": "the approximate mass is the norm of the gradient of a flow's "
                        "log-likelihood",
}


@dataclasses.dataclass(frozen=True)
class ExportScore:
    """An OOD score written as TensorFlow ops, computed inside the exported graph.

    Args:
        name: the score's name (`--score NAME`).
        fn: `fn(outputs, garbage_index)` returning a float32 tensor `[N]`,
            higher = more OOD. `outputs` holds `logits` and `probabilities`
            (`[N, K]`), and `features` (`[N, D]`, the penultimate layer) when
            `needs_features`. `garbage_index` is None for a plain model.
        description: one line, written into the export's metadata.
        needs_garbage: the score needs a model with a garbage class.
        needs_features: `fn` reads the penultimate features.
        default_threshold: `default_threshold(run_info)` returning
            `(threshold, source)`, or None when the run gives no threshold
            (the export then calibrates one); None: always calibrate.

    Example:

    ```python
    register_export_score(ExportScore(
        "energy", lambda outputs, g: -tf.reduce_logsumexp(outputs["logits"], axis=-1),
        "free energy -logsumexp(logits)"))
    export_run("runs/mnist_tie", score="energy", threshold=-7.5)
    ```
    """

    name: str
    fn: Callable
    description: str
    needs_garbage: bool = False
    needs_features: bool = False
    default_threshold: Callable | None = None


def _ue(outputs, garbage_index):
    from keras_tie.uncertainty import uncertainty

    return uncertainty(outputs["probabilities"])


def _garbage(outputs, garbage_index):
    return outputs["probabilities"][:, garbage_index]


def _tau_of_run(run_info):
    tau = run_info.get("tau")
    return None if tau is None else (float(tau), "tau_T of the run (run.json)")


def _garbage_default(run_info):
    return GARBAGE_THRESHOLD, "0.5: the level-1 rule alone (argmax = garbage class)"


_SCORES = {}


def register_export_score(score, *, overwrite=False):
    """Makes `score` (an `ExportScore`) available to `export_run(score=score.name)`."""
    if not isinstance(score, ExportScore):
        raise TypeError(f"score must be an ExportScore. Received: score={score!r}")
    if score.name in GRADIENT_SCORES:
        raise ValueError(f"{score.name!r} is reserved for a gradient-based score, which cannot "
                         "be exported. Choose another name.")
    if score.name in _SCORES and not overwrite:
        raise ValueError(f"An export score named {score.name!r} is already registered. Pass "
                         "overwrite=True to replace it.")
    _SCORES[score.name] = score


def export_score_names():
    """The names `export_run` accepts, sorted."""
    return sorted(_SCORES)


def get_export_score(name, garbage_index=None):
    """The registered `ExportScore` called `name`, checked against the model.

    Raises:
        ValueError: a gradient-based score (the message says why it cannot
            be exported), an unknown name, or `garbage` on a plain model.
    """
    if isinstance(name, ExportScore):
        score = name
    elif name in GRADIENT_SCORES:
        raise ValueError(
            f"The score {name!r} cannot be exported: {GRADIENT_SCORES[name]}, and TFLite has no "
            "gradient ops (keras-tie exports one graph for TF Serving and TFLite, so no "
            "exported model takes input gradients). Export a score computed from the outputs "
            f"instead: {', '.join(export_score_names())}; evaluate {name!r} with "
            "`keras-tie evaluate`. Received: score=" + repr(name))
    elif name not in _SCORES:
        raise ValueError(f"Unknown export score. Received: score={name!r}. Available: "
                         f"{', '.join(export_score_names())}")
    else:
        score = _SCORES[name]
    if score.needs_garbage and garbage_index is None:
        raise ValueError(
            f"The score {score.name!r} needs a model with a garbage class (method tie or "
            "static), and this run is plain (garbage_index=None). Use --score ue with "
            f"--threshold. Received: score={score.name!r}")
    return score


def calibrate_threshold(scores, id_acceptance=CALIBRATION_ID_ACCEPTANCE):
    """The threshold accepting `id_acceptance` of in-distribution `scores` (score <= threshold)."""
    scores = np.asarray(scores, np.float64)
    if scores.size == 0 or not np.all(np.isfinite(scores)):
        raise ValueError("Calibration needs finite scores of at least one in-distribution image. "
                         f"Received: {scores.size} scores")
    if not 0.0 < id_acceptance <= 1.0:
        raise ValueError(
            f"id_acceptance must be in (0, 1]. Received: id_acceptance={id_acceptance}")
    # The smallest threshold with at least `id_acceptance` of the scores at or below it.
    return float(np.quantile(scores, id_acceptance, method="inverted_cdf"))


def check_threshold(threshold):
    """A finite float, or a ValueError saying what was received."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"threshold must be a finite number. Received: threshold={threshold!r}")
    return value


register_export_score(ExportScore(
    "ue", _ue, "UE of the softmax over all outputs (TIE paper, section 4.4)",
    default_threshold=_tau_of_run))
# The detectors (keras_tie.detectors) call UE over all n + 1 outputs `ue@n+1` and keep `ue`
# for the n in-distribution outputs; the export's `ue` is the two-level rule's, over all
# outputs, so it answers to the detectors' name as well.
register_export_score(ExportScore(
    "ue@n+1", _ue, "UE of the softmax over all outputs (TIE paper, section 4.4)",
    default_threshold=_tau_of_run))
register_export_score(ExportScore(
    "garbage", _garbage, "softmax probability of the garbage class", needs_garbage=True,
    default_threshold=_garbage_default))
