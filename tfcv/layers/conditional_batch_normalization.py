"""Class-conditional batch normalization with gains centred at 1.

References: de Vries et al. (2017), "Modulating early visual processing by
language", arXiv:1707.00683 (conditional BN); Brock, Donahue, Simonyan
(2019), "Large Scale GAN Training for High Fidelity Natural Image Synthesis",
arXiv:1809.11096, §3 and Appendix B: the conditioning vector (a latent chunk
concatenated with the shared class embedding) is linearly projected to
per-channel gains and biases; "gains centred at 1" means γ = 1 + W_γ c.

Normalization uses the global batch's statistics in training and standing
statistics at inference (see `CrossReplicaBatchNormalization`).

Shapes: inputs `[B, H, W, C]`, condition `[B, D]`.

Deviations from the paper: None.
"""

import tensorflow as tf
import tf_keras

from tfcv.layers.cross_replica_batch_normalization import (
    CrossReplicaBatchNormalization,
)
from tfcv.layers.spectral_normalization import SpectralNormalization


@tf_keras.utils.register_keras_serializable(package="tfcv")
class ConditionalBatchNormalization(CrossReplicaBatchNormalization):
    """Batch norm whose gain and bias are linear in a conditioning vector.

    Args:
      epsilon: `float > 0` added to the variance and used as the
        spectral-norm ε of the two projections (default 1e-4, BigGAN's
        value for both). The learned per-channel `center`/`scale` of the
        base class do not exist here: the projections replace them.
      spectral_norm: `bool`, spectrally normalize the two projections
        (default True, as in BigGAN's generator).
      standing_levels: truncation levels of the standing statistics.

    Call arguments:
      inputs: a pair `(features [B, H, W, C], condition [B, D])`.
      training, truncation, batch_statistics: see
        `CrossReplicaBatchNormalization`.

    Example:
      >>> norm = ConditionalBatchNormalization()
      >>> x, c = tf.random.normal([4, 8, 8, 3]), tf.random.normal([4, 5])
      >>> norm((x, c), training=True).shape
      TensorShape([4, 8, 8, 3])
    """

    def __init__(
        self,
        epsilon=1e-4,
        spectral_norm=True,
        standing_levels=(1.0,),
        **kwargs,
    ):
        kwargs.pop("center", None)
        kwargs.pop("scale", None)
        super().__init__(
            epsilon=epsilon,
            center=False,
            scale=False,
            standing_levels=standing_levels,
            **kwargs,
        )
        self.spectral_norm = spectral_norm

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
            raise ValueError(
                "ConditionalBatchNormalization takes a pair (features, "
                f"condition); got input shape {input_shape!r}."
            )
        feature_shape, _ = input_shape
        super().build(feature_shape)

        def projection(name):
            dense = tf_keras.layers.Dense(
                self.channels,
                use_bias=False,
                kernel_initializer="orthogonal",
                name=name,
            )
            if self.spectral_norm:
                return SpectralNormalization(dense, epsilon=self.epsilon)
            return dense

        self.gain_projection = projection("gain")
        self.bias_projection = projection("bias")

    def call(
        self, inputs, training=False, truncation=1.0, batch_statistics=None
    ):
        features, condition = inputs
        normalized = self.normalize(
            features, training, truncation, batch_statistics
        )

        # γ = 1 + W_γ c and β = W_β c, broadcast over H and W.
        kwargs = {"training": training} if self.spectral_norm else {}
        gain = 1.0 + self.gain_projection(condition, **kwargs)
        bias = self.bias_projection(condition, **kwargs)
        extra_axes = normalized.shape.rank - 2
        # [B, C] -> [B, 1, 1, C]
        gain = tf.reshape(gain, [-1] + [1] * extra_axes + [self.channels])
        bias = tf.reshape(bias, [-1] + [1] * extra_axes + [self.channels])
        return normalized * tf.cast(gain, normalized.dtype) + tf.cast(
            bias, normalized.dtype
        )

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        config = super().get_config()
        for key in ("center", "scale"):
            config.pop(key)
        config["spectral_norm"] = self.spectral_norm
        return config
