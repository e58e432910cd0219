"""Export and deployment: a trained run as a TF Serving SavedModel, TFLite files, predictions.

```python
from keras_tie.export import ExportedModel, export_run, rest_predict

result = export_run("runs/mnist_tie", "exported/mnist", tflite=["float32", "int8"])
model = ExportedModel(result.path)                  # or a .tflite file of it
outputs = model.predict(pixels)                     # float32 [N, H, W, C] in [0, 255]
rest_predict(result.path, {"instances": pixels.tolist()})   # what TF Serving answers
```

See docs/export.md for the signature, the files and the deployment with TF
Serving. Importing this package does not import TensorFlow.
"""

from keras_tie.export.predict import ExportedModel, check_batch, predict_files, read_inputs
from keras_tie.export.savedmodel import (
    INPUT_NAME,
    OUTPUTS,
    SIGNATURE,
    ExportError,
    ExportResult,
    export_run,
    finite_pixels,
    load_run,
    next_version,
    read_metadata,
    serving_function,
    version_dir,
)
from keras_tie.export.scores import (
    CALIBRATION_ID_ACCEPTANCE,
    ExportScore,
    calibrate_threshold,
    export_score_names,
    get_export_score,
    register_export_score,
)
from keras_tie.export.serving import load_signatures, rest_predict
from keras_tie.export.tflite import VARIANTS as TFLITE_VARIANTS

__all__ = [
    "CALIBRATION_ID_ACCEPTANCE",
    "INPUT_NAME",
    "OUTPUTS",
    "SIGNATURE",
    "TFLITE_VARIANTS",
    "ExportError",
    "ExportResult",
    "ExportScore",
    "ExportedModel",
    "calibrate_threshold",
    "check_batch",
    "export_run",
    "export_score_names",
    "finite_pixels",
    "get_export_score",
    "load_run",
    "load_signatures",
    "next_version",
    "predict_files",
    "read_inputs",
    "read_metadata",
    "register_export_score",
    "rest_predict",
    "serving_function",
    "version_dir",
]
