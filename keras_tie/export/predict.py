"""Running an exported model from Python: the SavedModel or one of its .tflite files.

```python
from keras_tie.export import ExportedModel, predict_files

model = ExportedModel("exported/mnist_tie")          # the highest version
outputs = model.predict(pixels)                      # float32 [N, 28, 28, 1] in [0, 255]
for line in predict_files(model, ["a.png", "b.jpg", "batch.npy"]):
    print(line)                                      # {"file": ..., "label": ..., ...}
```

Image files (PNG, JPEG, anything Pillow decodes) of another size or channel
count are converted the way the data layer converts OOD sets
(`keras_tie.data.convert_images`), and the line says so in `note`.
"""

import os

import numpy as np

from keras_tie.export.savedmodel import (
    INPUT_NAME,
    LEVEL_ACCEPTED,
    METADATA_DIR,
    METADATA_FILE,
    PIXEL_MAX,
    REJECT_REASONS,
    SIGNATURE,
    ExportError,
    read_metadata,
    version_dir,
)

DEFAULT_BATCH_SIZE = 256


class ExportedModel:
    """An exported keras-tie model loaded for inference.

    Args:
        path: an export folder (exported/NAME: its highest version is used),
            one of its version folders, or a .tflite file. A .tflite file reads
            the metadata of the version folder it lies in (VERSION/tflite/), or
            a keras_tie.json beside it.
        num_threads: TFLite only: interpreter threads (default: LiteRT's).

    Attributes:
        metadata: the export's metadata (assets.extra/keras_tie.json).
        image_shape: `(H, W, C)` the model takes.
        class_names: one name per class index.
        backend: `savedmodel` or `tflite`.
    """

    def __init__(self, path, num_threads=None):
        path = os.fspath(path)
        self.path = path
        if path.endswith(".tflite"):
            if not os.path.isfile(path):
                raise ExportError(f"No such .tflite file. Received: {path!r}")
            self.backend = "tflite"
            self.metadata = _tflite_metadata(path)
            from ai_edge_litert.interpreter import Interpreter

            try:
                self._runner = Interpreter(model_path=path, num_threads=num_threads) \
                    .get_signature_runner(SIGNATURE)
            except (ValueError, RuntimeError) as error:
                raise ExportError(f"{path} cannot be loaded by the TFLite interpreter "
                                  f"(damaged or truncated?): {error}") from error
        else:
            self.backend = "savedmodel"
            self.path = version_dir(path)
            self.metadata = read_metadata(self.path)
            import tensorflow as tf

            self._loaded = tf.saved_model.load(self.path)  # keeps the signature's variables alive
            self._runner = self._loaded.signatures[SIGNATURE]
        self.image_shape = tuple(self.metadata["input"]["shape"][1:])
        self.class_names = list(self.metadata["class_names"])

    def predict(self, images):
        """Outputs of the `serving_default` signature as numpy arrays.

        Args:
            images: float pixels in [0, 255], `[batch, H, W, C]` of `image_shape`.

        Returns:
            A dict: label, is_ood, reject_level, score, uncertainty,
            garbage_probability, probabilities, logits.

        Raises:
            ValueError: a batch of another shape; the message says the expected one.
        """
        images = check_batch(images, self.image_shape)
        if self.backend == "tflite":
            return dict(self._runner(**{INPUT_NAME: images}))
        import tensorflow as tf

        return {k: v.numpy() for k, v in self._runner(**{INPUT_NAME: tf.constant(images)}).items()}


def expected_shape_text(image_shape):
    return f"[batch, {', '.join(str(d) for d in image_shape)}]"


def check_batch(images, image_shape):
    """`images` as a float32 array, or a ValueError naming the expected shape."""
    images = np.asarray(images)
    if images.dtype == object or not (np.issubdtype(images.dtype, np.number)
                                      or images.dtype == bool):
        raise ValueError(f"Expected numeric pixels. Received: dtype={images.dtype}")
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(image_shape) or len(images) == 0:
        raise ValueError(
            f"Expected a batch of shape {expected_shape_text(image_shape)} (float32 pixels in "
            f"[0, 255], at least one image). Received: shape={list(images.shape)}")
    return images.astype(np.float32, copy=False)


