"""Type II outliers: latent points on the boundary of each class, decoded onto the manifold.

002_50acf6af2ae3a4e5.txt, section 3.2. Per class c, the aggregate posterior
q(z | c) is approximated by one Gaussian N(mu_c, Sigma_c) fitted to the
latent codes of the class's training images (their mean encodings, the
codes Type I uses as well). r_c is the Mahalanobis radius that holds
`coverage` (paper: 95%) of those codes. Type II latent points lie on the
hyper-ellipsoid (eq. 4)

    (z - mu_c)^T Sigma_c^-1 (z - mu_c) = r_c^2,

drawn as z = mu_c + r_c L_c u with Sigma_c = L_c L_c^T (Cholesky) and u
uniform on the unit sphere (u = e / ||e||, e ~ N(0, I_d)): Rubinstein's
(1982) construction, which the paper cites. It is uniform on the sphere
before the linear map, so uniform in the Mahalanobis geometry of the class;
surface-area-uniform sampling of an elongated ellipsoid would favour its
long axes. The points are decoded with the class label: g(z, c).

A ridge of 1e-6 * I on each covariance keeps the Cholesky defined for a
class with collapsed latent axes.
"""

import dataclasses

import numpy as np

COVERAGE = 0.95  # 002_50acf6af2ae3a4e5.txt, section 3.2: r holds 95% of the training codes
COVARIANCE_RIDGE = 1e-6


@dataclasses.dataclass
class LatentClassStats:
    """Per-class Gaussians of the latent codes and their coverage radii.

    Attributes:
        means: [n, d].
        covariances: [n, d, d].
        radii: [n], the Mahalanobis distance (not squared) holding `coverage`
            of each class's codes.
        counts: [n], codes per class.
        coverage: the share the radii hold.
    """

    means: np.ndarray
    covariances: np.ndarray
    radii: np.ndarray
    counts: np.ndarray
    coverage: float

    def to_dict(self):
        return {"means": self.means.tolist(), "covariances": self.covariances.tolist(),
                "radii": self.radii.tolist(), "counts": self.counts.tolist(),
                "coverage": self.coverage}


def mahalanobis_squared(z, mean, covariance):
    """(z - mean)^T covariance^-1 (z - mean) for each row of z [N, d]."""
    diff = np.asarray(z, np.float64) - np.asarray(mean, np.float64)
    solved = np.linalg.solve(np.asarray(covariance, np.float64), diff.T).T
    return np.sum(diff * solved, axis=-1)


def fit_latent_stats(z, labels, num_classes, coverage=COVERAGE):
    """Fits N(mu_c, Sigma_c) and r_c for every class c in 0..num_classes-1.

    Raises:
        ValueError: `coverage` outside (0, 1], or a class with fewer than two codes.
    """
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must be in (0, 1]. Received: coverage={coverage}")
    z = np.asarray(z, np.float64)
    labels = np.asarray(labels)
    dim = z.shape[-1]
    means, covariances, radii, counts = [], [], [], []
    for c in range(num_classes):
        codes = z[labels == c]
        if len(codes) < 2:
            raise ValueError(f"Class {c} has {len(codes)} training image(s); fitting its latent "
                             "Gaussian needs at least 2. Received: a training set without "
                             "enough images of every class (raise --limit).")
        mean = codes.mean(axis=0)
        covariance = np.cov(codes, rowvar=False).reshape(dim, dim) \
            + COVARIANCE_RIDGE * np.eye(dim)
        distance = np.sqrt(mahalanobis_squared(codes, mean, covariance))
        means.append(mean)
        covariances.append(covariance)
        radii.append(np.quantile(distance, coverage))
        counts.append(len(codes))
    return LatentClassStats(np.stack(means), np.stack(covariances), np.asarray(radii),
                            np.asarray(counts), float(coverage))


def sample_ellipsoid(mean, covariance, radius, count, rng):
    """`count` points z with (z - mean)^T covariance^-1 (z - mean) = radius^2, [count, d]."""
    dim = len(mean)
    direction = rng.standard_normal((count, dim))
    direction /= np.maximum(np.linalg.norm(direction, axis=-1, keepdims=True), 1e-30)
    cholesky = np.linalg.cholesky(np.asarray(covariance, np.float64))
    return np.asarray(mean, np.float64) + radius * direction @ cholesky.T
