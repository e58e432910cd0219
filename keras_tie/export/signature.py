"""The exported model's interface, shared by the SavedModel writer and the TFLite converter:
the signature TF Serving and LiteRT call, and its input's name."""

SIGNATURE = "serving_default"
INPUT_NAME = "images"
