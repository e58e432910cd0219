"""Type I outliers: training images pushed off the data manifold along a normal direction.

002_50acf6af2ae3a4e5.txt, section 3.1. At z = mu(x, y), the mean encoding of a
training image, the columns of the decoder Jacobian J = dg/dz (D x d) span
the tangent space of the manifold at g(z). A unit vector in the left null
space of J (the orthogonal complement of its column space: the normal space,
D - d dimensional, 776 for 28x28 images and d = 8) is drawn and the image is
moved along it:

    x~ = x + beta * v / ||v||,   v = (I - J (J^T J)^-1 J^T) u,   u ~ N(0, I_D),
    beta ~ U[beta_min, beta_max]  (paper: [0.1, 1])

Projecting an isotropic Gaussian onto the normal space gives an isotropic
Gaussian there, so v / ||v|| is uniform on the unit sphere of the normal
space, without storing its D - d basis vectors.

Vectorised: J of a whole batch comes from forward-mode autodiff (one
`tf.autodiff.ForwardAccumulator` pass over the batch tiled d times, one
tangent per latent axis: d JVPs instead of D reverse passes), and the
projection from batched Cholesky solves of the d x d Gram matrices, in
float64 so that v is orthogonal to J's columns to ~1e-12 rather than float32's
~1e-6. A ridge of 1e-9 * mean(diag(J^T J)) keeps the solve defined when a
latent axis is unused by the decoder (a column ~0, common in VAEs); it moves
the projection by ~1e-9 relative.
"""

import tensorflow as tf

RIDGE = 1e-9  # relative to the mean diagonal of J^T J (see the module docstring)


def decoder_jacobian(cvae, z, labels):
    """(g(z, y) flattened [B, D], J = dg/dz [B, D, d]) by forward-mode autodiff.

    Args:
        cvae: a `keras_tie.methods.cvae.model.CVAE`.
        z: latent points [B, d].
        labels: int class labels [B].
    """
    z = tf.convert_to_tensor(z, tf.float32)
    batch, dim = tf.shape(z)[0], z.shape[-1]
    # Row k * B + i carries image i with the tangent e_k.
    tiled = tf.tile(z, [dim, 1])
    tangents = tf.repeat(tf.eye(dim), repeats=batch, axis=0)
    tiled_labels = tf.tile(tf.reshape(labels, [-1]), [dim])
    with tf.autodiff.ForwardAccumulator(tiled, tangents) as accumulator:
        decoded = cvae.decode(tiled, tiled_labels, training=False)
    jvp = tf.reshape(accumulator.jvp(decoded), [dim, batch, -1])
    return tf.reshape(decoded[:batch], [batch, -1]), tf.transpose(jvp, [1, 2, 0])


def normal_component(jacobian, vectors):
    """v - J (J^T J)^-1 J^T v for each batch row: `vectors` [B, D] with the tangent part removed.

    Computed in float64 (returned as float64); see the module docstring for the ridge.
    """
    j = tf.cast(jacobian, tf.float64)
    v = tf.cast(vectors, tf.float64)[..., None]
    gram = tf.matmul(j, j, transpose_a=True)
    dim = tf.shape(gram)[-1]
    scale = tf.reduce_mean(tf.linalg.diag_part(gram), axis=-1)[:, None, None]
    gram += RIDGE * tf.maximum(scale, 1e-30) * tf.eye(dim, dtype=tf.float64)
    coefficients = tf.linalg.cholesky_solve(tf.linalg.cholesky(gram),
                                            tf.matmul(j, v, transpose_a=True))
    return tf.squeeze(v - tf.matmul(j, coefficients), -1)


def off_manifold_samples(cvae, images, labels, z, noise, beta):
    """Type I samples x + beta * v(x) and the unit normal directions v.

    Args:
        cvae: the CVAE.
        images: float pixels in [0, 1], [B, H, W, C] (the training images x).
        labels: int labels [B].
        z: the mean encodings mu(x, y) [B, d] (paper footnote 1: the mean,
            not a sample).
        noise: u ~ N(0, I_D), [B, D] (drawn by the caller, for reproducibility).
        beta: step lengths [B].

    Returns:
        (samples [B, H, W, C] float32, not clipped: a Type I sample may leave
        [0, 1] by up to beta; unit directions [B, D] float32).
    """
    _, jacobian = decoder_jacobian(cvae, z, labels)
    direction = normal_component(jacobian, noise)
    direction = direction / tf.maximum(tf.norm(direction, axis=-1, keepdims=True), 1e-30)
    direction = tf.cast(direction, tf.float32)
    step = tf.reshape(tf.cast(beta, tf.float32), [-1, 1, 1, 1])
    samples = tf.cast(images, tf.float32) + step * tf.reshape(direction, tf.shape(images))
    return samples, direction
