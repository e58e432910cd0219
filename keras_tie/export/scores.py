"""OOD scores the exported graph computes, and where their thresholds come from.

An exported model decides in its graph with the two-level rule
(`keras_tie.inference.two_level_rule`): level 1 rejects an image whose most
probable class is the garbage class; level 2 rejects it when its *score* is
above the *threshold* shipped in the model. Higher score = more likely OOD.

A score is TensorFlow ops on the classifier's outputs, so the same graph runs
in TF Serving and, converted, in TFLite. The built-in scores are the
detectors' softmax-family scores: the graph calls the same functions
(`keras_tie.detectors.softmax.softmax_score`, `garbage_probability`) as
`keras-tie evaluate`, on float32 instead of float64 logits.

| name | score | default threshold |
|---|---|---|
| `ue` (alias `ue@n+1`) | UE of the full softmax (all n + 1 outputs): the paper's level-2 score | tau_T of the run (run.json) |
| `garbage` | softmax probability of the garbage class (needs one) | 0.5 |
| `msp`, `energy`, `entropy` | over the n class outputs (garbage logit dropped) | calibrated |
| `msp@n+1`, `energy@n+1`, `entropy@n+1` | over all n + 1 outputs (needs garbage) | calibrated |

The export's `ue` is the two-level rule's, over all outputs; the detector
`ue` (over the n outputs) has no export name.

A threshold given explicitly always wins. A score without a default (UE of a
plain run, which has no tau_T; msp, energy, entropy; a score registered
without one) gets a calibrated threshold: `keras_tie.metrics.threshold_at_tpr`,
the value that accepts `CALIBRATION_ID_ACCEPTANCE` of in-distribution images.

Further scores register with `register_export_score`, e.g. a Mahalanobis score
with `needs_features=True` and its class means and precision as constants.
Scores that take gradients with respect to the input (ODIN, Mahalanobis with
input pre-processing, approximate mass) cannot be exported: TFLite has no
gradient ops, and keras-tie ships one graph for TF Serving and TFLite.

Importing this module does not import TensorFlow: the built-in scores are
built on first use (`keras-tie --help` stays instant).
"""

