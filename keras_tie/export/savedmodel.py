"""A trained run as one SavedModel in TF Serving's layout, its decision rule inside the graph.

    exported/NAME/VERSION/
        saved_model.pb, variables/, assets/, fingerprint.pb   what TF Serving loads
        assets.extra/keras_tie.json                           metadata (see `export_run`)
        tflite/model_float32.tflite, ...                      optional TFLite conversions

TF Serving serves the highest numbered VERSION folder under exported/NAME and
ignores files it does not know, so each version carries its own metadata and
TFLite files, and one `os.replace` of a finished folder publishes it.

The `serving_default` signature takes `images`: float32 pixels in [0, 255],
shape `[batch, H, W, C]` of the training data, any batch size. In the graph:
non-finite pixels are replaced by 0 (so every output stays finite) and their
rows are rejected; the pixels are divided by 255 for the Keras classifier
(which standardises them itself); the softmax, UE, the chosen score and the
two-level rule (`keras_tie.inference.two_level_rule`) follow. Outputs, one
row per image:

| output | dtype | shape | meaning |
|---|---|---|---|
| `label` | int32 | [N] | the class index, -1 when rejected |
| `is_ood` | bool | [N] | rejected (`label == -1`) |
| `reject_level` | int32 | [N] | 0 accepted, 1 garbage class, 2 score above the threshold, 3 non-finite pixels |
| `score` | float32 | [N] | the chosen OOD score, higher = more OOD |
| `uncertainty` | float32 | [N] | UE of the full softmax |
| `garbage_probability` | float32 | [N] | probability of the garbage class (0 for a plain model) |
| `probabilities` | float32 | [N, K] | softmax over all K outputs (garbage class last) |
| `logits` | float32 | [N, K] | the classifier's logits, for scores computed outside |
"""

import dataclasses
import datetime
import os
import shutil
import tempfile
import warnings

import numpy as np

import keras_tie
from keras_tie import run_folder
from keras_tie._io import read_json, write_json
from keras_tie.export.scores import (
    CALIBRATION_ID_ACCEPTANCE,
    calibrate_threshold,
    check_threshold,
    get_export_score,
)
from keras_tie.export.signature import INPUT_NAME, SIGNATURE

PIXEL_MAX = 255.0
METADATA_DIR = "assets.extra"
METADATA_FILE = "keras_tie.json"
TFLITE_DIR = "tflite"
EXPORT_FORMAT = "keras-tie-export/1"

# reject_level values; 0-2 are `keras_tie.inference.two_level_rule`'s levels.
LEVEL_ACCEPTED = 0
LEVEL_GARBAGE = 1
LEVEL_SCORE = 2
LEVEL_NON_FINITE = 3
REJECT_REASONS = {LEVEL_GARBAGE: "garbage class", LEVEL_SCORE: "score above threshold",
                  LEVEL_NON_FINITE: "non-finite pixels"}

OUTPUTS = {
    "label": "int32 [N]: the class index, -1 when rejected",
    "is_ood": "bool [N]: rejected by the rule (label == -1)",
    "reject_level": "int32 [N]: 0 accepted, 1 garbage class, 2 score above the threshold, "
                    "3 non-finite pixels",
    "score": "float32 [N]: the OOD score named in score.name, higher = more OOD",
    "uncertainty": "float32 [N]: UE of the softmax over all outputs",
    "garbage_probability": "float32 [N]: probability of the garbage class (0 without one)",
    "probabilities": "float32 [N, K]: softmax over all outputs, the garbage class last",
    "logits": "float32 [N, K]: the classifier's logits",
}

DEFAULT_REPRESENTATIVE_IMAGES = 300
DEFAULT_CALIBRATION_IMAGES = 2000


class ExportError(ValueError):
    """A run that cannot be exported as asked, or an export folder that cannot be read."""


@dataclasses.dataclass
class ExportResult:
    """What `export_run` wrote: the version folder and its metadata."""

    path: str
    metadata: dict


