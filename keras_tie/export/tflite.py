"""TFLite conversions of an exported SavedModel: float32, float16 and full-integer int8.

Each variant is converted from the SavedModel's `serving_default` signature
(`TFLiteConverter.from_keras_model` does not take Keras 3 models), so it holds
the same graph: non-finite pixels rejected, the score and the two-level rule
inside. Only TFLite builtin operators are allowed (no Flex / SELECT_TF_OPS):
the files run in the plain `ai_edge_litert` interpreter and on devices
without the TensorFlow ops library; `operators` checks it after conversion.

| variant | weights | activations | input / outputs |
|---|---|---|---|
| `float32` | float32 | float32 | as the SavedModel |
| `float16` | float16 (dequantised on load) | float32 | as the SavedModel |
| `int8` | int8 | int8 | as the SavedModel: float32 pixels in, float32 / int32 / bool out |

The int8 variant keeps float32 input and outputs, so a client sends the same
pixels to every variant and reads `label` as an int and `probabilities` as
floats; the converter puts the quantise and dequantise steps inside. Its
ranges are calibrated on representative in-distribution training images.
The non-finite check reads the input's bits as integers before the first
quantise step, so int8 rejects NaN pixels like the float variants do.
"""

VARIANTS = ("float32", "float16", "int8")

VARIANT_NOTES = {
    "float32": {"weights": "float32", "activations": "float32"},
    "float16": {"weights": "float16", "activations": "float32"},
    "int8": {"weights": "int8", "activations": "int8",
             "io": "float32 input, float32/int32/bool outputs (quantised inside)"},
}


def check_variants(variants):
    """`variants` (names or one comma-separated string) as a tuple, in VARIANTS order."""
    if isinstance(variants, str):
        variants = [v for v in variants.split(",") if v.strip()]
    variants = [v.strip() for v in variants or ()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"Unknown TFLite variant. Received: {', '.join(unknown)}; expected any "
                         f"of {', '.join(VARIANTS)}.")
    return tuple(v for v in VARIANTS if v in variants)


def convert(saved_model_dir, variant, representative_images=None):
    """The .tflite bytes of the `serving_default` signature of `saved_model_dir`.

    Args:
        saved_model_dir: a SavedModel folder (a version folder of an export).
        variant: `float32`, `float16` or `int8`.
        representative_images: int8 only: float32 pixels in [0, 255],
            `[N, H, W, C]` (a few hundred in-distribution training images).

    Raises:
        ValueError: unknown variant, int8 without images, or a converted
            model that needs an operator outside the TFLite builtins.
    """
    import tensorflow as tf

    from keras_tie.export.savedmodel import INPUT_NAME, SIGNATURE

    if variant not in VARIANTS:
        check_variants([str(variant)])  # raises, naming the variants
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir,
                                                         signature_keys=[SIGNATURE])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        if representative_images is None or len(representative_images) == 0:
            raise ValueError("The int8 variant needs representative images to calibrate its "
                             "ranges. Received: representative_images=None")
        images = representative_images

        def representative_dataset():
            for i in range(len(images)):
                yield {INPUT_NAME: images[i:i + 1]}

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    model_bytes = converter.convert()
    custom = [op for op in operators(model_bytes) if op.startswith("CUSTOM:")]
    if custom:
        raise ValueError(f"The {variant} TFLite model needs operators outside the TFLite "
                         f"builtins: {', '.join(custom)}. It would not run in a plain LiteRT "
                         "interpreter.")
    return model_bytes


def operators(model_bytes):
    """Sorted names of the operators a .tflite model uses; a custom or Flex op as `CUSTOM:name`."""
    from ai_edge_litert import schema_py_generated as schema

    names = {value: name for name, value in vars(schema.BuiltinOperator).items()
             if not name.startswith("_")}
    model = schema.Model.GetRootAs(bytearray(model_bytes), 0)
    found = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        # Codes above 127 live in BuiltinCode; the deprecated int8 field saturates at 127.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            found.add("CUSTOM:" + (code.CustomCode() or b"?").decode())
        else:
            found.add(names.get(builtin, f"BUILTIN_{builtin}"))
    return sorted(found)
