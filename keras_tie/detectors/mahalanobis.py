"""Mahalanobis score: class-conditional Gaussians with one shared covariance (Lee et al., 2018).

On the penultimate features f(x) of a classifier, fitted on in-distribution
training data with labels c = 0..n-1::

    mu_c  = mean of f over class c
    Sigma = 1/N * sum_c sum_{i in c} (f_i - mu_c)(f_i - mu_c)^T      (shared, max. likelihood)
    d_c(x) = (f(x) - mu_c)^T Sigma^+ (f(x) - mu_c)                     (squared distance)
    score(x) = min_c d_c(x)                                            (higher = more OOD)

which is minus Lee et al.'s confidence score M(x) = max_c -d_c(x).
Sigma^+ is the Moore-Penrose pseudo-inverse (as Lee et al.'s code, through
scikit-learn's `EmpiricalCovariance`): ReLU features often hold units that
are zero on every training image, which make Sigma singular; the
pseudo-inverse ignores those directions. `ridge` > 0 adds ridge * I first.

`normalize=True` is Mahalanobis++ (Mueller and Hein, ICML 2025): every
feature vector is scaled to unit L2 norm before the fit and the scoring,
f <- f / ||f||. Feature norms vary strongly between images (on the CIFAR-10
preset the mean norm of the max-pooled features is 13.9 on CIFAR-10 test
images, 10.9 on CIFAR-100, 9.3 on MNIST), which breaks the shared-Gaussian
model; on that run the plain distance ranks every real OOD set as *more*
in-distribution than the ID test set (AUROC 37 / 34 / 21 against CIFAR-100,
MNIST, Fashion-MNIST), the normalised one separates them (85 / 98 / 98;
docs/cifar10.md). It is not better on every model (docs/evaluation.md). Registered as the score `mahalanobis++`; `mahalanobis`
stays Lee et al.'s, as the TIE paper's Table 2 uses it.

Optional input pre-processing (Lee et al., eq. 4, `epsilon` > 0): move the
input against the gradient of the distance to the closest class,
x' = x - epsilon * sign(grad_x d_c*(x)), then score x'. Its epsilon has no
default beyond 0 (off): Lee et al. tune it on OOD validation data.

The fit streams over the training images: it holds one batch of features and
float64 accumulators (per-class counts and sums, and the D x D sum of outer
products), never the features of the whole set.
"""

import numpy as np
import tensorflow as tf

from keras_tie.detectors.detector import (
    DEFAULT_BATCH_SIZE,
    ClassifierDetector,
    batch_signature,
    feature_layer,
    iterate_outputs,
)
from keras_tie.models.backbones import FEATURES_LAYER


class ClassGaussians:
    """Streaming estimate of class means and one shared covariance, in float64.

    Sums are taken around a fixed shift (the first batch's mean), which the
    covariance does not depend on, so the subtraction sum f f^T - N mu mu^T
    does not lose the digits that features far from the origin would cost.

    Args:
        num_classes: number of classes (labels 0..num_classes-1).

    Example:

    ```python
    gaussians = ClassGaussians(10)
    for features, labels in batches:
        gaussians.update(features, labels)
    means, covariance, counts = gaussians.result()
    ```
    """

    def __init__(self, num_classes):
        self.num_classes = int(num_classes)
        self.counts = np.zeros(self.num_classes, np.int64)
        self.sums = None
        self.outer = None
        self.shift = None

    def update(self, features, labels):
        """Adds a batch of `features` [B, D] with int `labels` [B] (labels < 0 are skipped)."""
        features = np.asarray(features, np.float64)
        labels = np.asarray(labels).astype(np.int64)
        keep = labels >= 0
        features, labels = features[keep], labels[keep]
        if len(labels) and labels.max() >= self.num_classes:
            raise ValueError(f"Labels must be in 0..{self.num_classes - 1}. "
                             f"Received: label {labels.max()}")
        if not len(labels):
            return
        if self.shift is None:
            self.shift = features.mean(axis=0)
            dim = features.shape[1]
            self.sums = np.zeros((self.num_classes, dim))
            self.outer = np.zeros((dim, dim))
        centred = features - self.shift
        self.counts += np.bincount(labels, minlength=self.num_classes)
        np.add.at(self.sums, labels, centred)
        self.outer += centred.T @ centred

    def result(self):
        """(means [C, D], shared covariance [D, D], counts [C]); unseen classes have NaN means."""
        total = int(self.counts.sum())
        if total == 0:
            raise ValueError("No labelled in-distribution examples were seen: cannot fit "
                             "class Gaussians. Pass images with labels 0..n-1.")
        seen = self.counts > 0
        shifted_means = np.full_like(self.sums, np.nan)
        shifted_means[seen] = self.sums[seen] / self.counts[seen, None]
        # sum_i (f_i - mu_c)(f_i - mu_c)^T = sum_i f_i f_i^T - sum_c n_c mu_c mu_c^T
        between = (shifted_means[seen].T * self.counts[seen]) @ shifted_means[seen]
        covariance = (self.outer - between) / total
        covariance = (covariance + covariance.T) / 2
        return shifted_means + self.shift, covariance, self.counts.copy()


