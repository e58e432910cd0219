"""Networks: classifier backbones and the conditional generator.

The RealNVP flow (`keras_tie.methods.flow.realnvp`, with `coupling_net` and
`flow_bijectors`) is imported on its own: it needs tensorflow-probability,
which the classifiers do not.
"""

from keras_tie.models.backbones import (build_classifier, feature_model, float32_copy,
                                        resolve_backbone)
from keras_tie.models.generator import build_generator
