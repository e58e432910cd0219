"""Detectors by name: `get_detector(name, model, **params)`, `register_detector(name, factory)`.

A factory is any callable `factory(model, **params)` returning an object with
`name`, `fit` and `score` (a `Detector`); `model` is whatever the score needs
(a classifier, a flow, a repair network) or None. Later scores register
themselves here and every caller (the evaluation, the CLI) finds them by name.

Built-in names (higher = more OOD for all):

- `ue`, `msp`, `energy`, `entropy`, `odin` (softmax.py, odin.py): over the n
  ID outputs, the garbage logit dropped (TIE level 2); softmax.py's functions
  are also what the exported SavedModel computes (`keras_tie.export.scores`);
- `ue@n+1`, `msp@n+1`, `energy@n+1`, `entropy@n+1`, `odin@n+1`: the same over
  all n+1 outputs (TIE level 1; needs a garbage class);
- `garbage`: softmax probability of the garbage class (needs one);
- `mahalanobis` (mahalanobis.py): minimum Mahalanobis distance of the
  penultimate features, shared covariance (Lee et al.);
- `mahalanobis++`: the same on features scaled to unit L2 norm (Mueller and
  Hein, 2025);
- `approximate_mass`, `nll` (flow.py): the norm of the gradient of a flow's
  log-likelihood with respect to its input, and its negative log-likelihood
  (the model is a flow, not a classifier);
- `repair` (repair.py): SR-OOD's distance between an image and its repair
  (the model is a `RepairModel`).
"""

import importlib

from keras_tie.detectors.mahalanobis import Mahalanobis
from keras_tie.detectors.odin import ODIN
from keras_tie.detectors.softmax import (
    ALL_OUTPUTS,
    ID_OUTPUTS,
    SOFTMAX_SCORES,
    GarbageDetector,
    SoftmaxDetector,
)

# The suffix of the level-1 variant: the score over all n + 1 outputs.
ALL_OUTPUTS_SUFFIX = "@" + ALL_OUTPUTS

_FACTORIES = {}


def register_detector(name, factory, *, overwrite=False):
    """Makes `get_detector(name, model, **params)` call `factory(model, **params)`.

    Args:
        name: the score's name (letters, digits, `_`, `-`, `@`, `+`).
        factory: callable `(model, **params) -> detector`.
        overwrite: replace an existing registration instead of refusing.
    """
    if not name or not all(c.isalnum() or c in "_-@+" for c in name):
        raise ValueError(f"A detector name uses letters, digits, '_', '-', '@' and '+'. "
                         f"Received: name={name!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable. Received: factory={factory!r}")
    if name in _FACTORIES and not overwrite:
        raise ValueError(f"A detector named {name!r} is already registered. Pass "
                         "overwrite=True to replace it.")
    _FACTORIES[name] = factory


def detector_names():
    """Every registered name, sorted."""
    return sorted(_FACTORIES)


def get_detector(name, model=None, **params):
    """Builds the detector registered as `name` for `model`; its `name` is set to `name`.

    Raises:
        ValueError: unknown name (the message lists the known ones), parameters
            the score does not take, or a variant the model cannot have (e.g.
            `garbage` on a plain classifier).
    """
    if name not in _FACTORIES:
        raise ValueError(f"Unknown score. Received: name={name!r}. Available: "
                         f"{', '.join(detector_names())}")
    try:
        detector = _FACTORIES[name](model, **params)
    except TypeError as error:
        raise ValueError(f"Bad parameters for score {name!r}: {error}. "
                         f"Received: {params}") from error
    for attribute in ("fit", "score"):
        if not callable(getattr(detector, attribute, None)):
            raise TypeError(f"The factory of {name!r} returned {detector!r}, which has no "
                            f"{attribute}() method.")
    detector.name = name
    return detector


def base_name(name):
    """`msp@n+1` -> `msp`: the score without its variant suffix."""
    return name[: -len(ALL_OUTPUTS_SUFFIX)] if name.endswith(ALL_OUTPUTS_SUFFIX) else name


def variant_names(name):
    """The registered variants of a base name: `msp` -> [`msp`, `msp@n+1`]."""
    return [n for n in (name, name + ALL_OUTPUTS_SUFFIX) if n in _FACTORIES]


def _softmax_factory(score, outputs):
    def build(model, garbage_index=None, **params):
        return SoftmaxDetector(model, score, outputs, garbage_index, **params)

    return build


def _odin_factory(outputs):
    def build(model, **params):
        return ODIN(model, outputs=outputs, **params)

    return build


for _score in SOFTMAX_SCORES:
    register_detector(_score, _softmax_factory(_score, ID_OUTPUTS))
    register_detector(_score + ALL_OUTPUTS_SUFFIX, _softmax_factory(_score, ALL_OUTPUTS))
register_detector("odin", _odin_factory(ID_OUTPUTS))
register_detector("odin" + ALL_OUTPUTS_SUFFIX, _odin_factory(ALL_OUTPUTS))
register_detector("garbage", GarbageDetector)
register_detector("mahalanobis", Mahalanobis)


def _mahalanobis_pp(model, **params):
    return Mahalanobis(model, normalize=True, **params)


register_detector("mahalanobis++", _mahalanobis_pp)
# Scores whose detector lives with its method (keras_tie.methods.<method>.detector), imported
# on first use: those modules import this package, so importing them here would be circular.
METHOD_DETECTORS = {
    "approximate_mass": ("keras_tie.methods.flow.detector", "flow_factory", ("approximate_mass",)),
    "nll": ("keras_tie.methods.flow.detector", "flow_factory", ("nll",)),
    "repair": ("keras_tie.methods.repair.detector", "repair_factory", ()),
}


def _method_factory(module, name, args):
    def build(model, **params):
        factory = getattr(importlib.import_module(module), name)
        return (factory(*args) if args else factory)(model, **params)

    return build


for _score, _where in METHOD_DETECTORS.items():
    register_detector(_score, _method_factory(*_where))