def unit_norm(features):
    """`features` [N, D] scaled to unit L2 norm (an all-zero vector stays zero), in float64."""
    f = np.asarray(features, np.float64)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def mahalanobis_distances(features, means, precision):
    """Squared Mahalanobis distances [N, C] of `features` [N, D] to each of `means` [C, D].

    (f - mu_c) P (f - mu_c)^T = f P f^T - 2 f P mu_c^T + mu_c P mu_c^T for all
    classes at once: one matmul for the cross term, in float64.
    """
    f = np.asarray(features, np.float64)
    means = np.asarray(means, np.float64)
    fp = f @ precision
    distances = (np.sum(fp * f, axis=1, keepdims=True) - 2.0 * fp @ means.T
                 + np.sum((means @ precision) * means, axis=1)[None, :])
    return np.maximum(distances, 0.0)


def fit_together(detectors, images, labels=None, *, batch_size=DEFAULT_BATCH_SIZE, verbose=0):
    """Fits Mahalanobis `detectors` of one model and feature layer in one streamed pass.

    Each batch's features are computed once and added to every detector's
    own Gaussians (unit-normed for the `normalize` ones): `mahalanobis` and
    `mahalanobis++` of an evaluation share the forward pass over the fit images.
    """
    detectors = list(detectors)
    first = detectors[0]
    if any(d.model is not first.model or d.layer_name != first.layer_name for d in detectors):
        raise ValueError("fit_together needs detectors of one model and feature layer. "
                         f"Received: {[(d.name, d.layer_name) for d in detectors]}")
    if labels is None or len(labels) != len(images):
        raise ValueError("Mahalanobis.fit needs one class label per training image. "
                         f"Received: {len(images)} images, labels="
                         f"{None if labels is None else len(labels)}")
    gaussians = [ClassGaussians(d.fit_classes) for d in detectors]
    start = 0
    for features, _ in iterate_outputs(first.model, images, True, batch_size, verbose,
                                       first.layer_name):
        batch_labels = labels[start: start + len(features)]
        for detector, gaussian in zip(detectors, gaussians):
            gaussian.update(detector._prepare(features), batch_labels)
        start += len(features)
    for detector, gaussian in zip(detectors, gaussians):
        detector.fit_statistics(*gaussian.result())
    return detectors


