"""OOD detectors: one API (`fit`, `score`) for every score. Higher score = more likely OOD.

```python
from keras_tie.detectors import detector_names, get_detector

detector = get_detector("mahalanobis", model, garbage_index=10)
detector.fit(train.images, train.labels)       # a no-op for scores that need no fit
scores = detector.score(test.images)           # numpy [N]; higher = more OOD
```

OOD examples carry the label -1. See docs/evaluation.md for every score's
formula and the `name` / `name@n+1` variants of models with a garbage class.
"""

from keras_tie.detectors.detector import (
    DEFAULT_BATCH_SIZE,
    HIGHER_IS_MORE_OOD,
    ClassifierDetector,
    Detector,
    classifier_outputs,
    pixel_batches,
)
from keras_tie.detectors.mahalanobis import ClassGaussians, Mahalanobis, mahalanobis_distances
from keras_tie.detectors.odin import ODIN, ODIN_EPSILON, ODIN_TEMPERATURE
from keras_tie.detectors.registry import (
    ALL_OUTPUTS_SUFFIX,
    base_name,
    detector_names,
    get_detector,
    register_detector,
    variant_names,
)
from keras_tie.detectors.softmax import (
    SOFTMAX_SCORES,
    GarbageDetector,
    SoftmaxDetector,
    energy_score,
    entropy_score,
    garbage_probability,
    garbage_score,
    msp_score,
    softmax_score,
    ue_score,
)

__all__ = [
    "ALL_OUTPUTS_SUFFIX",
    "DEFAULT_BATCH_SIZE",
    "FLOW_SCORES",
    "HIGHER_IS_MORE_OOD",
    "ClassGaussians",
    "ClassifierDetector",
    "Detector",
    "FlowDetector",
    "GarbageDetector",
    "Mahalanobis",
    "ODIN",
    "ODIN_EPSILON",
    "ODIN_TEMPERATURE",
    "RepairDistance",
    "SOFTMAX_SCORES",
    "SoftmaxDetector",
    "base_name",
    "classifier_outputs",
    "detector_names",
    "energy_score",
    "entropy_score",
    "garbage_probability",
    "garbage_score",
    "get_detector",
    "mahalanobis_distances",
    "msp_score",
    "pixel_batches",
    "register_detector",
    "softmax_score",
    "ue_score",
    "variant_names",
]

# The detectors that live with their method (keras_tie.methods.<method>.detector) are imported
# on first use: those modules import this package.
_METHOD_EXPORTS = {"FLOW_SCORES": "keras_tie.methods.flow.detector",
                   "FlowDetector": "keras_tie.methods.flow.detector",
                   "RepairDistance": "keras_tie.methods.repair.detector"}


def __getattr__(name):
    if name not in _METHOD_EXPORTS:
        raise AttributeError(f"module 'keras_tie.detectors' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_METHOD_EXPORTS[name]), name)
