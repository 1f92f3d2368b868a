"""Maximum of SO(3) feature maps over the group: invariant features.

Spherical CNNs (Cohen, Geiger, Köhler & Welling, 2018, "Spherical CNNs",
arXiv:1801.10130), §5.3 (the SHREC17 model takes the max over SO(3)
before batch normalization and the dense layer).

`output[c] = max_R f_c(R)` over the SOFT grid points. The maximum of a
band-limited map over the grid is invariant under rotations only up to
the grid's sampling: a rotated peak can fall between samples.

Shape letters: `B` batch, `2b` grid side, `C` channels.

Deviations from the paper:
  None.
"""

import tensorflow as tf
import tf_keras

from tfcv.layers.spherical import _common


@tf_keras.utils.register_keras_serializable(package="tfcv")
class SO3GlobalMaxPool(tf_keras.layers.Layer):
    """Maximum over the SO(3) grid per channel.

    Args:
      **kwargs: `tf_keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
      inputs: `[B, 2b, 2b, 2b, C]` on the SOFT grid, axes (β, α, γ).

    Returns:
      `[B, C]` in the layer's compute dtype.

    Raises:
      ValueError: if the input is not `[B, 2b, 2b, 2b, C]` with equal even
        sides and a known `C`, or `C` changed after `build`.

    Example:
      >>> SO3GlobalMaxPool()(tf.ones([2, 8, 8, 8, 3])).shape
      TensorShape([2, 3])
    """

    def build(self, input_shape):
        self.channels = _common.check_grid_input(self, input_shape, 3, None)
        super().build(input_shape)

    def call(self, inputs):
        _common.check_channels(self, inputs, self.channels)

        # [B, 2b, 2b, 2b, C] -> [B, C]
        return tf.reduce_max(inputs, axis=[1, 2, 3])

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        return tf.TensorShape([input_shape[0], input_shape[-1]])
