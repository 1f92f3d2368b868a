"""Residual block of SO(3) convolutions for the QM7 model.

Spherical CNNs (Cohen, Geiger, Köhler & Welling, 2018, "Spherical CNNs",
arXiv:1801.10130), §5.4 (a ResNet-style S²/SO(3) model for molecules),
with He, Zhang, Ren & Sun (2016), "Deep Residual Learning", arXiv:1512.03385:

    y = ReLU(BN(SO3Conv(ReLU(BN(SO3Conv(f))))) + shortcut(f))

The first convolution goes from `bandwidth_in` to `bandwidth_out`, the
second keeps `bandwidth_out`. The shortcut is the identity when the input
already has `filters` channels and `bandwidth_in == bandwidth_out`, else an
`SO3Convolution` with the one-rotation grid `[[0, 0, 0]]` (a per-point
channel mix that also resamples to `bandwidth_out`, the analogue of a
1×1 projection). Every part is equivariant, so the block is.

Shape letters: `B` batch, `2b` grid side, `C` input channels, `O` filters.

Deviations from the paper:
  - The paper does not spell the block out; this is the standard
    post-activation ResNet block with our SO(3) layers.
"""

import tensorflow as tf
import tf_keras

from tfcv.layers.spherical import _common
from tfcv.layers.spherical.so3_batch_normalization import (
    SO3BatchNormalization,
)
from tfcv.layers.spherical.so3_convolution import SO3Convolution
from tfcv.layers.validation import check_positive_integer


@tf_keras.utils.register_keras_serializable(package="tfcv")
class SO3ResidualBlock(tf_keras.layers.Layer):
    """SO3Conv-BN-ReLU-SO3Conv-BN plus a shortcut, then ReLU.

    Args:
      filters: output channels `O`, `int >= 1`.
      bandwidth_in: input bandwidth `b_in` (grid side `2 b_in`), `1..64`.
      bandwidth_out: output bandwidth, `1 <= b_out <= b_in`.
      kernel_grid: `[N, 3]` rotations (β, α, γ) of both convolutions, or
        `None` (default) for `so3_near_identity_grid()`.
      **kwargs: `tf_keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
      inputs: `[B, 2 b_in, 2 b_in, 2 b_in, C]`, axes (β, α, γ).
      training: Python bool, passed to the batch normalizations.

    Returns:
      `[B, 2 b_out, 2 b_out, 2 b_out, O]` in the layer's compute dtype.

    Raises:
      ValueError: as `SO3Convolution` (arguments, grid, input shape).

    Example:
      >>> block = SO3ResidualBlock(4, bandwidth_in=4, bandwidth_out=3)
      >>> block(tf.zeros([2, 8, 8, 8, 2])).shape
      TensorShape([2, 6, 6, 6, 4])
    """

    def __init__(
        self,
        filters: int,
        bandwidth_in: int,
        bandwidth_out: int,
        kernel_grid=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_integer(filters, "filters")
        self.filters = int(filters)
        self.bandwidth_in, self.bandwidth_out = _common.check_bandwidths(
            bandwidth_in, bandwidth_out
        )
        policy = {"dtype": self.dtype_policy}
        # No convolution biases: the batch norms subtract them again.
        self.conv1 = SO3Convolution(
            filters, bandwidth_in, bandwidth_out, kernel_grid, False, **policy
        )
        self.norm1 = SO3BatchNormalization(**policy)
        self.conv2 = SO3Convolution(
            filters, bandwidth_out, bandwidth_out, kernel_grid, False, **policy
        )
        self.norm2 = SO3BatchNormalization(**policy)
        self.shortcut = None

    @property
    def kernel_grid(self) -> list:
        """The convolutions' kernel grid as nested lists `[N][3]`."""
        return self.conv1.kernel_grid

    def build(self, input_shape):
        self.channels = _common.check_grid_input(
            self, input_shape, 3, self.bandwidth_in
        )
        if self.channels != self.filters or (
            self.bandwidth_in != self.bandwidth_out
        ):
            self.shortcut = SO3Convolution(
                self.filters,
                self.bandwidth_in,
                self.bandwidth_out,
                kernel_grid=[[0.0, 0.0, 0.0]],
                use_bias=False,
                dtype=self.dtype_policy,
            )
            self.shortcut.build(input_shape)

        # Sublayers: [B, 2b_in, .., C] -> [B, 2b_out, .., O] -> same.
        self.conv1.build(input_shape)
        output_shape = self.conv1.compute_output_shape(input_shape)
        for layer in (self.norm1, self.conv2, self.norm2):
            layer.build(output_shape)
        super().build(input_shape)

    def call(self, inputs, training=None):
        _common.check_channels(self, inputs, self.channels)

        # Residual branch: conv - BN - ReLU - conv - BN.
        x = self.conv1(inputs)
        x = tf.nn.relu(self.norm1(x, training=training))
        x = self.norm2(self.conv2(x), training=training)

        # Shortcut, sum, ReLU.
        shortcut = inputs if self.shortcut is None else self.shortcut(inputs)
        return tf.nn.relu(x + tf.cast(shortcut, x.dtype))

    def compute_output_shape(self, input_shape):
        side = 2 * self.bandwidth_out
        batch = tf.TensorShape(input_shape)[0]
        return tf.TensorShape([batch, side, side, side, self.filters])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "bandwidth_in": self.bandwidth_in,
                "bandwidth_out": self.bandwidth_out,
                "kernel_grid": self.kernel_grid,
            }
        )
        return config
