"""Callbacks every run uses: the non-finite-loss stop, the epoch timer, history.csv, and
the image grids that methods write as PNG and TensorBoard images.

The TIE epoch loop (`InversionExclusion`) is in keras_tie.methods.tie.exclusion.
"""

import os
import time

import keras
import numpy as np
import tensorflow as tf

from keras_tie._io import atomic_write_bytes

class TrainingDiverged(RuntimeError):
    """Training stopped on a non-finite loss; the run folder keeps its last finite checkpoint."""


class NonFiniteStop(keras.callbacks.Callback):
    """Stops `fit` at the first non-finite loss and fails the run, keeping its last good state.

    Keras' `TerminateOnNaN` stops training but lets `fit` return normally, so
    a diverged run used to be saved and reported as complete. Here:

    - at the first batch whose logged `loss` is NaN or infinite, training
      stops (`stop_training`) and `stopped_at` records (epoch, step), 1-based;
    - `RunCheckpoint` writes no checkpoint for that epoch (it asks
      `stopped_at`), so the newest checkpoint is the last finite one;
    - when `fit` ends, run.json gets `status: "failed"` and a `failure`
      message, and `TrainingDiverged` is raised: nothing after `fit` (saving
      model.keras, testing) runs, and `keras-tie train` exits with an error.

    Args:
        run_file: the run's run.json (None: no record to fail).
        rate_key: the config key of the learning rate the message advises
            lowering.
        phase: the name of a first phase (the CVAE of method cvae), or None for
            the run's main `fit`; a first phase's epochs are not the run's
            `epochs_completed`.
    """

    def __init__(self, run_file=None, rate_key="optimizer.classifier_lr", phase=None):
        super().__init__()
        self.run_file = run_file
        self.rate_key = rate_key
        self.phase = phase
        self.stopped_at = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if self.stopped_at is None and loss is not None and not np.all(np.isfinite(loss)):
            self.stopped_at = (self._epoch + 1, batch + 1)
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_at is None:
            return
        epoch, step = self.stopped_at
        where = f" of the {self.phase} phase" if self.phase else ""
        message = (f"Training stopped: the loss became non-finite (NaN or infinite) at epoch "
                   f"{epoch}{where}, step {step}. The weights of that epoch were not saved; "
                   f"the newest checkpoint is that of epoch {epoch - 1} (none if 0). Lower the "
                   f"learning rate ({self.rate_key}) and start a new run.")
        if self.run_file is not None and os.path.isfile(self.run_file):
            from keras_tie._io import read_json, write_json

            record = read_json(self.run_file)
            record.update(status="failed", failure=message,
                          epochs_completed=0 if self.phase else epoch - 1)
            write_json(self.run_file, record)
        raise TrainingDiverged(message)


class HistoryCSV(keras.callbacks.CSVLogger):
    """Keras' CSVLogger with epochs counted from 1, as in run.json and the checkpoints."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, logs)


class EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_seconds` to logs: wall time from this callback's epoch begin to its epoch end.

    Placed after `InversionExclusion` in the callback list, it counts the
    epoch's training steps plus the inversion and exclusion.
    """

    def __init__(self):
        super().__init__()
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._start is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start


def image_grid(rows, pad=1):
    """Tiles [R, C, H, W, ch] float images in [0, 1] into one uint8 image with white gaps."""
    rows = np.asarray(rows, np.float32)
    r, c, h, w, ch = rows.shape
    padded = np.pad(rows, ((0, 0), (0, 0), (pad, 0), (pad, 0), (0, 0)), constant_values=1.0)
    canvas = padded.transpose(0, 2, 1, 3, 4).reshape(r * (h + pad), c * (w + pad), ch)
    canvas = np.pad(canvas, ((0, pad), (0, pad), (0, 0)), constant_values=1.0)
    return np.clip(np.rint(canvas * 255), 0, 255).astype(np.uint8)


def write_png(path, image):
    """Writes a uint8 [H, W, C] image as PNG, atomically."""
    atomic_write_bytes(path, tf.io.encode_png(image).numpy())
