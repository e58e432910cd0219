"""The bijectors of the multi-scale RealNVP (Dinh et al., 2017) for images, as TFP bijectors.

`tfb.RealNVP` splits only the last axis of a vector; images need spatial
(checkerboard) and channel-wise masks on `[H, W, C]` events, a squeeze and a
factor-out. Every bijector here has event rank 3 (`forward_min_event_ndims =
3`): inputs are `[batch, H, W, C]` and log-determinants `[batch]`.

Direction. As everywhere in TFP, `forward` is the generative direction (latent
z -> image x) and `inverse` the density direction: a
`tfd.TransformedDistribution(base, chain)` evaluates
`log p(x) = log p_base(chain.inverse(x)) + chain.inverse_log_det_jacobian(x)`.
In a `tfb.Chain([b1, b2, ...])` the first bijector is the one nearest the
data: `chain.inverse(x) = ...b2.inverse(b1.inverse(x))`.

Caching. TFP caches `inverse(y)` so that the log-determinant that follows
reuses it. The couplings and the factor-out compute their output and
log-determinant in one pass (`_augmented_forward`, `_augmented_inverse`, the
pattern of `tfb.FFJORD`) and hand both to the cache, so each coupling network
runs once per density evaluation. TFP keys its cache by (bijector
parameters, input tensor), so two equal bijectors share results; every
bijector here adds a serial number drawn at construction to its parameters,
and `RealNVP` builds a fresh chain on every call, so the cache lives for one
call and no call is served a result computed with older weights, or one
recorded on another gradient tape (a cached tensor is not on the current
tape, and the gradient through it would be silently lost).
"""

import itertools
import math

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import cache_util

tfb = tfp.bijectors

EVENT_NDIMS = 3  # [H, W, C]

_SERIAL = itertools.count()


def _unique(parameters):
    """Bijector parameters with a serial number, so that no two instances share a cache."""
    return dict(parameters, serial=next(_SERIAL))


def _sum_event(values):
    return tf.reduce_sum(values, axis=[-3, -2, -1])


class LogitTransform(tfb.Bijector):
    """Pixels in (0, 1) to the logit space the couplings work in (Dinh et al., section 4.1).

    inverse: y = logit(a + (1 - 2a) x), keeping x away from the 0 and 1
             where the logit is infinite;
    forward: x = (sigmoid(y) - a) / (1 - 2a);
    inverse log-det: sum over pixels of log(1 - 2a) - log p - log(1 - p),
             with p = a + (1 - 2a) x.

    Args:
        boundary: a, in (0, 1/2) (Dinh et al.: 0.05).
    """

    def __init__(self, boundary=0.05, validate_args=False, name="logit_transform"):
        parameters = dict(locals())
        if not 0.0 < boundary < 0.5:
            raise ValueError(f"boundary must be in (0, 0.5). Received: boundary={boundary}")
        self.boundary = float(boundary)
        super().__init__(forward_min_event_ndims=EVENT_NDIMS, validate_args=validate_args,
                         parameters=_unique(parameters), name=name)

    def _forward(self, y):
        a = self.boundary
        return (tf.sigmoid(y) - a) / (1.0 - 2.0 * a)

    def _inverse(self, x):
        a = self.boundary
        p = a + (1.0 - 2.0 * a) * x
        return tf.math.log(p) - tf.math.log1p(-p)

    def _forward_log_det_jacobian(self, y):
        # log sigmoid(y) + log sigmoid(-y) = -softplus(-y) - softplus(y)
        per_pixel = -tf.nn.softplus(-y) - tf.nn.softplus(y) - math.log(1.0 - 2.0 * self.boundary)
        return _sum_event(per_pixel)

    def _inverse_log_det_jacobian(self, x):
        a = self.boundary
        p = a + (1.0 - 2.0 * a) * x
        per_pixel = math.log(1.0 - 2.0 * a) - tf.math.log(p) - tf.math.log1p(-p)
        return _sum_event(per_pixel)


