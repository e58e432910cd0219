"""Classifier backbones of the TIE paper (001_b369f55403bc771c.txt, section 6.1).

Every classifier is a functional `keras.Model` taking float pixels in [0, 1]
(shape H x W x C) and returning logits. It standardises its input itself with a
`Normalization` layer holding the training set's per-channel mean and
variance, so saved models, exports and detectors all take plain pixels. The
penultimate features are the output of the layer named `features` (see
`feature_model`); Mahalanobis scores and the inversion's diversity loss use
them.

- `conv3` (28x28 inputs): three conv layers (width, 2x, 4x channels, 3x3, each
  followed by BatchNormalization, ReLU and 2x2 max-pooling) and two dense
  layers (`dense_units` with BatchNormalization and ReLU, then the logits).
- `conv5` (32x32 inputs): five conv layers (width, width, 2x, 2x, 4x, pooling
  after the 2nd, 4th and 5th) and the same two dense layers.
- `resnet` (CIFAR-100, TinyImageNet): a conv stem and three stages of two
  pre-activation-free basic residual blocks (width, 2x, 4x channels, stride 2
  between stages), global average pooling, then the same two dense layers.
- `airbench` (32x32, the CIFAR-10 preset): the network of the airbench
  CIFAR-10 speed-run recipes (Keller Jordan, 2024), with a 3x3 stem instead
  of their 2x2 whitening convolution: a stem conv (width / 2 channels), then
  three blocks (width, 4x, 4x channels) of conv -> 2x2 max-pooling -> BN ->
  ReLU -> conv -> BN -> ReLU, global max-pooling, then the logits. Its
  penultimate features are the pooled 4 * width channels (`dense_units` is
  not used). At width 64 it has 2.0 M parameters and about 0.24 GFLOP per
  image; the public recipes train it to 94% in 10 epochs.
- `cnn2` (28x28): the classifier of the CVAE paper's released code
  (002_50acf6af2ae3a4e5.txt cites github.com/sverneka/OODGen; its appendix
  figure is missing from our copy): two 3x3 `valid` conv layers (width, 2x
  channels) with ReLU, one 2x2 max-pooling, dropout 0.25, then a dense layer
  (`dense_units`, ReLU) and the logits. No BatchNormalization; the authors put
  dropout 0.5 before the logits, which is `dropout=0.5` here.
"""

import contextlib

import keras
from keras import layers

from keras_tie.config import FEATURE_POOLINGS, GLOBAL_POOLING_BACKBONES, PRECISIONS

FEATURES_LAYER = "features"
CNN2_CONV_DROPOUT = 0.25  # OODGen's classifier: Dropout(0.25) after the pooling


def resolve_backbone(name, image_shape):
    """Chooses the paper's backbone for `auto`: conv3 up to 28x28, else conv5."""
    if name != "auto":
        return name
    return "conv3" if max(image_shape[:2]) <= 28 else "conv5"


def build_classifier(image_shape, num_outputs, backbone="auto", width=32, dense_units=256,
                     mean=None, variance=None, bn_momentum=0.99, dropout=0.0,
                     name="classifier", precision="float32", pooling="auto"):
    """Builds a classifier returning `num_outputs` logits.

    Args:
        image_shape: (H, W, C) of the input pixels in [0, 1].
        num_outputs: number of logits (n for a plain classifier, n + 1 with a
            garbage class at index n).
        backbone: `conv3`, `conv5`, `resnet`, `cnn2` or `auto`.
        width: channels of the first conv layer.
        dense_units: size of the penultimate features.
        mean, variance: per-channel statistics of the training pixels for the
            input standardisation (defaults: 0.5 and 0.25).
        bn_momentum: momentum of the BatchNormalization moving statistics
            (Keras' 0.99 by default; 0.9, PyTorch's default, suits runs of a
            few hundred steps, whose moving statistics would otherwise still
            remember their initial values).
        dropout: rate of a `Dropout` layer (named `dropout`) between the
            penultimate features and the logits; 0 adds none. The features
            themselves are never dropped out.
        precision: `float32`, or `mixed_bfloat16` (Keras mixed precision: the
            conv and BatchNormalization layers compute in bfloat16 and keep
            float32 weights). The input standardisation, the `features` layer
            and the logits stay float32 in both, so features, probabilities
            and every score are float32. The policy is saved with the model.
        pooling: how `airbench` and `resnet` pool their last feature map:
            "auto" (airbench: global max-pooling, as in the public recipes;
            resnet: global average pooling), "max" or "avg". The other
            backbones flatten and take "auto" only.

    Returns:
        A functional `keras.Model`; `model.get_layer("features")` gives the
        penultimate features.
    """
    image_shape = tuple(int(d) for d in image_shape)
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (H, W, C). Received: image_shape={image_shape}")
    channels = image_shape[-1]
    mean = [0.5] * channels if mean is None else list(mean)
    variance = [0.25] * channels if variance is None else list(variance)
    backbone = resolve_backbone(backbone, image_shape)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}. "
                         f"Received: precision={precision!r}")
    if pooling not in FEATURE_POOLINGS:
        raise ValueError(f"pooling must be one of {FEATURE_POOLINGS}. "
                         f"Received: pooling={pooling!r}")
    if pooling != "auto" and backbone not in GLOBAL_POOLING_BACKBONES:
        raise ValueError(f"pooling={pooling!r} needs a backbone that pools globally "
                         f"{GLOBAL_POOLING_BACKBONES}; backbone={backbone!r} flattens. "
                         "Use pooling='auto'.")
    if pooling == "auto":
        pooling = "max" if backbone == "airbench" else "avg"
    with _dtype_policy(precision):
        return _build(image_shape, num_outputs, backbone, width, dense_units, mean, variance,
                      bn_momentum, dropout, name, pooling)


