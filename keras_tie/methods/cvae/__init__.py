"""Outliers generated with a CVAE (002_50acf6af2ae3a4e5.txt): Type I off the data manifold,
Type II on it, and the sampler that mixes them into the extra (n+1-th) class."""

from keras_tie.methods.cvae.off_manifold import (
    decoder_jacobian,
    normal_component,
    off_manifold_samples,
)
from keras_tie.methods.cvae.on_manifold import (
    LatentClassStats,
    fit_latent_stats,
    mahalanobis_squared,
    sample_ellipsoid,
)
from keras_tie.methods.cvae.sampler import OutlierSampler
