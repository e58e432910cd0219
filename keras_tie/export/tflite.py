"""TFLite conversions of an exported SavedModel: float32, float16, int8 and full-integer int8.

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
| `int8` | int8 (first convolution and logits layer float32) | int8 up to the logits; the head in float32 | as the SavedModel |
| `int8_full` | int8 | int8 everywhere | as the SavedModel |

Every variant keeps float32 input and outputs, so a client sends the same
pixels to every variant and reads `label` as an int and `probabilities` as
floats; the converter puts the quantise and dequantise steps inside. The int8
ranges are calibrated on representative in-distribution training images.
The non-finite check reads the input's bits as integers before the first
quantise step, so the int8 files reject NaN pixels like the float ones do.

Why `int8` keeps its head in float: an int8 softmax has a resolution of 1/256,
so no probability exceeds 255/256 and the UE of a confident image cannot go
below about 0.0086, while tau_T of a trained run is often smaller (0.0085 on
the MNIST preset): the fully quantised file then rejects images the server
accepts (98.75% equal labels on MNIST test against 99.8% with the float head;
benchmarks/export_benchmark.py). The head (softmax, UE, score, two-level rule)
is a few vector operations on n + 1 numbers per image, so it costs nothing
measurable; the convolutions and dense layers stay int8 (all but two, below)
and the file keeps its size. `int8_full` quantises the head too, for integer-only accelerators
(Edge TPU, NPUs, microcontrollers without a float unit), at that parity cost.

`int8` also keeps two layers in float32, the usual "first and last layer in
higher precision" of post-training quantisation: the first convolution (it
reads the raw pixels, whose quantisation error every later layer inherits)
and the layer that computes the logits (its output feeds the UE and the
two-level rule directly, so its rounding moves images across tau_T). Both are
small: on the CIFAR-10 preset they add 10 KB to a 2.0 MB file and move the
labels' agreement with the SavedModel from 98.96% to 99.05% of the test set;
keeping the last convolution too (+1.8 MB) gains nothing more
(docs/experiments.md, "int8 export calibration"). They are found by position
in the float model (the first CONV_2D, the last FULLY_CONNECTED) and
denylisted by name (`float_layer_names`).
"""

VARIANTS = ("float32", "float16", "int8", "int8_full")
INT8_VARIANTS = ("int8", "int8_full")

# Operators of the head after the logits (softmax, UE, scores, two-level rule) that
# the `int8` variant keeps in float32; see the module docstring.
FLOAT_HEAD_OPS = ("SOFTMAX", "LOG_SOFTMAX", "SQUARE", "SUM", "SUB", "MUL", "DIV", "EXP", "LOG",
                  "REDUCE_MAX", "MAXIMUM", "MINIMUM", "GREATER", "LESS", "ARG_MAX")

VARIANT_NOTES = {
    "float32": {"weights": "float32", "activations": "float32"},
    "float16": {"weights": "float16", "activations": "float32"},
    "int8": {"weights": "int8 (first convolution and logits layer float32)",
             "activations": "int8 up to the logits, float32 head",
             "io": "float32 input, float32/int32/bool outputs (quantised inside)"},
    "int8_full": {"weights": "int8", "activations": "int8",
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


def int8_ue_floor(num_outputs):
    """The smallest UE an int8 softmax over `num_outputs` classes can give.

    Its outputs are multiples of 1/256 below 1, so a confident image gets at
    best p = (255/256, 1/256, 0, ...): UE = K/(K-1) * (1 - sum p^2).
    """
    k = float(num_outputs)
    return k / (k - 1.0) * (1.0 - (255 / 256) ** 2 - (1 / 256) ** 2)


def convert(saved_model_dir, variant, representative_images=None):
    """The .tflite bytes of the `serving_default` signature of `saved_model_dir`.

    Args:
        saved_model_dir: a SavedModel folder (a version folder of an export).
        variant: `float32`, `float16`, `int8` or `int8_full`.
        representative_images: int8 variants only: float32 pixels in [0, 255],
            `[N, H, W, C]` (a few hundred in-distribution training images).

    Raises:
        ValueError: unknown variant, int8 without images, or a converted
            model that needs an operator outside the TFLite builtins.
    """
    import tensorflow as tf

    from keras_tie.export.signature import INPUT_NAME, SIGNATURE

    if variant not in VARIANTS:
        check_variants([str(variant)])  # raises, naming the variants
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir,
                                                         signature_keys=[SIGNATURE])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant in INT8_VARIANTS:
        if representative_images is None or len(representative_images) == 0:
            raise ValueError(f"The {variant} variant needs representative images to calibrate "
                             "its ranges. Received: representative_images=None")
        images = representative_images

        def representative_dataset():
            for i in range(len(images)):
                yield {INPUT_NAME: images[i:i + 1]}

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        if variant == "int8":
            # Int8 kernels where they exist, float32 for the denylisted head operators.
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                                   tf.lite.OpsSet.TFLITE_BUILTINS]
            options = tf.lite.experimental.QuantizationDebugOptions(
                denylisted_ops=list(FLOAT_HEAD_OPS),
                denylisted_nodes=float_layer_names(_float_model(saved_model_dir)))
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=representative_dataset,
                debug_options=options)
            return _builtin_only(debugger.get_nondebug_quantized_model(), variant)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return _builtin_only(converter.convert(), variant)


def _float_model(saved_model_dir):
    import tensorflow as tf

    from keras_tie.export.signature import SIGNATURE

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir,
                                                         signature_keys=[SIGNATURE])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def float_layer_names(model_bytes):
    """Output tensor names of the layers the `int8` variant keeps in float32.

    In the float .tflite `model_bytes`: the first CONV_2D (the first layer of
    every keras-tie backbone) and the last FULLY_CONNECTED (the logits layer:
    the head after it has no dense layer). A model without one of them gives
    fewer names.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(bytearray(model_bytes), 0)
    graph = model.Subgraphs(0)
    convs, denses = [], []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CONV_2D:
            convs.append(op.Outputs(0))
        elif builtin == schema.BuiltinOperator.FULLY_CONNECTED:
            denses.append(op.Outputs(0))
    return [graph.Tensors(t).Name().decode() for t in convs[:1] + denses[-1:]]


def _builtin_only(model_bytes, variant):
    """`model_bytes`, or a ValueError if the model needs an operator outside the builtins."""
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
