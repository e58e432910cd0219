"""`Detector`: the one interface every OOD score implements.

Sign convention, obeyed by every detector in keras-tie: **a higher score means
more likely out-of-distribution**. OOD examples carry the label -1
(`keras_tie.inference.OOD_LABEL`). Scores that are naturally "higher = more
in-distribution" (the max softmax probability, ODIN's tempered softmax) are
negated.

A detector is an object with `name`, `fit(images, labels)` and
`score(images)`. `fit` learns from in-distribution training data where the
score needs it (Mahalanobis) and is a no-op otherwise; `score` returns one
float per image as a numpy array, scoring in batches. Nothing here assumes a
classifier: a subclass only implements `score_batch` (float pixels in, scores
out), so a flow's log-likelihood or a repair distance fits the same API.
`ClassifierDetector` adds what the classifier-based scores share: one forward
pass through the classifier gives the penultimate features and the logits,
and scores computed from those (`score_outputs`) can share that pass.
"""

import weakref

import keras
import numpy as np
import tensorflow as tf

from keras_tie.models.backbones import FEATURES_LAYER

# Images per forward pass: large enough to keep a CPU busy, small enough that
# a batch of 32x32x3 features and gradients stays far below 100 MB.
DEFAULT_BATCH_SIZE = 256
HIGHER_IS_MORE_OOD = "higher score = more likely OOD"


class Detector:
    """Base class of OOD detectors: `fit` on in-distribution data, then `score`.

    Subclasses implement `score_batch`; those that learn from training data
    set `needs_fit = True` and override `fit`.

    Args:
        name: the name reported with the scores (the registry name when built
            by `get_detector`).

    Example:

    ```python
    class MeanPixel(Detector):
        def score_batch(self, x):
            return tf.reduce_mean(x, axis=[1, 2, 3])  # brighter = more OOD

    MeanPixel(name="brightness").score(images)
    ```
    """

    needs_fit = False

    def __init__(self, name=None):
        self.name = name or type(self).__name__.lower()

    def fit(self, images, labels=None, *, batch_size=DEFAULT_BATCH_SIZE, verbose=0):
        """Learns from in-distribution training data; a no-op unless `needs_fit`.

        Args:
            images: uint8 pixels or float pixels in [0, 1], `[N, H, W, C]`.
            labels: int labels `[N]` (examples labelled -1 are ignored).
            batch_size: images per forward pass.
            verbose: 1 shows a `keras.utils.Progbar`.

        Returns:
            The detector.
        """
        return self

    def score(self, images, *, batch_size=DEFAULT_BATCH_SIZE, verbose=0):
        """Scores `images` (uint8 or float pixels in [0, 1]); higher = more OOD.

        Returns:
            A float64 numpy array `[N]`.
        """
        scores = [np.asarray(self.score_batch(tf.constant(x)), np.float64)
                  for x in pixel_batches(images, batch_size, verbose)]
        return np.concatenate(scores) if scores else np.zeros(0, np.float64)

    def score_batch(self, x):
        """Scores one batch of float32 pixels in [0, 1] (a tensor `[B, H, W, C]`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement score_batch(x).")

    def get_config(self):
        """The parameters that define the score (recorded in evaluation reports)."""
        return {}

    def __repr__(self):
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}(name={self.name!r}{', ' if params else ''}{params})"


class ClassifierDetector(Detector):
    """A detector computed from a classifier's (features, logits).

    Args:
        model: a classifier taking float pixels in [0, 1] and returning logits.
        garbage_index: index of the garbage class (the last output), or None
            for a plain n-class classifier.
        name: see `Detector`.

    Subclasses implement `score_outputs(features, logits)` (numpy in, numpy
    out) and set `needs_features`; an evaluation can then run the forward
    pass once (`classifier_outputs`) and derive every such score from it.
    Scores that need gradients (ODIN, Mahalanobis with input pre-processing)
    set `from_outputs` to False and implement `score_batch` instead.
    """

    needs_features = False
    layer_name = FEATURES_LAYER

    def __init__(self, model, garbage_index=None, name=None):
        super().__init__(name)
        if model is None:
            raise ValueError(f"{type(self).__name__} scores a classifier. Received: model=None")
        self.model = model
        self.num_outputs = int(model.outputs[0].shape[-1])
        if garbage_index is not None and int(garbage_index) != self.num_outputs - 1:
            raise ValueError(
                "The garbage class must be the last output (keras-tie's layout, index n). "
                f"Received: garbage_index={garbage_index} for a model with {self.num_outputs} "
                "outputs.")
        self.garbage_index = None if garbage_index is None else int(garbage_index)

    @property
    def num_classes(self):
        """n: the in-distribution classes (the outputs minus the garbage class)."""
        return self.num_outputs - (self.garbage_index is not None)

    @property
    def from_outputs(self):
        """Whether `score_outputs` gives the score from one plain forward pass."""
        return True

    def score_batch(self, x):
        features, logits = forward_outputs(self.model, self.needs_features, self.layer_name)(x)
        return self.score_outputs(None if features is None else features.numpy(), logits.numpy())

    def score_outputs(self, features, logits):
        """Scores from the penultimate `features` ([N, D] or None) and `logits` ([N, K])."""
        raise NotImplementedError(f"{type(self).__name__} must implement score_outputs.")


def pixel_batches(images, batch_size=DEFAULT_BATCH_SIZE, verbose=0):
    """Yields float32 batches in [0, 1] of `images` (uint8 pixels are divided by 255).

    Only one batch is converted at a time, so a uint8 set is never copied to
    float as a whole. `verbose=1` shows a `keras.utils.Progbar` over images.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    count = len(images)
    progress = keras.utils.Progbar(count, unit_name="image") if verbose and count else None
    for start in range(0, count, batch_size):
        chunk = np.asarray(images[start: start + batch_size])
        yield chunk.astype(np.float32) / 255.0 if chunk.dtype == np.uint8 \
            else chunk.astype(np.float32, copy=False)
        if progress is not None:
            progress.update(min(start + batch_size, count))


