"""Networks: classifier backbones and the conditional generator."""

from keras_tie.models.backbones import build_classifier, feature_model, resolve_backbone
from keras_tie.models.generator import build_generator
