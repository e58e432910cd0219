"""TF Serving's REST predict API, answered in-process from a loaded SavedModel.

TF Serving answers `POST /v1/models/NAME[/versions/N]:predict` with a JSON
body in one of two formats (https://www.tensorflow.org/tfx/serving/api_rest):

- row format: `{"signature_name": ..., "instances": [instance, ...]}`, an
  instance being the input's value for one example, or `{"images": value}`;
  answered `{"predictions": [...]}`: per instance, an object of all outputs
  (the bare value when the signature has a single output);
- columnar format: `{"signature_name": ..., "inputs": value}` or
  `{"inputs": {"images": value}}`, the whole batch at once; answered
  `{"outputs": {"label": [...], ...}}` (the bare value for a single output).

A request TF Serving would refuse is answered `{"error": message}` (TF
Serving's HTTP 400 body). `rest_predict` lets tests and tools check what a
client sends and receives without the TF Serving binary; the messages name
the shape the model expects.
"""

import json
import os

import numpy as np

from keras_tie.export.savedmodel import SIGNATURE, version_dir


def load_signatures(path):
    """The loaded SavedModel of an export folder or version folder (for `rest_predict`)."""
    import tensorflow as tf

    return tf.saved_model.load(version_dir(os.fspath(path)))


def rest_predict(model, body):
    """The response body TF Serving's REST predict API returns for `body`.

    Args:
        model: a loaded SavedModel (`load_signatures` or
            `tf.saved_model.load`), or the path of an export.
        body: the request body: a JSON string/bytes or the parsed dict.

    Returns:
        `{"predictions": [...]}` (row format), `{"outputs": ...}` (columnar
        format) or `{"error": message}`.
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_signatures(model)
    try:
        request = json.loads(body) if isinstance(body, (str, bytes, bytearray)) else body
    except json.JSONDecodeError as error:
        return {"error": f"The request body is not JSON: {error}"}
    if not isinstance(request, dict):
        return {"error": "The request body must be a JSON object with \"instances\" (row format) "
                         f"or \"inputs\" (columnar format). Received: {type(request).__name__}"}
    name = request.get("signature_name", SIGNATURE)
    if name not in model.signatures:
        return {"error": f"Serving signature name: \"{name}\" not found in signature def. "
                         f"Available: {', '.join(sorted(model.signatures))}"}
    signature = model.signatures[name]
    specs = signature.structured_input_signature[1]
    unknown = set(request) - {"signature_name", "instances", "inputs"}
    if ("instances" in request) == ("inputs" in request) or unknown:
        return {"error": "The request body must hold exactly one of \"instances\" (row format) "
                         "and \"inputs\" (columnar format)"
                         + (f"; unknown keys: {', '.join(sorted(unknown))}" if unknown else "")}
    try:
        if "instances" in request:
            inputs = _row_inputs(request["instances"], specs)
        else:
            inputs = _columnar_inputs(request["inputs"], specs)
        tensors = {key: _tensor(key, value, specs[key]) for key, value in inputs.items()}
    except ValueError as error:
        return {"error": str(error)}
    outputs = {key: value.numpy() for key, value in signature(**tensors).items()}
    if "instances" in request:
        if len(outputs) == 1:
            (value,) = outputs.values()
            return {"predictions": value.tolist()}
        count = len(next(iter(outputs.values())))
        return {"predictions": [{key: value[i].tolist() for key, value in sorted(outputs.items())}
                                for i in range(count)]}
    if len(outputs) == 1:
        (value,) = outputs.values()
        return {"outputs": value.tolist()}
    return {"outputs": {key: value.tolist() for key, value in sorted(outputs.items())}}


def _row_inputs(instances, specs):
    if not isinstance(instances, list) or not instances:
        raise ValueError("\"instances\" must be a non-empty list, one element per example. "
                         f"Received: {type(instances).__name__}")
    named = [isinstance(instance, dict) for instance in instances]
    if any(named) and not all(named):
        raise ValueError("Either all or none of the instances must be objects of named inputs.")
    if not all(named):
        if len(specs) != 1:
            raise ValueError(f"This signature has {len(specs)} inputs "
                             f"({', '.join(sorted(specs))}): each instance must be an object "
                             "naming them.")
        return {next(iter(specs)): instances}
    keys = set(instances[0])
    if any(set(instance) != keys for instance in instances):
        raise ValueError("All instances must name the same inputs.")
    _check_names(keys, specs)
    return {key: [instance[key] for instance in instances] for key in keys}


def _columnar_inputs(inputs, specs):
    if isinstance(inputs, dict):
        _check_names(set(inputs), specs)
        return inputs
    if len(specs) != 1:
        raise ValueError(f"This signature has {len(specs)} inputs ({', '.join(sorted(specs))}): "
                         "\"inputs\" must be an object naming them.")
    return {next(iter(specs)): inputs}


def _check_names(keys, specs):
    if keys != set(specs):
        raise ValueError(f"The signature's inputs are {', '.join(sorted(specs))}. "
                         f"Received: {', '.join(sorted(keys)) or 'none'}")


def _tensor(key, value, spec):
    import tensorflow as tf

    expected = "[" + ", ".join("batch" if d is None else str(d) for d in spec.shape) + "]"
    described = f"{spec.dtype.name} pixels in [0, 255]" if key == "images" else spec.dtype.name
    try:
        array = np.asarray(value, dtype=spec.dtype.as_numpy_dtype)
        # numpy would read "30" and true as numbers; TF Serving refuses them, and so do we.
        kinds = {type(v) for v in np.asarray(value, dtype=object).flat}
    except (ValueError, TypeError) as error:
        raise ValueError(f"Input \"{key}\" must be a nested list of numbers of shape {expected} "
                         f"({described}); its rows differ in length or hold non-numbers: "
                         f"{error}") from None
    wrong = sorted(k.__name__ for k in kinds if k is bool or not issubclass(k, (int, float)))
    if wrong:
        names = {"str": "strings", "bool": "true/false", "NoneType": "null"}
        raise ValueError(f"Input \"{key}\" must be a nested list of JSON numbers of shape "
                         f"{expected} ({described}). Received: "
                         f"{', '.join(names.get(w, w) for w in wrong)} among the values")
    if not spec.shape.is_compatible_with(array.shape) or array.shape[0] == 0:
        raise ValueError(f"Input \"{key}\" must have shape {expected} ({described}), at least one "
                         f"example. Received: shape {list(array.shape)}")
    return tf.constant(array)
