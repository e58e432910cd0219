"""keras-tie: classifiers that know what they don't know.

Out-of-distribution detection and uncertainty estimation for Keras 3 image
classifiers: TIE (Training-Inversion-Exclusion), approximate-mass flows, CVAE
outlier generation, sample repairing and the standard OOD scores.

Importing this package is cheap: heavy modules (TensorFlow, Keras) load when a
submodule that needs them is imported.
"""

from keras_tie._backend import ensure_tensorflow_backend

__version__ = "0.1.0"

ensure_tensorflow_backend()