def export_run(run_dir, output=None, *, version=None, score="ue", threshold=None, tflite=(),
               data_dir=None, representative_images=DEFAULT_REPRESENTATIVE_IMAGES,
               calibration_images=DEFAULT_CALIBRATION_IMAGES):
    """Exports the classifier of a training run as `output/version` (TF Serving's layout).

    Args:
        run_dir: a finished run folder (model.keras and run.json).
        output: the model folder (TF Serving's base path). Default:
            exported/<name of run_dir>.
        version: the version folder's number; default one above the highest
            already in `output` (1 in a new folder). An existing version is
            never overwritten.
        score: name of a registered `ExportScore` (`ue`, `garbage`, the
            detectors' `msp`, `energy`, `entropy` and their `@n+1` variants;
            see `keras_tie.export.scores`) or an `ExportScore`.
        threshold: level 2 rejects `score > threshold`. Default: the score's
            own (tau_T of the run for `ue`, 0.5 for `garbage`); for a score
            without one (`ue` of a plain run, `msp`, `energy`, `entropy`) the
            threshold that accepts 95% of `calibration_images` in-distribution
            images (`keras_tie.metrics.threshold_at_tpr`, as the evaluation's
            deployment threshold).
        tflite: TFLite variants to convert as well: any of `float32`,
            `float16`, `int8` (int8 network, float32 head), `int8_full`
            (every operator int8); see `keras_tie.export.tflite`.
        data_dir: where the run's dataset is (for calibration and the int8
            representative images); default the run's, else $KERAS_TIE_DATA_DIR.
        representative_images: training images that calibrate the int8 ranges.
        calibration_images: in-distribution images a calibrated threshold is
            computed on.

    Returns:
        An `ExportResult`.

    Example:

    ```python
    result = export_run("runs/mnist_tie", "exported/mnist", tflite=["float32", "int8"])
    # result.path == "exported/mnist/1"
    ```
    """
    from keras_tie.export import tflite as tflite_lib

    from keras_tie.models import float32_copy

    variants = tflite_lib.check_variants(tflite)
    run_info, classifier = load_run(run_dir)
    # A mixed_bfloat16 run exports in float32 (TFLite has no bfloat16 kernels): float32_copy.
    classifier = float32_copy(classifier)
    garbage_index = run_info.get("garbage_index")
    export_score = get_export_score(score, garbage_index)
    data_dir = data_dir or run_info.get("config", {}).get("data_dir") or None

    threshold, threshold_source = _resolve_threshold(
        export_score, threshold, run_info, classifier, data_dir, calibration_images)
    if "int8_full" in variants and export_score.name.startswith("ue"):
        floor = tflite_lib.int8_ue_floor(int(classifier.outputs[0].shape[-1]))
        if threshold < floor:
            warnings.warn(
                f"int8_full quantises the softmax to steps of 1/256, so its UE cannot fall "
                f"below about {floor:.4f}, and the threshold {threshold:.4g} would reject "
                "nearly every image. Use the int8 variant (int8 network, float32 head) or "
                "--score garbage for integer-only hardware.", stacklevel=2)

    output = output or os.path.join("exported", os.path.basename(os.path.normpath(run_dir)))
    version = next_version(output) if version is None else _check_version(version)
    final = os.path.join(output, str(version))
    if os.path.exists(final):
        raise FileExistsError(
            f"{final} already exists: an exported version is never overwritten (TF Serving may "
            f"be serving it). Choose another --version (next free: {next_version(output)}) or "
            "remove the folder.")

    os.makedirs(output, exist_ok=True)
    # A dot-name is not a number, so TF Serving ignores the folder until it is renamed.
    staging = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=output)
    try:
        _write_saved_model(staging, classifier, export_score, threshold, garbage_index,
                           run_info["image_shape"])
        representative = None
        if any(v in tflite_lib.INT8_VARIANTS for v in variants):
            representative = _dataset_images(
                run_info, representative_images, data_dir, 1,
                "The int8 variants calibrate their ranges on the run's training images",
                "Pass --data-dir, or leave int8 and int8_full out of --tflite")
        tflite_files = {}
        for variant in variants:
            model_bytes = tflite_lib.convert(staging, variant, representative)
            relative = os.path.join(TFLITE_DIR, f"model_{variant}.tflite")
            os.makedirs(os.path.join(staging, TFLITE_DIR), exist_ok=True)
            with open(os.path.join(staging, relative), "wb") as f:
                f.write(model_bytes)
            tflite_files[variant] = {"file": relative, "bytes": len(model_bytes),
                                     "operators": tflite_lib.operators(model_bytes),
                                     **tflite_lib.VARIANT_NOTES[variant]}
        metadata = _metadata(run_dir, run_info, export_score, threshold, threshold_source,
                             garbage_index, version, tflite_files,
                             None if representative is None else len(representative))
        write_json(os.path.join(staging, METADATA_DIR, METADATA_FILE), metadata)
        os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the model from a server's user
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(final, metadata)


# Methods whose runs are not exported, and why (the export ships a classifier's logits with
# the two-level rule).
NOT_EXPORTED = {
    "flow": "a flow has no logits, and its approximate mass needs the gradient of log p(x) "
            "with respect to the input, which TFLite cannot compute. Score it with `keras-tie "
            "evaluate` (see docs/flow.md)",
    "repair": "a repair model has no logits (its score is the distance between an image and "
              "its repair). Score it with `keras-tie evaluate` (see docs/repair.md)",
}
EXPORT_KEYS = ("class_names", "image_shape", "num_outputs")