import dataclasses
import functools
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
        "max_logit", lambda outputs, g: -tf.reduce_max(outputs["logits"][:, :g], axis=-1),
        "negative largest in-distribution logit"))
    export_run("runs/mnist_tie", score="max_logit", threshold=-7.5)
    ```
    """

    name: str
    fn: Callable
    description: str
    needs_garbage: bool = False
    needs_features: bool = False
    default_threshold: Callable | None = None


def _tau_of_run(run_info):
    tau = run_info.get("tau")
    return None if tau is None else (float(tau), "tau_T of the run (run.json)")


def _garbage_default(run_info):
    return GARBAGE_THRESHOLD, "0.5: the level-1 rule alone (argmax = garbage class)"


def _softmax_export_score(name, score, outputs, **options):
    """The detector's `score` over `outputs` (`n` or `n+1`) as an `ExportScore` called `name`."""
    from keras_tie.detectors.softmax import describe, softmax_score

    def fn(graph_outputs, garbage_index):
        return softmax_score(score, graph_outputs["logits"], outputs, garbage_index,
                             probabilities=graph_outputs["probabilities"])

    return ExportScore(name, fn, describe(score, outputs), **options)


def _built_in_scores():
    from keras_tie.detectors import ALL_OUTPUTS_SUFFIX
    from keras_tie.detectors.softmax import (
        ALL_OUTPUTS,
        ID_OUTPUTS,
        SOFTMAX_SCORES,
        garbage_probability,
    )

    scores = []
    for score in SOFTMAX_SCORES:
        if score == "ue":
            # The export's `ue` is the two-level rule's: UE over all outputs, with tau_T. It
            # answers to the detectors' `ue@n+1` as well, and a plain run (whose only outputs
            # are its n classes) may use either name.
            for name in (score, score + ALL_OUTPUTS_SUFFIX):
                scores.append(_softmax_export_score(name, score, ALL_OUTPUTS,
                                                    default_threshold=_tau_of_run))
            continue
        scores.append(_softmax_export_score(score, score, ID_OUTPUTS))
        scores.append(_softmax_export_score(score + ALL_OUTPUTS_SUFFIX, score, ALL_OUTPUTS,
                                            needs_garbage=True))
    scores.append(ExportScore(
        "garbage",
        lambda outputs, garbage_index: garbage_probability(
            outputs["logits"], garbage_index, outputs["probabilities"]),
        "softmax probability of the garbage class", needs_garbage=True,
        default_threshold=_garbage_default))
    return scores


@functools.cache
def _registry():
    """name -> `ExportScore`: the built-in scores, added on first use, then the registered ones."""
    return {score.name: score for score in _built_in_scores()}


def _gradient_reason(name):
    """Why `name` (or its `@n+1` variant) cannot be exported, or None when it can."""
    from keras_tie.detectors import base_name

    return GRADIENT_SCORES.get(base_name(name)) if isinstance(name, str) else None


def register_export_score(score, *, overwrite=False):
    """Makes `score` (an `ExportScore`) available to `export_run(score=score.name)`."""
    if not isinstance(score, ExportScore):
        raise TypeError(f"score must be an ExportScore. Received: score={score!r}")
    if _gradient_reason(score.name):
        raise ValueError(f"{score.name!r} is reserved for a gradient-based score, which cannot "
                         "be exported. Choose another name.")
    if score.name in _registry() and not overwrite:
        raise ValueError(f"An export score named {score.name!r} is already registered. Pass "
                         "overwrite=True to replace it.")
    _registry()[score.name] = score


def export_score_names():
    """The names `export_run` accepts, sorted."""
    return sorted(_registry())


def get_export_score(name, garbage_index=None):
    """The registered `ExportScore` called `name`, checked against the model.

    Raises:
        ValueError: a gradient-based score (the message says why it cannot
            be exported), an unknown name, or a score that needs a garbage
            class (`garbage`, `msp@n+1`, ...) on a plain model.
    """
    if isinstance(name, ExportScore):
        score = name
    elif _gradient_reason(name):
        raise ValueError(
            f"The score {name!r} cannot be exported: {_gradient_reason(name)}, and TFLite has "
            "no gradient ops (keras-tie exports one graph for TF Serving and TFLite, so no "
            "exported model takes input gradients). Export a score computed from the outputs "
            f"instead: {', '.join(export_score_names())}; evaluate {name!r} with "
            "`keras-tie evaluate`. Received: score=" + repr(name))
    elif name not in _registry():
        raise ValueError(f"Unknown export score. Received: score={name!r}. Available: "
                         f"{', '.join(export_score_names())}")
    else:
        score = _registry()[name]
    if score.needs_garbage and garbage_index is None:
        usable = [n for n, s in sorted(_registry().items()) if not s.needs_garbage]
        raise ValueError(
            f"The score {score.name!r} needs a model with a garbage class (method tie or "
            "static), and this run is plain (garbage_index=None). Use one of "
            f"{', '.join(usable)} (with --threshold, or a calibrated threshold). "
            f"Received: score={score.name!r}")
    return score


def calibrate_threshold(scores, id_acceptance=CALIBRATION_ID_ACCEPTANCE):
    """The threshold accepting `id_acceptance` of in-distribution `scores` (score <= threshold).

    `keras_tie.metrics.threshold_at_tpr`, the evaluation's deployment
    threshold, on scores that must all be finite: the threshold is shipped in
    the graph and the metadata (JSON has no infinity).
    """
    from keras_tie.metrics import threshold_at_tpr

    scores = np.asarray(scores, np.float64)
    if scores.size == 0 or not np.all(np.isfinite(scores)):
        raise ValueError("Calibration needs finite scores of at least one in-distribution image. "
                         f"Received: {scores.size} scores")
    return threshold_at_tpr(scores, id_acceptance)


def check_threshold(threshold):
    """A finite float, or a ValueError saying what was received."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"threshold must be a finite number. Received: threshold={threshold!r}")
    return value
