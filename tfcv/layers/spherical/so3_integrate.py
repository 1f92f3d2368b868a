"""Haar integral of SO(3) feature maps: rotation-invariant features.

Spherical CNNs (Cohen, Geiger, Köhler & Welling, 2018, "Spherical CNNs",
arXiv:1801.10130), §5.2 ("integrate" before the dense layer) and
Appendix A (normalised Haar measure `dR = dα/2π · sin β dβ/2 · dγ/2π`):

    output[c] = ∫_{SO(3)} f_c(R) dR
              ≈ Σ_{j,k1,k2} w_j / (2b)² f_c(β_j, α_k1, γ_k2)

with the SOFT quadrature weights `w_j` (`tfcv_ops.quadrature_weights`),
exact for band-limited maps (it is `f̂^0_{00}`), hence invariant under
rotations of the map.

Shape letters: `B` batch, `2b` grid side, `C` channels.

Deviations from the paper:
  None (the authors' code averages with the same quadrature weights).
"""

import tensorflow as tf
import tf_keras

from tfcv.layers.spherical import _common


@tf_keras.utils.register_keras_serializable(package="tfcv")
class SO3Integrate(tf_keras.layers.Layer):
    """Integral over SO(3) per channel with the Haar measure.

    Args:
      **kwargs: `tf_keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
      inputs: `[B, 2b, 2b, 2b, C]` on the SOFT grid, axes (β, α, γ).

    Returns:
      `[B, C]` in the layer's compute dtype (summed in float32 or float64).

    Raises:
      ValueError: if the input is not `[B, 2b, 2b, 2b, C]` with equal even
        sides and a known `C`, or `C` changed after `build`.

    Example:
      >>> SO3Integrate()(tf.ones([2, 8, 8, 8, 3])).shape
      TensorShape([2, 3])
    """

    def build(self, input_shape):
        self.channels = _common.check_grid_input(self, input_shape, 3, None)
        self.bandwidth = int(input_shape[1]) // 2
        super().build(input_shape)

    def call(self, inputs):
        _common.check_channels(self, inputs, self.channels)
        dtype = _common.fft_dtype(self)
        weights = tf.constant(_common.haar_weights(self.bandwidth), dtype)

        # Σ w_j/(2b)² f: [B, 2b, 2b, 2b, C] * [2b, 1, 1, 1] -> [B, C]
        integral = tf.reduce_sum(tf.cast(inputs, dtype) * weights, [1, 2, 3])
        return tf.cast(integral, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        return tf.TensorShape([input_shape[0], input_shape[-1]])
