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

import keras
import numpy as np
import tensorflow as tf

from keras_tie._io import read_json, write_json

LATEST = "latest.json"


def checkpoint_dir(run_dir):
    return os.path.join(run_dir, "checkpoints")


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
    """(directory, state) of the newest complete checkpoint, or None."""
    root = checkpoint_dir(run_dir)
    pointer = os.path.join(root, LATEST)
    if not os.path.isfile(pointer):
        return None
    directory = os.path.join(root, read_json(pointer)["directory"])
    state_file = os.path.join(directory, "state.json")
    if not os.path.isfile(state_file):
        raise FileNotFoundError(
            f"{pointer} points at {directory}, which holds no state.json: the checkpoint "
            "folder was changed by hand. Remove latest.json to start over.")
    return directory, read_json(state_file)


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
    """

    def __init__(self, run_dir, trackables, state_fn, pool=None, every=1, last_epoch=None,
                 keep=2):
        super().__init__()
        self.run_dir = run_dir
        self.trackables = trackables
        self.state_fn = state_fn
        self.pool = pool
        self.every = max(int(every), 1)
        self.last_epoch = last_epoch
        self.keep = int(keep)

    def on_epoch_end(self, epoch, logs=None):
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