class Squeeze(tfb.Bijector):
    """Space-to-depth: forward `[H, W, C]` -> `[H/2, W/2, 4C]`; inverse depth-to-space.

    Every 2x2 block of pixels becomes 4 channels (Dinh et al., figure 3); a
    permutation, so both log-determinants are 0. In the flow's chain it
    appears as `tfb.Invert(Squeeze())`, which squeezes on the way from image
    to latent.
    """

    def __init__(self, validate_args=False, name="squeeze"):
        parameters = dict(locals())
        super().__init__(forward_min_event_ndims=EVENT_NDIMS, is_constant_jacobian=True,
                         validate_args=validate_args, parameters=_unique(parameters), name=name)

    def _forward(self, x):
        return tf.nn.space_to_depth(x, 2)

    def _inverse(self, y):
        return tf.nn.depth_to_space(y, 2)

    def _forward_log_det_jacobian(self, x):
        return tf.zeros([], x.dtype)

    def _inverse_log_det_jacobian(self, y):
        return tf.zeros([], y.dtype)

    def _forward_event_shape(self, shape):
        h, w, c = shape[-3:]
        return shape[:-3].concatenate([h // 2 if h is not None else None,
                                       w // 2 if w is not None else None,
                                       4 * c if c is not None else None])

    def _inverse_event_shape(self, shape):
        h, w, c = shape[-3:]
        return shape[:-3].concatenate([2 * h if h is not None else None,
                                       2 * w if w is not None else None,
                                       c // 4 if c is not None else None])

    def _forward_event_shape_tensor(self, shape):
        return tf.concat([shape[:-3], shape[-3:-1] // 2, 4 * shape[-1:]], axis=0)

    def _inverse_event_shape_tensor(self, shape):
        return tf.concat([shape[:-3], 2 * shape[-3:-1], shape[-1:] // 4], axis=0)


class _AugmentedBijector(tfb.Bijector):
    """A bijector whose `_augmented_forward` / `_augmented_inverse` return
    (output, {"fldj": ..., "ildj": ...}), so the output and its log-determinant
    come from one computation (see the module docstring, "Caching")."""

    _cache = cache_util.BijectorCacheWithGreedyAttrs(
        forward_name="_augmented_forward", inverse_name="_augmented_inverse")

    def _forward(self, x):
        return self._augmented_forward(x)[0]

    def _inverse(self, y):
        return self._augmented_inverse(y)[0]

    def _forward_log_det_jacobian(self, x):
        cached = self._cache.forward_attributes(x)
        if "fldj" not in cached:
            cached.update(self._augmented_forward(x)[1])
        return cached["fldj"]

    def _inverse_log_det_jacobian(self, y):
        cached = self._cache.inverse_attributes(y)
        if "ildj" not in cached:
            cached.update(self._augmented_inverse(y)[1])
        return cached["ildj"]


class _AffineCoupling(_AugmentedBijector):
    """y = x * exp(s(x)) + t(x), where s and t are 0 on the conditioning part
    of x and depend on that part only, so the Jacobian is triangular and
    log|det dy/dx| = sum of s. Subclasses define `_shift_and_log_scale(x)`,
    returning full-shape (t, s) with zeros on the conditioning part.
    """

    def __init__(self, shift_and_log_scale_fn, parameters, validate_args, name):
        self._shift_and_log_scale_fn = shift_and_log_scale_fn
        super().__init__(forward_min_event_ndims=EVENT_NDIMS, validate_args=validate_args,
                         parameters=_unique(parameters), name=name)

    def _augmented_forward(self, x):
        shift, log_scale = self._shift_and_log_scale(x)
        fldj = _sum_event(log_scale)
        return x * tf.exp(log_scale) + shift, {"fldj": fldj, "ildj": -fldj}

    def _augmented_inverse(self, y):
        # The conditioning part of y is that of x, so (t, s) are the forward's.
        shift, log_scale = self._shift_and_log_scale(y)
        fldj = _sum_event(log_scale)
        return (y - shift) * tf.exp(-log_scale), {"fldj": fldj, "ildj": -fldj}


class CheckerboardCoupling(_AffineCoupling):
    """Affine coupling with a spatial checkerboard mask (Dinh et al., section 3.4).

    With b the checkerboard, 1 where (row + column + parity) is even,
    broadcast over channels:

        y = b * x + (1 - b) * (x * exp(s(b * x)) + t(b * x))
        log|det dy/dx| = sum over pixels and channels of (1 - b) * s(b * x)

    The network sees b * x with b as an extra channel (so that it knows which
    pixels carry information) and returns `(shift, log_scale)` of shape
    `[B, H, W, C]`; only their (1 - b) part is used.

    Args:
        shift_and_log_scale_fn: callable `[B, H, W, C + 1] -> (shift, log_scale)`,
            each `[B, H, W, C]`.
        parity: 0 or 1: which squares of the checkerboard condition.
    """

    def __init__(self, shift_and_log_scale_fn, parity=0, validate_args=False,
                 name="checkerboard_coupling"):
        parameters = dict(locals())
        if parity not in (0, 1):
            raise ValueError(f"parity must be 0 or 1. Received: parity={parity}")
        self.parity = parity
        super().__init__(shift_and_log_scale_fn, parameters, validate_args, name)

    def _shift_and_log_scale(self, x):
        shape = tf.shape(x)
        rows = tf.range(shape[-3])[:, None]
        columns = tf.range(shape[-2])[None, :]
        mask = tf.cast((rows + columns + self.parity) % 2 == 0, x.dtype)[:, :, None]
        mask_channel = tf.broadcast_to(mask, tf.concat([shape[:-1], [1]], axis=0))
        shift, log_scale = self._shift_and_log_scale_fn(
            tf.concat([x * mask, mask_channel], axis=-1))
        return (1.0 - mask) * shift, (1.0 - mask) * log_scale


class ChannelCoupling(_AffineCoupling):
    """Affine coupling with a channel-wise mask (Dinh et al., section 3.4).

    The channels split in halves x = (x_a, x_b); with `reverse=False` x_a
    conditions and x_b changes, with `reverse=True` the other way round:

        y_a = x_a,  y_b = x_b * exp(s(x_a)) + t(x_a),  log|det| = sum of s(x_a)

    Args:
        shift_and_log_scale_fn: callable `[B, H, W, C/2] -> (shift, log_scale)`,
            each `[B, H, W, C/2]`.
        reverse: which half conditions.
    """

    def __init__(self, shift_and_log_scale_fn, reverse=False, validate_args=False,
                 name="channel_coupling"):
        parameters = dict(locals())
        self.reverse = bool(reverse)
        super().__init__(shift_and_log_scale_fn, parameters, validate_args, name)

    def _shift_and_log_scale(self, x):
        first, second = tf.split(x, 2, axis=-1)
        condition = second if self.reverse else first
        shift, log_scale = self._shift_and_log_scale_fn(condition)
        zeros = tf.zeros_like(condition)
        if self.reverse:
            return tf.concat([shift, zeros], -1), tf.concat([log_scale, zeros], -1)
        return tf.concat([zeros, shift], -1), tf.concat([zeros, log_scale], -1)


class FactorOut(_AugmentedBijector):
    """Multi-scale factor-out (Dinh et al., section 3.6) as a shape-keeping bijector.

    The first `keep` channels go through `bijector` (the later scales); the
    others are left as they are, which, under a standard normal base, makes
    them latent variables of their own: the factored-out half of the scale.

        y = concat(bijector.forward(x[..., :keep]), x[..., keep:])
        log|det dy/dx| = bijector.forward_log_det_jacobian(x[..., :keep])

    Args:
        bijector: a bijector of event rank 3 that keeps the shape of its input.
        keep: the number of leading channels it transforms.
    """

    def __init__(self, bijector, keep, validate_args=False, name="factor_out"):
        parameters = dict(locals())
        if keep < 1:
            raise ValueError(f"keep must be >= 1. Received: keep={keep}")
        self.bijector = bijector
        self.keep = int(keep)
        super().__init__(forward_min_event_ndims=EVENT_NDIMS, validate_args=validate_args,
                         parameters=_unique(parameters), name=name)

    def _augmented_forward(self, x):
        kept, rest = x[..., :self.keep], x[..., self.keep:]
        y = tf.concat([self.bijector.forward(kept), rest], axis=-1)
        fldj = self.bijector.forward_log_det_jacobian(kept, event_ndims=EVENT_NDIMS)
        return y, {"fldj": fldj, "ildj": -fldj}

    def _augmented_inverse(self, y):
        kept, rest = y[..., :self.keep], y[..., self.keep:]
        x = tf.concat([self.bijector.inverse(kept), rest], axis=-1)
        ildj = self.bijector.inverse_log_det_jacobian(kept, event_ndims=EVENT_NDIMS)
        return x, {"fldj": -ildj, "ildj": ildj}
