"""Checks that Keras runs on the TensorFlow backend before anything else imports Keras."""

import os

_REQUIRED = "tensorflow"


def ensure_tensorflow_backend():
    """Sets KERAS_BACKEND=tensorflow if unset, and refuses any other backend.

    keras-tie uses tf.data, tf.GradientTape, SavedModel export and TFLite, so it
    cannot run on JAX or PyTorch.
    """
    requested = os.environ.get("KERAS_BACKEND")
    if requested is None:
        os.environ["KERAS_BACKEND"] = _REQUIRED
    elif requested != _REQUIRED:
        raise RuntimeError(
            "keras-tie needs the TensorFlow backend of Keras. "
            f"Received: KERAS_BACKEND={requested!r}. Unset it or set KERAS_BACKEND=tensorflow."
        )
    import sys

    if "keras" in sys.modules:
        import keras

        actual = keras.backend.backend()
        if actual != _REQUIRED:
            raise RuntimeError(
                "keras-tie needs the TensorFlow backend of Keras, but Keras was already imported "
                f"with backend={actual!r}. Set KERAS_BACKEND=tensorflow before importing keras."
            )