def iterate_outputs(model, images, with_features, batch_size=DEFAULT_BATCH_SIZE, verbose=0,
                    layer_name=FEATURES_LAYER):
    """Yields (features or None, logits) of `model` per batch of `images`, as numpy."""
    forward = forward_outputs(model, with_features, layer_name)
    for x in pixel_batches(images, batch_size, verbose):
        features, logits = forward(tf.constant(x))
        yield (None if features is None else features.numpy()), logits.numpy()


def classifier_outputs(model, images, with_features, batch_size=DEFAULT_BATCH_SIZE, verbose=0):
    """(features [N, D] or None, logits [N, K]) of `model` on all of `images`: one forward pass."""
    features, logits = [], []
    for f, l in iterate_outputs(model, images, with_features, batch_size, verbose):
        features.append(f)
        logits.append(l)
    width = int(model.outputs[0].shape[-1])
    logits = np.concatenate(logits) if logits else np.zeros((0, width), np.float32)
    if not with_features:
        return None, logits
    if not features:
        return np.zeros((0, int(feature_layer(model).output.shape[-1])), np.float32), logits
    return np.concatenate(features), logits


def feature_layer(model, layer_name=FEATURES_LAYER):
    """The layer whose output is the penultimate features, with a clear error if absent."""
    try:
        return model.get_layer(layer_name)
    except ValueError as error:
        raise ValueError(
            f"The model has no layer named {layer_name!r}, whose output the feature-based "
            "scores use as penultimate features. keras-tie classifiers name it "
            f"{FEATURES_LAYER!r}. Received: model={model.name!r}") from error


_FORWARDS = weakref.WeakKeyDictionary()


def forward_outputs(model, with_features, layer_name=FEATURES_LAYER):
    """A traced function x -> (features or None, logits), one per model and mode."""
    per_model = _FORWARDS.setdefault(model, {})
    key = (bool(with_features), layer_name)
    if key not in per_model:
        if with_features:
            both = keras.Model(model.inputs, [feature_layer(model, layer_name).output,
                                              model.outputs[0]])
            forward = lambda x: tuple(both(x, training=False))  # noqa: E731
        else:
            forward = lambda x: (None, model(x, training=False))  # noqa: E731
        per_model[key] = tf.function(forward, input_signature=[batch_signature(model)])
    return per_model[key]


def batch_signature(model):
    """A float32 TensorSpec of any batch of `model`'s input, so a function is traced once."""
    return tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32)