@contextlib.contextmanager
def _dtype_policy(policy):
    """Keras' global dtype policy set to `policy` while layers are created, then restored."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _build(image_shape, num_outputs, backbone, width, dense_units, mean, variance, bn_momentum,
           dropout, name, pooling):
    inputs = keras.Input(image_shape, name="pixels")
    x = layers.Normalization(axis=-1, mean=mean, variance=variance, name="standardize",
                             dtype="float32")(inputs)
    if backbone == "conv3":
        for i, filters in enumerate((width, 2 * width, 4 * width)):
            x = _conv_bn_relu(x, filters, f"conv{i + 1}", bn_momentum)
            x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
        x = layers.Flatten(name="flatten")(x)
    elif backbone == "conv5":
        plan = ((width, False), (width, True), (2 * width, False), (2 * width, True),
                (4 * width, True))
        for i, (filters, pool) in enumerate(plan):
            x = _conv_bn_relu(x, filters, f"conv{i + 1}", bn_momentum)
            if pool:
                x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
        x = layers.Flatten(name="flatten")(x)
    elif backbone == "resnet":
        x = _conv_bn_relu(x, width, "stem", bn_momentum)
        for stage, filters in enumerate((width, 2 * width, 4 * width)):
            for block in range(2):
                stride = 2 if stage > 0 and block == 0 else 1
                x = _residual_block(x, filters, stride, f"stage{stage + 1}_block{block + 1}",
                                    bn_momentum)
        x = _global_pooling(pooling, name="gap")(x)
    elif backbone == "airbench":
        x = _conv_bn_relu(x, max(width // 2, 1), "stem", bn_momentum)
        for block, filters in enumerate((width, 4 * width, 4 * width)):
            name_ = f"block{block + 1}"
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                              name=f"{name_}_conv1")(x)
            x = layers.MaxPooling2D(2, name=f"{name_}_pool")(x)
            x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name_}_conv1_bn")(x)
            x = layers.ReLU(name=f"{name_}_conv1_relu")(x)
            x = _conv_bn_relu(x, filters, f"{name_}_conv2", bn_momentum)
    elif backbone == "cnn2":
        for i, filters in enumerate((width, 2 * width)):
            x = layers.Conv2D(filters, 3, activation="relu", name=f"conv{i + 1}")(x)
        x = layers.MaxPooling2D(2, name="pool1")(x)
        x = layers.Dropout(CNN2_CONV_DROPOUT, name="conv_dropout")(x)
        x = layers.Flatten(name="flatten")(x)
    else:
        raise ValueError(
            f"Unknown backbone. Received: backbone={backbone!r}; expected conv3, conv5, "
            "resnet, airbench, cnn2 or auto."
        )
    if backbone == "airbench":
        features = _global_pooling(pooling, name=FEATURES_LAYER, dtype="float32")(x)
    elif backbone == "cnn2":
        features = layers.Dense(dense_units, activation="relu", name=FEATURES_LAYER,
                                dtype="float32")(x)
    else:
        x = layers.Dense(dense_units, use_bias=False, name="dense1")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name="dense1_bn")(x)
        features = layers.ReLU(name=FEATURES_LAYER, dtype="float32")(x)
    x = layers.Dropout(dropout, name="dropout")(features) if dropout > 0 else features
    logits = layers.Dense(num_outputs, name="logits", dtype="float32")(x)
    return keras.Model(inputs, logits, name=name)


def float32_copy(classifier):
    """`classifier` with every layer computing in float32, sharing no state with it.

    A `mixed_bfloat16` classifier (`precision`) trains fast on hardware with
    bfloat16 units, but TFLite has no bfloat16 kernels and a CPU without them
    emulates the type slowly, so exports run the float32 network: the same
    float32 weights, each layer's policy set to float32. A classifier that is
    float32 throughout is returned as it is.
    """
    if all(layer.dtype_policy.name == "float32" for layer in classifier.layers):
        return classifier

    def as_float32(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    copy = keras.models.clone_model(classifier, clone_function=as_float32)
    copy.set_weights(classifier.get_weights())
    return copy


def feature_model(classifier):
    """A model sharing `classifier`'s layers that returns (features, logits)."""
    return keras.Model(
        classifier.input,
        [classifier.get_layer(FEATURES_LAYER).output, classifier.outputs[0]],
        name=f"{classifier.name}_features",
    )


def _global_pooling(kind, **kwargs):
    if kind == "max":
        return layers.GlobalMaxPooling2D(**kwargs)
    return layers.GlobalAveragePooling2D(**kwargs)


def _conv_bn_relu(x, filters, name, bn_momentum, stride=1):
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                      name=name)(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _residual_block(x, filters, stride, name, bn_momentum):
    shortcut = x
    y = _conv_bn_relu(x, filters, f"{name}_conv1", bn_momentum, stride=stride)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_conv2_bn")(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                 name=f"{name}_proj")(shortcut)
        shortcut = layers.BatchNormalization(momentum=bn_momentum,
                                                 name=f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)
