"""The TIE side of the CVAE bridge (docs/cvae.md): with `tie.cvae_run` a TIE garbage pool is
seeded with a cvae run's outliers and, with `tie.cvae_per_epoch`, topped up every epoch.

Experimental: the CVAE-mixed pool did not send more of MNIST to garbage than the Fashion-MNIST
preset (docs/experiments.md, "CVAE outliers").
"""

import keras
import numpy as np

from keras_tie.config import ConfigError
from keras_tie.methods.cvae.sampler import OutlierSampler


class AddOutliers(keras.callbacks.Callback):
    """Adds `count` CVAE outliers (half Type I, half Type II) to a TIE garbage pool after
    each epoch (`tie.cvae_per_epoch`); logs `cvae_added`.

    Placed after `InversionExclusion`, so the epoch's inverted samples go in
    first. Draws from (seed, epoch), like the inversion.
    """

    def __init__(self, sampler, pool, count, seed=0):
        super().__init__()
        self.sampler = sampler
        self.pool = pool
        self.count = int(count)
        self.seed = int(seed)

    def on_epoch_end(self, epoch, logs=None):
        rng = np.random.default_rng([self.seed, epoch, 5])
        self.pool.add(self.sampler.mixed(self.count, rng), rng)
        if logs is not None:
            logs["cvae_added"] = self.count
            logs["pool_size"] = len(self.pool)


def tie_pool_callbacks(config, pool, images, labels, dataset_name):
    """The TIE side of `tie.cvae_run`: seeds `pool` with CVAE outliers, returns the callbacks.

    With `tie.cvae_run` set, `tie.initial_pool_size` outliers of that run's
    CVAE (half Type I, half Type II, rounded to 8-bit pixels and clipped to
    [0, 1] like every image of the TIE pool) replace the garbage pool's
    initial Gaussian noise (`tie.cvae_initial = "replace"`) or join it
    (`"add"`); with `tie.cvae_per_epoch` > 0 an
    `AddOutliers` callback is returned. A resumed run's pool is then restored
    from its checkpoint over the seed.

    Raises:
        ConfigError: `tie.cvae_run` is not a finished cvae run of this dataset.
    """
    t = config.tie
    if not t.cvae_run:
        return []
    try:
        sampler = OutlierSampler.from_run(t.cvae_run, images, labels, dataset_name,
                                          beta_range=(config.cvae.beta_min,
                                                      config.cvae.beta_max),
                                          coverage=config.cvae.coverage,
                                          batch_size=config.cvae.jacobian_batch)
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(f"tie.cvae_run: {error}") from error
    rng = np.random.default_rng([config.seed, 0, 5])
    outliers = sampler.mixed(t.initial_pool_size, rng)
    if t.cvae_initial == "add":
        pool.add(outliers, rng)
    else:
        pool.set(outliers)
    return [AddOutliers(sampler, pool, t.cvae_per_epoch, config.seed)] if t.cvae_per_epoch \
        else []
