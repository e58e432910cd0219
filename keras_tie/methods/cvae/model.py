"""CVAE: the conditional variational auto-encoder that learns the data manifold.

Vernekar et al., "Out-of-distribution Detection in Classifiers via Generation"
(002_50acf6af2ae3a4e5.txt) model the in-distribution manifold with a CVAE
conditioned on the class label, then generate outliers off it (Type I,
`keras_tie.methods.cvae.off_manifold`) and on it (Type II, `keras_tie.methods.cvae.on_manifold`).
"""

import keras
import tensorflow as tf
from keras import layers

# 002_50acf6af2ae3a4e5.txt, section 4: latent dimension 8 for MNIST, 10 for Fashion-MNIST.
PAPER_LATENT_DIM = {"mnist": 8, "fashion_mnist": 10}


@keras.saving.register_keras_serializable(package="keras_tie")
class CVAE(keras.Model):
    """A conditional VAE: q(z | x, y) = N(mu, diag(sigma^2)), p(x | z, y) = Bernoulli(g(z, y)).

    Trained by maximising the ELBO, i.e. minimising

        loss = sum_pixels BCE(x, g(z, y)) + KL(N(mu, sigma^2) || N(0, I)),
        z = mu + sigma * eps, eps ~ N(0, I)  (real noise: the reparameterisation)

    averaged over the batch. The encoder h is two stride-2 3x3 convolutions
    (`width`, 2 `width` channels, ReLU), flattened and joined by the one-hot
    label, then a dense layer of `hidden_units` and the two heads mu and
    log sigma^2. The decoder g mirrors it: [z, one-hot] -> dense `hidden_units`
    -> dense to a (H/4, W/4, 2 `width`) map -> two stride-2 transposed
    convolutions -> sigmoid pixels in [0, 1]. The paper's appendix B gives
    the same shape of network (conv encoder, dense decoder input with the
    one-hot "cond_x"); the widths are our choice.

    Args:
        image_shape: (H, W, C) of pixels in [0, 1]; H and W divisible by 4.
        num_classes: n, the size of the one-hot condition.
        latent_dim: d (paper: 8 for MNIST, 10 for Fashion-MNIST).
        width: channels of the first convolution.
        hidden_units: units of the dense layer of encoder and decoder.
        seed: seed of the reparameterisation noise.

    Example:

    ```python
    cvae = CVAE((28, 28, 1), num_classes=10, latent_dim=8)
    cvae.compile(keras.optimizers.Adam(1e-3))
    cvae.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(128), epochs=10)
    mean, log_var = cvae.encode(x, y)
    x_hat = cvae.decode(mean, y)
    ```

    Reference:
        Vernekar et al. 2019, sections 3 and 4, appendix B; Kingma and Welling 2014.
    """

    def __init__(self, image_shape, num_classes, latent_dim=8, width=32, hidden_units=256,
                 seed=0, **kwargs):
        super().__init__(**kwargs)
        self.image_shape = tuple(int(d) for d in image_shape)
        if len(self.image_shape) != 3 or self.image_shape[0] % 4 or self.image_shape[1] % 4:
            raise ValueError("The CVAE needs (H, W, C) images with H and W divisible by 4. "
                             f"Received: image_shape={self.image_shape}")
        for name, value in (("num_classes", num_classes), ("latent_dim", latent_dim),
                            ("width", width), ("hidden_units", hidden_units)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1. Received: {name}={value}")
        self.num_classes = int(num_classes)
        self.latent_dim = int(latent_dim)
        self.width = int(width)
        self.hidden_units = int(hidden_units)
        self.seed = int(seed)
        self.encoder = self._build_encoder()
        self.decoder = self._build_decoder()
        self.built = True  # both halves are functional models, built above
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl_loss")

    def _build_encoder(self):
        image = keras.Input(self.image_shape, name="pixels")
        condition = keras.Input((self.num_classes,), name="one_hot")
        x = layers.Conv2D(self.width, 3, strides=2, padding="same", activation="relu",
                          name="conv1")(image)
        x = layers.Conv2D(2 * self.width, 3, strides=2, padding="same", activation="relu",
                          name="conv2")(x)
        x = layers.Flatten(name="flatten")(x)
        x = layers.Concatenate(name="join_label")([x, condition])
        x = layers.Dense(self.hidden_units, activation="relu", name="dense")(x)
        mean = layers.Dense(self.latent_dim, name="z_mean")(x)
        log_var = layers.Dense(self.latent_dim, name="z_log_var")(x)
        return keras.Model([image, condition], [mean, log_var], name="encoder")

    def _build_decoder(self):
        h, w, c = self.image_shape
        z = keras.Input((self.latent_dim,), name="z")
        condition = keras.Input((self.num_classes,), name="one_hot")
        x = layers.Concatenate(name="join_label")([z, condition])
        x = layers.Dense(self.hidden_units, activation="relu", name="dense")(x)
        x = layers.Dense((h // 4) * (w // 4) * 2 * self.width, activation="relu",
                         name="dense_map")(x)
        x = layers.Reshape((h // 4, w // 4, 2 * self.width), name="reshape")(x)
        x = layers.Conv2DTranspose(self.width, 3, strides=2, padding="same", activation="relu",
                                   name="deconv1")(x)
        x = layers.Conv2DTranspose(c, 3, strides=2, padding="same", name="deconv2")(x)
        pixels = layers.Activation("sigmoid", name="pixels")(x)
        return keras.Model([z, condition], pixels, name="decoder")

    def one_hot(self, labels):
        return tf.one_hot(tf.cast(labels, tf.int32), self.num_classes)

    def encode(self, images, labels, training=False):
        """(mean, log variance) of q(z | x, y), each [N, d]."""
        images = tf.convert_to_tensor(images, tf.float32)
        return self.encoder([images, self.one_hot(labels)], training=training)

    def decode(self, z, labels, training=False):
        """g(z, y): pixels in [0, 1], [N, H, W, C]."""
        z = tf.convert_to_tensor(z, tf.float32)
        return self.decoder([z, self.one_hot(labels)], training=training)

    def call(self, inputs, training=False):
        images, labels = inputs
        mean, _ = self.encode(images, labels, training=training)
        return self.decode(mean, labels, training=training)

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker]

    def elbo_terms(self, images, labels, sample=True, training=False):
        """(reconstruction loss, KL), each a batch mean; z is sampled when `sample`."""
        mean, log_var = self.encode(images, labels, training=training)
        z = mean
        if sample:
            eps = keras.random.normal(tf.shape(mean), seed=self.seed_generator)
            z = mean + tf.exp(0.5 * log_var) * eps
        reconstructed = self.decode(z, labels, training=training)
        bce = keras.losses.binary_crossentropy(images, reconstructed)  # mean over channels
        reconstruction = tf.reduce_mean(
            tf.reduce_sum(bce, axis=[1, 2]) * float(self.image_shape[-1]))
        kl = tf.reduce_mean(-0.5 * tf.reduce_sum(
            1.0 + log_var - tf.square(mean) - tf.exp(log_var), axis=-1))
        return reconstruction, kl

    def train_step(self, data):
        images, labels = data[0], data[1]
        with tf.GradientTape() as tape:
            reconstruction_loss, kl_loss = self.elbo_terms(images, labels, training=True)
            loss = reconstruction_loss + kl_loss
        variables = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return self._track(loss, reconstruction_loss, kl_loss)

    def test_step(self, data):
        reconstruction_loss, kl_loss = self.elbo_terms(data[0], data[1], sample=False)
        return self._track(reconstruction_loss + kl_loss, reconstruction_loss, kl_loss)

    def _track(self, loss, reconstruction_loss, kl_loss):
        self.loss_tracker.update_state(loss)
        self.reconstruction_tracker.update_state(reconstruction_loss)
        self.kl_tracker.update_state(kl_loss)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        config = super().get_config()
        config.update(image_shape=list(self.image_shape), num_classes=self.num_classes,
                      latent_dim=self.latent_dim, width=self.width,
                      hidden_units=self.hidden_units, seed=self.seed)
        return config
