"""`PerceptualDistance`: the LPIPS-style distance on a frozen in-distribution network.

The perception network phi of SR-OOD (paper, eq. 3) is, in keras-tie, any
Keras model that takes float pixels in [0, 1]: by default the classifier of a
keras-tie run folder (its model.keras), whose conv layers are named conv1,
conv2, ... with their BatchNormalization and ReLU layers `convK_bn`,
`convK_relu` (keras_tie/models/backbones.py). Its activations are taken at
named layers, by default the ReLU output of every conv layer (`convK_relu`;
the raw conv output where a conv has no `_relu` layer): LPIPS also reads
post-ReLU maps. The network is frozen and always run in inference mode, so
its BatchNormalization uses its moving statistics.
"""

import os

import keras
import tensorflow as tf

from keras_tie import run_folder
from keras_tie.methods.repair.distance import layer_distance


def default_layers(network):
    """Every Conv2D layer of `network`, as its `_relu` layer where one exists."""
    names = [layer.name for layer in network.layers]
    chosen = []
    for layer in network.layers:
        if isinstance(layer, keras.layers.Conv2D):
            relu = f"{layer.name}_relu"
            chosen.append(relu if relu in names else layer.name)
    if not chosen:
        raise ValueError(
            f"The perception network {network.name!r} has no Conv2D layer to take activations "
            "from. Name its layers with repair.layers (e.g. layers = [\"conv1_relu\"]). "
            f"Its layers: {', '.join(names)}")
    return chosen


def load_perception_network(path):
    """The perception network of a run folder (its model.keras) or of a .keras file.

    Raises:
        ValueError: the path does not exist, or holds no model.keras.
    """
    if os.path.isdir(path):
        model_file = run_folder.run_path(path, run_folder.MODEL_FILE)
        if not os.path.isfile(model_file):
            raise ValueError(
                f"The perception network folder has no model.keras. Received: "
                f"repair.perceptual={path!r}. Pass a classifier run folder of `keras-tie train` "
                "(e.g. --method plain) or a .keras file.")
    elif os.path.isfile(path):
        model_file = path
    else:
        raise ValueError(f"Perception network not found. Received: repair.perceptual={path!r}. "
                         "Pass a classifier run folder or a .keras model file.")
    return run_folder.load_model(model_file)


@keras.saving.register_keras_serializable(package="keras_tie")
class PerceptualDistance(keras.layers.Layer):
    """LPIPS-style distance on the activations of a frozen network, one value per image.

    `call(x, y)` returns `sum_l layer_distance(phi_l(x), phi_l(y))` (see
    `keras_tie.methods.repair.distance`); `per_layer(x, y)` the terms `[B, L]`. x and
    y go through the network in one batch.

    Args:
        features: a Keras model, pixels in [0, 1] -> the list of activations
            (`from_network` builds it).
        layer_names: the layers those activations come from (reporting only).

    Example:

    ```python
    classifier = run_folder.load_model("runs/cifar10_plain/model.keras")
    distance = PerceptualDistance.from_network(classifier)   # conv1_relu ... conv5_relu
    d = distance(x, repaired)                                 # [B], 0 where x == repaired
    ```
    """

    def __init__(self, features, layer_names, **kwargs):
        super().__init__(**kwargs)
        features.trainable = False
        self.features = features
        self.layer_names = tuple(layer_names)
        if len(self.layer_names) != len(features.outputs):
            raise ValueError(f"features has {len(features.outputs)} outputs but "
                             f"{len(self.layer_names)} layer names. Received: "
                             f"layer_names={list(layer_names)}")
        self.image_shape = tuple(int(d) for d in features.inputs[0].shape[1:])
        self.built = True

    @classmethod
    def from_network(cls, network, layers=None):
        """Takes `network`'s activations at `layers` (default: `default_layers`)."""
        layers = list(layers) if layers else default_layers(network)
        available = [layer.name for layer in network.layers]
        unknown = [name for name in layers if name not in available]
        if unknown:
            raise ValueError(f"The perception network has no layer {', '.join(unknown)}. "
                             f"Received: repair.layers={layers}. Its layers: "
                             f"{', '.join(available)}")
        if len(network.inputs) != 1 or len(network.inputs[0].shape) != 4:
            raise ValueError("The perception network takes one image batch [B, H, W, C]. "
                             f"Received: inputs {[tuple(i.shape) for i in network.inputs]}")
        features = keras.Model(network.inputs, [network.get_layer(n).output for n in layers],
                               name=f"{network.name}_perceptual")
        return cls(features, layers)

    def per_layer(self, x, y):
        """`[B, L]`: each layer's term of the distance."""
        batch = tf.shape(x)[0]
        activations = self.features(tf.concat([x, y], axis=0), training=False)
        if not isinstance(activations, (list, tuple)):
            activations = [activations]
        return tf.stack([layer_distance(a[:batch], a[batch:]) for a in activations], axis=-1)

    def call(self, x, y):
        return tf.reduce_sum(self.per_layer(x, y), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(features=keras.saving.serialize_keras_object(self.features),
                      layer_names=list(self.layer_names))
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["features"] = keras.saving.deserialize_keras_object(config["features"])
        return cls(**config)