def load_run(run_dir):
    """(run.json as a dict, the classifier) of a finished run folder (keras_tie.run_folder).

    Raises:
        ExportError: not a finished classifier run (flow and repair runs are
            refused, saying why).
    """
    try:
        record = run_folder.read_record(run_dir, EXPORT_KEYS)
        method = record.get("method")
        if method in NOT_EXPORTED:
            raise ExportError(f"{run_dir} is a {method} run, which keras-tie does not export: "
                              "the export ships a classifier's logits with the two-level "
                              f"rule, and {NOT_EXPORTED[method]}.")
        return run_folder.load_run(run_dir, "exported", record=record)
    except run_folder.RunFolderError as error:
        raise ExportError(str(error)) from error


def finite_pixels(images):
    """Boolean mask of the finite entries of a float32 tensor, read from their exponent bits.

    A float32 is NaN or infinite exactly when its 8 exponent bits are all
    ones (IEEE 754). Floor-dividing its bits (as int32) by 2**23 leaves sign
    and exponent: 255 (positive) or -1 (negative) for those values. This is
    integer arithmetic on purpose: `tf.math.is_finite` has no TFLite builtin,
    and `abs(x) <= max` would be quantised by the int8 converter, which
    cannot represent NaN.
    """
    import tensorflow as tf

    top = tf.math.floordiv(tf.bitcast(images, tf.int32), 2 ** 23)
    return tf.logical_and(tf.not_equal(top, 255), tf.not_equal(top, -1))


def serving_function(classifier, score, threshold, garbage_index, image_shape=None):
    """The function behind the `serving_default` signature (see the module docstring).

    Args:
        classifier: Keras classifier, float pixels in [0, 1] in, logits out.
        score: an `ExportScore`.
        threshold: level 2 rejects `score > threshold`.
        garbage_index: index of the garbage class, or None.
        image_shape: `(H, W, C)`; default the classifier's input shape.

    Returns:
        `serve(images)` returning the dict of outputs.
    """
    import tensorflow as tf

    from keras_tie.inference import OOD_LABEL, two_level_rule
    from keras_tie.uncertainty import uncertainty

    network = classifier
    if score.needs_features:
        from keras_tie.models.backbones import feature_model

        network = feature_model(classifier)
    threshold = float(threshold)
    image_shape = tuple(image_shape or classifier.inputs[0].shape[1:])

    def serve(images):
        # The signature declares [None, H, W, C], but a loaded signature (and TF Serving)
        # passes other shapes on to the first layer, whose error does not say what was
        # expected; EnsureShape's does ("... not compatible with expected shape [?,28,28,1]").
        images = tf.ensure_shape(images, [None, *image_shape])
        finite = finite_pixels(images)
        valid = tf.reduce_all(finite, axis=[1, 2, 3])
        pixels = tf.where(finite, images, tf.zeros_like(images)) / PIXEL_MAX
        outputs = {}
        if score.needs_features:
            outputs["features"], logits = network(pixels, training=False)
        else:
            logits = network(pixels, training=False)
        probabilities = tf.nn.softmax(logits, axis=-1)
        outputs.update(logits=logits, probabilities=probabilities)
        ue = uncertainty(probabilities)
        score_value = tf.cast(score.fn(outputs, garbage_index), tf.float32)
        label, level = two_level_rule(probabilities, score_value, threshold, garbage_index)
        label = tf.where(valid, label, OOD_LABEL)
        level = tf.where(valid, level, LEVEL_NON_FINITE)
        garbage = (probabilities[:, garbage_index] if garbage_index is not None
                   else tf.zeros_like(ue))
        return {
            "label": label,
            "is_ood": tf.not_equal(level, LEVEL_ACCEPTED),
            "reject_level": level,
            "score": score_value,
            "uncertainty": ue,
            "garbage_probability": garbage,
            "probabilities": probabilities,
            "logits": logits,
        }

    return serve


def next_version(output):
    """One above the highest numbered version folder in `output` (1 when there is none)."""
    versions = _versions(output)
    return max(versions) + 1 if versions else 1


