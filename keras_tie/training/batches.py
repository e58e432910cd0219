"""The training batches of every run: a seeded, resumable tf.data pipeline with flips and
translations, computed in vectorised ops."""

import tensorflow as tf

SHIFT_PIXELS = 2  # `shift` augmentation: up to 2 pixels each way (7% of a 28-pixel side)


def random_shift(images, offsets):
    """Translates each image of [B, H, W, C] by its own whole-pixel offset, black-filled.

    `offsets` [B, 2] int32 in 0..2 * SHIFT_PIXELS: the window's top-left corner
    in the image padded by SHIFT_PIXELS on every side, so SHIFT_PIXELS is no
    shift. Two batched gathers (rows, then columns): no per-image Python loop.
    """
    height, width = images.shape[1], images.shape[2]
    pad = SHIFT_PIXELS
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    rows = offsets[:, :1] + tf.range(height)[None, :]
    columns = offsets[:, 1:] + tf.range(width)[None, :]
    shifted = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(shifted, columns, axis=2, batch_dims=1)


def epoch_batches(images, labels, batch_size, seed, initial_epoch, epochs, augment="none"):
    """A tf.data pipeline of (float pixels in [0, 1], label) batches for epochs
    initial_epoch..epochs-1.

    Each epoch's order is a permutation drawn from (seed, epoch) alone, and
    each batch's augmentation from (seed, epoch, step), so a resumed run sees
    exactly the batches an uninterrupted run would. Images stay uint8 in
    memory; batches are gathered, converted to float and augmented in
    vectorised ops. The last partial batch of each epoch is dropped.

    Args:
        augment: `none`, `flip` (each image mirrored left-right with
            probability 1/2), `shift` (each image translated by dy, dx drawn
            uniformly from -SHIFT_PIXELS..SHIFT_PIXELS, the uncovered border
            black, pixel value 0), or `flip+shift`.
    """
    count = len(images)
    steps = count // batch_size
    images_t = tf.constant(images)
    labels_t = tf.constant(labels)
    seed_t = tf.constant(seed, tf.int64)

    def one_epoch(epoch):
        order = tf.argsort(tf.random.stateless_uniform([count], seed=tf.stack([seed_t, epoch])))
        batches = tf.reshape(order[: steps * batch_size], [steps, batch_size])
        return tf.data.Dataset.from_tensor_slices(
            (tf.fill([steps], epoch), tf.range(steps, dtype=tf.int64), batches))

    augmentations = set(augment.split("+"))

    def gather(epoch, step, index):
        x = tf.cast(tf.gather(images_t, index), tf.float32) / 255.0
        step_key = epoch * 1_000_000 + step
        if "flip" in augmentations:
            flip = tf.random.stateless_uniform(
                [batch_size, 1, 1, 1], seed=tf.stack([seed_t + 1, step_key])) < 0.5
            x = tf.where(flip, tf.reverse(x, axis=[2]), x)
        if "shift" in augmentations:
            offsets = tf.random.stateless_uniform(
                [batch_size, 2], seed=tf.stack([seed_t + 2, step_key]), minval=0,
                maxval=2 * SHIFT_PIXELS + 1, dtype=tf.int32)
            x = random_shift(x, offsets)
        return x, tf.gather(labels_t, index)

    # Multi-worker: every worker builds the same pipeline and keeps its part
    # of each global batch (no files to shard by).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return (tf.data.Dataset.range(initial_epoch, max(epochs, initial_epoch))
            .flat_map(one_epoch)
            .map(gather, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE)
            .with_options(options))