def read_image(path, image_shape):
    """Pixels of an image file as float32 `[H, W, C]` in [0, 255], and a note when converted.

    Pillow decodes the file; palette, alpha and 16-bit modes become L or RGB.
    A size or channel count other than `image_shape` is converted with
    `keras_tie.data.convert_images` (the OOD-set conversion).

    Raises:
        ValueError: the file is not an image Pillow can decode.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode not in ("L", "RGB"):
                image = image.convert("L" if mode in ("1", "LA", "I", "I;16", "F") else "RGB")
            pixels = np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        # OSError: a truncated or corrupt file of a known format.
        raise ValueError(f"not an image Pillow can decode ({error})") from error
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return convert_to(pixels, image_shape)


def convert_to(pixels, image_shape):
    """One image `[H, W, C]` (uint8, or float in [0, 255]) as float32 of `image_shape`, and a note.

    The note (None when the shape already fits) says how it was converted.
    """
    image_shape = tuple(image_shape)
    if tuple(pixels.shape) == image_shape:
        return pixels.astype(np.float32), None
    from keras_tie.data import convert_images

    source = "x".join(str(d) for d in pixels.shape)
    target = "x".join(str(d) for d in image_shape)
    batch = pixels[None] if pixels.dtype == np.uint8 \
        else pixels[None].astype(np.float32) / PIXEL_MAX
    converted = convert_images(batch, image_shape)[0] * PIXEL_MAX
    note = (f"converted from {source} to {target} as the data layer converts OOD sets "
            "(keras_tie.data.convert_images: gray/RGB by luma or tiling, bilinear resize)")
    return converted, note


def read_inputs(paths, image_shape):
    """One `(name, pixels, note, error)` per image: files one each, an .npy batch one per row.

    An .npy file holds `[N, H, W, C]`, `[N, H, W]` or one `[H, W, C]` image;
    uint8 pixels are 0..255, float pixels are taken in [0, 255] as the exported
    model takes them. Errors are per entry; the others still load.
    """
    entries = []
    for path in paths:
        path = os.fspath(path)
        if path.endswith(".npy"):
            try:
                with open(path, "rb") as f:
                    if f.read(6) != b"\x93NUMPY":
                        raise ValueError("no NumPy .npy header")
                array = np.load(path, allow_pickle=False)
                rows = _npy_rows(array, image_shape)
            except FileNotFoundError:
                entries.append((path, None, None, "no such file"))
                continue
            except (ValueError, OSError) as error:
                entries.append((path, None, None, f"not an image batch: {error}"))
                continue
            scale_note = None
            if np.issubdtype(rows.dtype, np.floating) and np.nanmax(np.abs(rows), initial=0) <= 1.0:
                scale_note = ("float pixels all within [0, 1]: the model takes [0, 255]; "
                              "multiply by 255 if these are [0, 1] pixels")
            for i, row in enumerate(rows):
                try:
                    pixels, note = convert_to(row, image_shape)
                    note = "; ".join(n for n in (scale_note, note) if n) or None
                    entries.append((f"{path}[{i}]", pixels, note, None))
                except ValueError as error:
                    entries.append((f"{path}[{i}]", None, None, str(error)))
            continue
        try:
            pixels, note = read_image(path, image_shape)
            entries.append((path, pixels, note, None))
        except (ValueError, OSError) as error:
            entries.append((path, None, None, str(error)))
    return entries


def predict_files(model, paths, batch_size=DEFAULT_BATCH_SIZE):
    """One result dict per image of `paths`, in order (see `read_inputs` for the file kinds).

    Each dict has file, label, class_name (None when rejected), is_ood,
    reject_reason (when rejected), score, uncertainty, garbage_probability,
    and note when the image was converted; or file and error.
    """
    entries = read_inputs(paths, model.image_shape)
    results = [None] * len(entries)
    good = [i for i, entry in enumerate(entries) if entry[3] is None]
    for start in range(0, len(good), batch_size):
        chunk = good[start:start + batch_size]
        outputs = model.predict(np.stack([entries[i][1] for i in chunk]))
        for row, i in enumerate(chunk):
            results[i] = _result_line(entries[i][0], outputs, row, model.class_names,
                                      entries[i][2])
    for i, (name, _, _, error) in enumerate(entries):
        if error is not None:
            results[i] = {"file": name, "error": error}
    return results


def _result_line(name, outputs, row, class_names, note):
    label = int(outputs["label"][row])
    level = int(outputs["reject_level"][row])
    line = {"file": name, "label": label,
            "class_name": class_names[label] if label >= 0 else None,
            "is_ood": bool(outputs["is_ood"][row]),
            "score": float(outputs["score"][row]),
            "uncertainty": float(outputs["uncertainty"][row]),
            "garbage_probability": float(outputs["garbage_probability"][row])}
    line["reject_level"] = level
    if level != LEVEL_ACCEPTED:
        line["reject_reason"] = REJECT_REASONS.get(level, str(level))
    if note:
        line["note"] = note
    return line


def _npy_rows(array, image_shape):
    if array.dtype == object or not (np.issubdtype(array.dtype, np.integer)
                                     or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"expected numeric pixels, received dtype={array.dtype}")
    if array.ndim == 3 and tuple(array.shape) == tuple(image_shape):
        array = array[None]
    elif array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise ValueError(f"expected [N, H, W, C] with C 1 or 3, [N, H, W] or one "
                         f"{list(image_shape)} image, received shape {list(array.shape)}")
    if np.issubdtype(array.dtype, np.integer) and array.dtype != np.uint8:
        array = array.astype(np.float32)
    return array


def _tflite_metadata(path):
    folder = os.path.dirname(os.path.abspath(path))
    for candidate in (os.path.join(folder, METADATA_FILE),
                      os.path.join(os.path.dirname(folder), METADATA_DIR, METADATA_FILE)):
        if os.path.isfile(candidate):
            from keras_tie._io import read_json

            return read_json(candidate)
    raise ExportError(
        f"No metadata for {path}: expected {METADATA_DIR}/{METADATA_FILE} in the version folder "
        f"above it (VERSION/tflite/*.tflite) or {METADATA_FILE} beside it. Copy the export's "
        f"{METADATA_FILE} next to the .tflite file.")