class Mahalanobis(ClassifierDetector):
    """Minimum Mahalanobis distance of the penultimate features to the class means.

    Args:
        model: classifier with a layer named `layer_name` (keras-tie's
            classifiers have `features`).
        epsilon: input pre-processing size in [0, 1] pixel units (0: off).
        ridge: added to the covariance's diagonal before the pseudo-inverse
            (default 0: the plain pseudo-inverse).
        normalize: scale the features to unit L2 norm first (Mahalanobis++;
            default False: Lee et al.'s score).
        num_classes: n; default: the model's outputs minus the garbage class.
        garbage_index: index of the garbage class (the last output), or None.
        layer_name: the layer whose output is the feature vector.
        name: see `Detector`.

    Example:

    ```python
    detector = Mahalanobis(model).fit(train.images, train.labels)
    scores = detector.score(test.images)          # higher = more OOD
    ```

    References:
        Lee, Lee, Lee, Shin. A simple unified framework for detecting
        out-of-distribution samples and adversarial attacks. NeurIPS 2018.
        Mueller, Hein. Mahalanobis++: improving OOD detection via feature
        normalization. ICML 2025 (`normalize=True`).
    """

    needs_fit = True
    needs_features = True

    def __init__(self, model, epsilon=0.0, ridge=0.0, num_classes=None, garbage_index=None,
                 layer_name=FEATURES_LAYER, normalize=False, name=None):
        super().__init__(model, garbage_index, name or "mahalanobis")
        if not epsilon >= 0:
            raise ValueError(f"epsilon must be >= 0. Received: epsilon={epsilon}")
        if not ridge >= 0:
            raise ValueError(f"ridge must be >= 0. Received: ridge={ridge}")
        feature_layer(model, layer_name)  # fails now, not after the fit, if it is absent
        self.epsilon = float(epsilon)
        self.ridge = float(ridge)
        self.normalize = bool(normalize)
        self.layer_name = layer_name
        self.fit_classes = self.num_classes if num_classes is None else int(num_classes)
        self.means = self.covariance = self.precision = self.counts = None
        self._perturbed_features = None

    @property
    def from_outputs(self):
        return self.epsilon == 0.0 and self.layer_name == FEATURES_LAYER

    def fit(self, images, labels=None, *, batch_size=DEFAULT_BATCH_SIZE, verbose=0):
        fit_together([self], images, labels, batch_size=batch_size, verbose=verbose)
        return self

    def fit_features(self, features, labels):
        """Fits from precomputed features [N, D] (one batch: no streaming)."""
        gaussians = ClassGaussians(self.fit_classes)
        gaussians.update(self._prepare(features), labels)
        return self.fit_statistics(*gaussians.result())

    def _prepare(self, features):
        """`features` as the Gaussians see them: unit-normed with `normalize`, else as given."""
        return unit_norm(features) if self.normalize else features

    def fit_statistics(self, means, covariance, counts):
        """Sets the class means, covariance and its (ridged) pseudo-inverse."""
        seen = counts > 0
        self.counts = counts
        self.means = means[seen]
        self.classes = np.flatnonzero(seen)
        self.covariance = covariance
        regularised = covariance + self.ridge * np.eye(len(covariance))
        self.precision = np.linalg.pinv(regularised, hermitian=True)
        self._perturbed_features = None
        return self

    def _check_fitted(self):
        if self.precision is None:
            raise ValueError(f"Mahalanobis detector {self.name!r} is not fitted: call "
                             "fit(train_images, train_labels) first.")

    def distances(self, features):
        """Squared distances [N, C] of raw `features` to each fitted class mean."""
        self._check_fitted()
        return mahalanobis_distances(self._prepare(features), self.means, self.precision)

    def score_outputs(self, features, logits):
        if features is None:
            raise ValueError("Mahalanobis scores need the penultimate features.")
        if len(features) == 0:
            return np.zeros(0, np.float64)
        return self.distances(features).min(axis=1)

    def score_batch(self, x):
        self._check_fitted()
        if self.epsilon == 0.0:
            return super().score_batch(x)
        if self._perturbed_features is None:
            self._perturbed_features = tf.function(self._build_perturbation(),
                                                   input_signature=[batch_signature(self.model)])
        return self.score_outputs(self._perturbed_features(x).numpy(), None)

    def _build_perturbation(self):
        import keras

        features_of = keras.Model(self.model.inputs,
                                  feature_layer(self.model, self.layer_name).output)
        means = tf.constant(self.means, tf.float32)
        precision = tf.constant(self.precision, tf.float32)
        epsilon = self.epsilon
        normalize = self.normalize

        def perturbed_features(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                f = features_of(x, training=False)
                if normalize:
                    f = f / tf.maximum(tf.norm(f, axis=1, keepdims=True), 1e-12)
                fp = f @ precision
                all_distances = (tf.reduce_sum(fp * f, axis=1, keepdims=True)
                                 - 2.0 * fp @ tf.transpose(means)
                                 + tf.reduce_sum((means @ precision) * means, axis=1)[None])
                closest = tf.gather(means, tf.argmin(all_distances, axis=1))
                diff = f - closest
                distance = tf.reduce_sum((diff @ precision) * diff, axis=1)
                # Each distance depends on its own image only: one gradient for the batch.
                total = tf.reduce_sum(distance)
            gradient = tape.gradient(total, x)
            return features_of(x - epsilon * tf.sign(gradient), training=False)

        return perturbed_features

    def get_config(self):
        return {"epsilon": self.epsilon, "ridge": self.ridge, "normalize": self.normalize,
                "inverse": "pseudo-inverse",
                "layer": self.layer_name, "covariance": "shared, maximum likelihood (1/N)"}