def version_dir(path):
    """The SavedModel folder of `path`: itself, or the highest version of a model folder."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = _versions(path)
    if not versions:
        raise ExportError(
            "Expected an exported model: a folder holding saved_model.pb (exported/NAME/VERSION) "
            f"or numbered version folders (exported/NAME). Received: {path!r}")
    return os.path.join(path, str(max(versions)))


def read_metadata(path):
    """The metadata (assets.extra/keras_tie.json) of the export at `path` (model or version)."""
    file = os.path.join(version_dir(path), METADATA_DIR, METADATA_FILE)
    if not os.path.isfile(file):
        raise ExportError(f"{file} is missing: {path} was not exported by `keras-tie export`.")
    return read_json(file)


def id_images(run_info, count, data_dir=None, seed=0):
    """`count` in-distribution images of the run as float32 pixels in [0, 255].

    Taken from the run's held-out validation images when it kept some, else
    from its training images (the images it trained on, the `limit` slice
    included); a seeded uniform draw.
    """
    from keras_tie.data import load

    config = run_info.get("config", {})
    limit = config.get("limit") or None
    train = load(run_info["dataset"], split="train", data_dir=data_dir, limit=limit)
    images = train.images
    fraction = config.get("validation_split") or 0.0
    if fraction > 0:
        images = images[run_folder.validation_split_indices(len(images), fraction,
                                                            config["seed"])[1]]
    chosen = np.random.default_rng([seed, 11]).permutation(len(images))[:count]
    return images[np.sort(chosen)].astype(np.float32)


def _resolve_threshold(score, threshold, run_info, classifier, data_dir, calibration_images):
    if threshold is not None:
        return check_threshold(threshold), "given explicitly (--threshold)"
    default = score.default_threshold(run_info) if score.default_threshold else None
    if default is not None:
        return check_threshold(default[0]), default[1]
    images = _dataset_images(
        run_info, calibration_images, data_dir, 2,
        f"The score {score.name!r} has no default threshold for this run, so the export "
        "calibrates one on the run's in-distribution images",
        "Pass --threshold, or --data-dir")
    serve = serving_function(classifier, score, 0.0, run_info.get("garbage_index"))
    import tensorflow as tf

    serve = tf.function(serve)
    scores = np.concatenate([serve(tf.constant(images[i:i + 256]))["score"].numpy()
                             for i in range(0, len(images), 256)])
    source = "validation" if run_info.get("config", {}).get("validation_split") else "training"
    return (calibrate_threshold(scores),
            f"calibrated: accepts {CALIBRATION_ID_ACCEPTANCE:.0%} of {len(images)} "
            f"in-distribution {source} images")


def _dataset_images(run_info, count, data_dir, seed, why, fix):
    """`id_images`, or an ExportError that says why the data was needed and how to do without."""
    from keras_tie.data import DatasetError

    try:
        return id_images(run_info, count, data_dir, seed)
    except DatasetError as error:
        raise ExportError(f"{why}, and they cannot be loaded: {error}\n{fix}.") from error


def _write_saved_model(path, classifier, score, threshold, garbage_index, image_shape):
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(classifier)
    archive.add_endpoint(
        SIGNATURE, serving_function(classifier, score, threshold, garbage_index, image_shape),
        input_signature=[tf.TensorSpec([None, *image_shape], tf.float32, name=INPUT_NAME)])
    archive.write_out(path, verbose=False)


def _metadata(run_dir, run_info, score, threshold, threshold_source, garbage_index, version,
              tflite_files, representative_count):
    height, width, channels = run_info["image_shape"]
    return {
        "format": EXPORT_FORMAT,
        "keras_tie_version": keras_tie.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "version": version,
        "source_run": {
            "run_dir": os.path.abspath(run_dir),
            "method": run_info.get("method"),
            "dataset": run_info.get("dataset"),
            "keras_tie_version": run_info.get("keras_tie_version"),
            "test_metrics": run_info.get("test_metrics"),
        },
        "class_names": list(run_info["class_names"]),
        "num_classes": len(run_info["class_names"]),
        "num_outputs": run_info["num_outputs"],
        "garbage_index": garbage_index,
        "signature": SIGNATURE,
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [None, height, width, channels],
                  "range": [0.0, PIXEL_MAX],
                  "note": "raw pixels; normalisation happens inside the model"},
        "outputs": OUTPUTS,
        "score": {"name": score.name, "description": score.description,
                  "threshold": threshold, "threshold_source": threshold_source,
                  "direction": "higher score = more likely OOD"},
        "thresholds": {"tau_T": run_info.get("tau"), score.name: threshold},
        "decision": _decision_text(score.name, garbage_index),
        "tflite": tflite_files,
        "int8_representative_images": representative_count,
    }


def _decision_text(score_name, garbage_index):
    level2 = f"{score_name} > score.threshold -> -1 (reject_level 2)"
    if garbage_index is None:
        return f"non-finite pixels -> -1 (reject_level 3); else {level2}; else argmax"
    return ("non-finite pixels -> -1 (reject_level 3); else argmax = garbage class -> -1 "
            f"(reject_level 1); else {level2}; else argmax")


def _versions(folder):
    if not os.path.isdir(folder):
        return []
    return [int(name) for name in os.listdir(folder)
            if name.isdigit() and os.path.isdir(os.path.join(folder, name))]


def _check_version(version):
    if isinstance(version, bool) or int(version) != version or version < 1:
        raise ExportError(f"version must be a positive integer. Received: version={version!r}")
    return int(version)
