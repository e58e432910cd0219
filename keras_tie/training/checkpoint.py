"""Resumable checkpoints of a training run, written so that a kill never breaks them.

Layout, inside RUN_DIR/checkpoints/::

    epoch_0003/ckpt.index, ckpt.data-*   model, generator, both optimizers,
                                         the in-graph random generator,
                                         class weights and gamma
    epoch_0003/pool.npy                  the garbage pool (uint8, or float16)
    epoch_0003/state.json                epoch, tau_t, history so far, and
                                         pool_seen (images ever offered to the
                                         pool, for its reservoir rule)
    latest.json                          {"epoch": 3, "directory": "epoch_0003"}

A checkpoint is written into a temporary folder, flushed, and renamed into
place; only then is latest.json replaced (atomically) to point at it. A kill
at any moment leaves latest.json pointing at a complete checkpoint. The last
`keep` checkpoints are kept (config `checkpoint_keep`; 0 keeps all).
"""

import glob
import os
import shutil
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_tie._io import read_json, write_json
from keras_tie.run_folder import CHECKPOINTS_DIR

LATEST = "latest.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read back."""


def checkpoint_dir(run_dir):
    return os.path.join(run_dir, CHECKPOINTS_DIR)


def save_checkpoint(run_dir, epoch, trackables, state, pool=None, keep=2):
    """Writes the checkpoint of a completed `epoch` (1-based) and points latest.json at it."""
    root = checkpoint_dir(run_dir)
    os.makedirs(root, exist_ok=True)
    name = f"epoch_{epoch:04d}"
    tmp = os.path.join(root, f".tmp_{name}_{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    tf.train.Checkpoint(**trackables).write(os.path.join(tmp, "ckpt"))
    if pool is not None:
        with open(os.path.join(tmp, "pool.npy"), "wb") as f:
            np.save(f, pool.numpy())
            f.flush()
            os.fsync(f.fileno())
    extra = {"pool_seen": pool.seen} if pool is not None else {}
    write_json(os.path.join(tmp, "state.json"), dict(state, epoch=epoch, **extra))
    final = os.path.join(root, name)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    write_json(os.path.join(root, LATEST), {"epoch": epoch, "directory": name})
    _prune(root, keep)
    return final


def latest_checkpoint(run_dir):
    """(directory, state) of the newest intact checkpoint, or None when there is none.

    latest.json names the newest checkpoint. When it, or the checkpoint it
    names, is damaged (a half-written latest.json, a truncated ckpt file, a
    damaged pool.npy or state.json: `check_checkpoint`), the next newest
    `epoch_*` folder that is intact is used, with a warning naming what was
    damaged.

    Raises:
        CheckpointError: checkpoints exist but none of them is intact.
    """
    root = checkpoint_dir(run_dir)
    pointer = os.path.join(root, LATEST)
    candidates = sorted(glob.glob(os.path.join(root, "epoch_*")), reverse=True)
    if not os.path.isfile(pointer) and not candidates:
        return None
    damaged = []
    if os.path.isfile(pointer):
        try:
            named = os.path.join(root, read_json(pointer)["directory"])
            candidates = [named] + [c for c in candidates if c != named]
        except (ValueError, KeyError, TypeError) as error:
            damaged.append(f"{pointer} ({type(error).__name__}: {error})")
    for directory in candidates:
        try:
            state = check_checkpoint(directory)
        except CheckpointError as error:
            damaged.append(str(error))
            continue
        if damaged:
            warnings.warn("Damaged checkpoint data: " + "; ".join(damaged) +
                          f". Resuming from the newest intact checkpoint, {directory} "
                          f"(epoch {state['epoch']}).", stacklevel=2)
        return directory, state
    raise CheckpointError(
        f"No intact checkpoint in {root}: " + "; ".join(damaged) +
        ". Start a new run (another --output), or remove the checkpoints folder to restart "
        "this one from epoch 0.")


def check_checkpoint(directory):
    """The state of the checkpoint in `directory` after checking that it reads back whole.

    Reads state.json, every tensor of the TensorFlow checkpoint (so a
    truncated data file is found) and the header and length of pool.npy.

    Raises:
        CheckpointError: naming the damaged file.
    """
    state_file = os.path.join(directory, "state.json")
    try:
        state = read_json(state_file)
        int(state["epoch"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{state_file} ({type(error).__name__}: {error})") from error
    prefix = os.path.join(directory, "ckpt")
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as error:  # the reader raises OpError, IndexError, ... for a damaged file
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(f"{prefix} ({type(error).__name__}: {message})") from error
    pool_file = os.path.join(directory, "pool.npy")
    if os.path.isfile(pool_file):
        try:
            np.load(pool_file, mmap_mode="r")  # reads the header; a short file fails to map
        except (OSError, ValueError) as error:
            raise CheckpointError(f"{pool_file} ({type(error).__name__}: {error})") from error
    return state


def restore_checkpoint(directory, trackables, pool=None):
    """Loads a checkpoint written by `save_checkpoint` into `trackables` and `pool`."""
    status = tf.train.Checkpoint(**trackables).read(os.path.join(directory, "ckpt"))
    status.assert_existing_objects_matched()
    pool_file = os.path.join(directory, "pool.npy")
    if pool is not None and os.path.isfile(pool_file):
        state = read_json(os.path.join(directory, "state.json"))
        pool.set(np.load(pool_file), seen=state.get("pool_seen"))


def resume_from(checkpoint, trackables, pool=None):
    """Restores `checkpoint` (a `latest_checkpoint` result, or None) into `trackables`.

    Returns:
        (initial_epoch, history, state): the epoch to continue from, the
        per-epoch history saved with it (a list to append to), and its whole
        JSON state; (0, [], {}) without a checkpoint.
    """
    if not checkpoint:
        return 0, [], {}
    directory, state = checkpoint
    restore_checkpoint(directory, trackables, pool)
    return state["epoch"], list(state.get("history", [])), state


class RunCheckpoint(keras.callbacks.Callback):
    """Checkpoints every `every` epochs and at the last one.

    Args:
        run_dir: the run folder.
        trackables: name -> trackable (models, optimizers, variables).
        state_fn: callable(epoch, logs) -> JSON-able dict saved with the
            checkpoint (tau, history).
        pool: the garbage pool, or None.
        every: epochs between checkpoints.
        last_epoch: the run's final epoch (always checkpointed).
        keep: the newest checkpoints kept; 0 keeps all.
        guard: a `NonFiniteStop`; no checkpoint is written for an epoch
            in which it stopped training.
    """

    def __init__(self, run_dir, trackables, state_fn, pool=None, every=1, last_epoch=None,
                 keep=2, guard=None):
        super().__init__()
        self.run_dir = run_dir
        self.trackables = trackables
        self.state_fn = state_fn
        self.pool = pool
        self.every = max(int(every), 1)
        self.last_epoch = last_epoch
        self.keep = int(keep)
        self.guard = guard

    def on_epoch_end(self, epoch, logs=None):
        if self.guard is not None and self.guard.stopped_at is not None:
            return  # a non-finite loss in this epoch: keep the last finite checkpoint
        done = epoch + 1
        if done % self.every == 0 or done == self.last_epoch:
            save_checkpoint(self.run_dir, done, self.trackables, self.state_fn(done, logs or {}),
                            self.pool, self.keep)


def _prune(root, keep):
    if keep <= 0:
        return  # keep every checkpoint
    complete = sorted(glob.glob(os.path.join(root, "epoch_*")))
    for old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
