"""Batch normalization of SO(3) feature maps with Haar-weighted moments.

Spherical CNNs (Cohen, Geiger, Köhler & Welling, 2018, "Spherical CNNs",
arXiv:1801.10130), §5.3-5.4 (SO(3) conv - BN - ReLU blocks) with Ioffe &
Szegedy (2015), "Batch Normalization", arXiv:1502.03167, Algorithm 1.

The moments of channel `c` are averages over the batch and over SO(3)
with the normalised Haar measure (quadrature weights `q_j = w_j/(2b)²`):

    μ_c = (1/B) Σ_i Σ_grid q f_{i,c},
    σ²_c = (1/B) Σ_i Σ_grid q (f_{i,c} - μ_c)²

so they do not change when a map is rotated (exact for band-limited maps;
a plain average over the grid would over-weight the poles, where the
SOFT grid is dense). `y = γ (f - μ) / sqrt(σ² + ε) + β`, per channel,
which keeps the layer equivariant. Training mode uses the global batch
(sums all-reduced across replicas) and updates moving averages
`m ← momentum m + (1 - momentum) batch`; inference mode uses them.

Shape letters: `B` batch, `2b` grid side, `C` channels.

Deviations from the paper:
  - The paper does not say how BN averages over the grid; we weight by
    the Haar measure so that statistics are rotation-invariant.
"""

import tensorflow as tf
import tf_keras

from tfcv.layers.spherical import _common
from tfcv.layers.validation import check_epsilon


def _all_reduce_sum(value):
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        return context.all_reduce(tf.distribute.ReduceOp.SUM, value)
    return value


@tf_keras.utils.register_keras_serializable(package="tfcv")
class SO3BatchNormalization(tf_keras.layers.Layer):
    """Per-channel batch norm of SO(3) maps with Haar-weighted moments.

    Args:
      momentum: `float` in `[0, 1)`, weight of the old moving averages
        (default 0.99).
      epsilon: `float > 0` added to the variance (ε, default 1e-3).
      center: `bool`, learn an offset β (default True).
      scale: `bool`, learn a scale γ (default True).
      **kwargs: `tf_keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
      inputs: `[B, 2b, 2b, 2b, C]` on the SOFT grid, axes (β, α, γ).
      training: Python bool; true normalizes with the global batch's
        moments and updates the moving averages.

    Returns:
      `[B, 2b, 2b, 2b, C]` in the layer's compute dtype.

    Raises:
      ValueError: on `momentum` outside `[0, 1)`, an input that is not
        `[B, 2b, 2b, 2b, C]`, or `C` changed after `build`.

    Example:
      >>> SO3BatchNormalization()(tf.ones([2, 8, 8, 8, 3])).shape
      TensorShape([2, 8, 8, 8, 3])
    """

    def __init__(
        self,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_epsilon(epsilon)
        if isinstance(momentum, bool) or not (
            isinstance(momentum, (int, float)) and 0.0 <= momentum < 1.0
        ):
            raise ValueError(
                f"`momentum` must be a number in [0, 1), received "
                f"{momentum!r}; pass e.g. `momentum=0.99`."
            )
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)

    def _state(self, name, initializer):
        return self.add_weight(
            name=name,
            shape=(self.channels,),
            initializer=initializer,
            trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            experimental_autocast=False,
        )

    def build(self, input_shape):
        self.channels = _common.check_grid_input(self, input_shape, 3, None)
        self.bandwidth = int(input_shape[1]) // 2
        self.gamma = self.beta = None
        if self.scale:
            self.gamma = self.add_weight(
                name="gamma",
                shape=(self.channels,),
                initializer="ones",
                experimental_autocast=False,
            )
        if self.center:
            self.beta = self.add_weight(
                name="beta",
                shape=(self.channels,),
                initializer="zeros",
                experimental_autocast=False,
            )
        self.moving_mean = self._state("moving_mean", "zeros")
        self.moving_variance = self._state("moving_variance", "ones")
        super().build(input_shape)

    def _batch_moments(self, x):
        """Haar-weighted mean and variance `[C]` of the global batch."""
        weights = tf.constant(_common.haar_weights(self.bandwidth), x.dtype)
        count = tf.cast(tf.shape(x)[0:1], x.dtype)

        # Pass 1: [Σ_i ∫ f, B] -> μ [C].
        integral = tf.reduce_sum(x * weights, [0, 1, 2, 3])  # -> [C]
        packed = _all_reduce_sum(tf.concat([integral, count], 0))
        mean = packed[:-1] / packed[-1]

        # Pass 2: Σ_i ∫ (f - μ)² -> σ² [C] (biased, as Algorithm 1).
        squares = tf.reduce_sum(tf.square(x - mean) * weights, [0, 1, 2, 3])
        variance = _all_reduce_sum(squares) / packed[-1]
        return mean, variance

    def call(self, inputs, training=None):
        _common.check_channels(self, inputs, self.channels)
        x = tf.cast(inputs, _common.fft_dtype(self))
        if training:
            mean, variance = self._batch_moments(x)
            for state, value in (
                (self.moving_mean, mean),
                (self.moving_variance, variance),
            ):
                value = tf.cast(value, state.dtype)
                state.assign(
                    self.momentum * state + (1.0 - self.momentum) * value
                )
        else:
            mean = tf.cast(self.moving_mean, x.dtype)
            variance = tf.cast(self.moving_variance, x.dtype)

        # y = γ (f - μ) / sqrt(σ² + ε) + β: [B, 2b, 2b, 2b, C] * [C]
        multiplier = tf.math.rsqrt(variance + self.epsilon)
        if self.scale:
            multiplier *= tf.cast(self.gamma, x.dtype)
        outputs = (x - mean) * multiplier
        if self.center:
            outputs += tf.cast(self.beta, x.dtype)
        return tf.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "epsilon": self.epsilon,
                "center": self.center,
                "scale": self.scale,
            }
        )
        return config
