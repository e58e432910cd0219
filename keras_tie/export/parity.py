"""How closely two runs of an exported model agree: a TFLite variant against the SavedModel.

The float32 TFLite file must reproduce the SavedModel's probabilities to 1e-4;
quantised variants are judged by their decisions: the same label on
in-distribution images, the same accept / reject on a mixed ID and OOD set.
"""

import numpy as np

# Targets of the export issue: float32 within 1e-4 of the SavedModel; int8 with
# the same label on >= 99% of ID test images and the same reject decision on
# >= 98% of a mixed ID / OOD set.
FLOAT32_TOLERANCE = 1e-4
INT8_LABEL_AGREEMENT = 0.99
INT8_DECISION_AGREEMENT = 0.98


def compare_outputs(reference, candidate):
    """Agreement of two output dicts of the `serving_default` signature on the same images.

    Returns:
        A dict: `max_abs_probabilities`, `max_abs_uncertainty`,
        `max_abs_score` (largest absolute differences), `label_agreement`
        (fraction of equal `label`, -1 included), `class_agreement` (equal
        argmax of the probabilities) and `decision_agreement` (equal `is_ood`).
    """
    def max_abs(key):
        return float(np.max(np.abs(np.asarray(reference[key], np.float64)
                                   - np.asarray(candidate[key], np.float64))))

    return {
        "max_abs_probabilities": max_abs("probabilities"),
        "max_abs_uncertainty": max_abs("uncertainty"),
        "max_abs_score": max_abs("score"),
        "label_agreement": float(np.mean(reference["label"] == candidate["label"])),
        "class_agreement": float(np.mean(np.argmax(reference["probabilities"], -1)
                                         == np.argmax(candidate["probabilities"], -1))),
        "decision_agreement": float(np.mean(reference["is_ood"] == candidate["is_ood"])),
    }


def run_in_batches(model, images, batch_size=256):
    """`model.predict` (an `ExportedModel`) over `images` in batches, outputs concatenated."""
    parts = [model.predict(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
