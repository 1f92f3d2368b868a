"""SAGAN's self-attention (non-local) block.

Reference: Zhang, Goodfellow, Metaxas, Odena (2019), "Self-Attention
Generative Adversarial Networks", arXiv:1805.08318, §3, Eqs. 1-3.

With N = H·W positions: keys f(x) = W_f x and queries g(x) = W_g x (C/8
channels each), values h(x) = W_h x, β_{j,i} = softmax_i(f(x_i)^T g(x_j))
(Eq. 1), o = W_v (β h) back to C channels (Eq. 2), and y = x + γ o with γ
initialized to 0, so the block starts as the identity. As in the authors' code
(and BigGAN's), keys and values are max-pooled 2x2, which quarters the cost.

Shapes: inputs `[B, H, W, C]`; attention map `[B, H·W, H·W/4]` with pooling.

Deviations from the paper: the value projection h has C/2 channels and
keys and values are pooled, as in the authors' released code (the paper's
text gives h C/8 channels, like f and g, and pools nothing); both are
arguments (`value_divisor=8, pool_keys=False` is the paper's text).
"""

import tensorflow as tf
import tf_keras

from tfcv.layers.spectral_normalization import SpectralNormalization
from tfcv.layers.validation import check_epsilon
from tfcv.layers.validation import check_positive_integer


@tf_keras.utils.register_keras_serializable(package="tfcv")
class SelfAttention(tf_keras.layers.Layer):
    """Self-attention block `y = x + γ · o(x)` (SAGAN Eq. 3).

    Args:
      key_divisor: `int >= 1`; f and g have `C // key_divisor` channels
        (default 8).
      value_divisor: `int >= 1`; h has `C // value_divisor` channels
        (default 2).
      pool_keys: `bool`, 2x2 max-pool keys and values (default True).
      spectral_norm: `bool`, spectrally normalize the four 1x1 convolutions
        (default True).
      epsilon: `float > 0` for spectral normalization (default 1e-4).

    Call arguments:
      inputs: `[B, H, W, C]`; H and W even when `pool_keys`.
      training: Python bool or boolean tensor (updates spectral-norm
        vectors).
      return_attention: if true, also return β `[B, H·W, N_keys]`.

    Example:
      >>> block = SelfAttention()
      >>> block(tf.random.normal([2, 8, 8, 16])).shape
      TensorShape([2, 8, 8, 16])
    """

    def __init__(
        self,
        key_divisor=8,
        value_divisor=2,
        pool_keys=True,
        spectral_norm=True,
        epsilon=1e-4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_integer(key_divisor, "key_divisor")
        check_positive_integer(value_divisor, "value_divisor")
        check_epsilon(epsilon)
        self.key_divisor = int(key_divisor)
        self.value_divisor = int(value_divisor)
        self.pool_keys = pool_keys
        self.spectral_norm = spectral_norm
        self.epsilon = epsilon

    def _conv(self, filters, name):
        conv = tf_keras.layers.Conv2D(
            filters,
            1,
            use_bias=False,
            kernel_initializer="orthogonal",
            name=name,
        )
        if self.spectral_norm:
            return SpectralNormalization(conv, epsilon=self.epsilon)
        return conv

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank != 4 or input_shape[-1] is None:
            raise ValueError(
                "SelfAttention expects inputs [B, H, W, C] with known C, "
                f"got shape {tuple(input_shape)}."
            )
        channels = int(input_shape[-1])
        odd = [size for size in input_shape.as_list()[1:3] if size and size % 2]
        if self.pool_keys and odd:
            raise ValueError(
                "SelfAttention with `pool_keys=True` needs even H and W, got "
                f"shape {tuple(input_shape)}; pass pool_keys=False or pad "
                "the input."
            )
        key_channels = channels // self.key_divisor
        value_channels = channels // self.value_divisor
        if key_channels < 1 or value_channels < 1:
            raise ValueError(
                f"`key_divisor` ({self.key_divisor}) and `value_divisor` "
                f"({self.value_divisor}) must each be <= the input's "
                f"{channels} channels; use more channels or smaller divisors."
            )
        # SAGAN Eq. 1: g(x_j) are the queries, f(x_i) the keys.
        self.query_conv = self._conv(key_channels, "g")
        self.key_conv = self._conv(key_channels, "f")
        self.value_conv = self._conv(value_channels, "h")
        self.output_conv = self._conv(channels, "v")
        self.gamma = self.add_weight(
            name="gamma", shape=(), initializer="zeros"
        )
        super().build(input_shape)

    def call(self, inputs, training=False, return_attention=False):
        kwargs = {"training": training} if self.spectral_norm else {}
        dynamic_shape = tf.shape(inputs)
        batch = dynamic_shape[0]
        height = inputs.shape[1] or dynamic_shape[1]
        width = inputs.shape[2] or dynamic_shape[2]

        # 1x1 projections; keys and values optionally pooled 2x2.
        queries = self.query_conv(inputs, **kwargs)
        keys = self.key_conv(inputs, **kwargs)
        values = self.value_conv(inputs, **kwargs)
        if self.pool_keys and not (
            isinstance(height, int) and isinstance(width, int)
        ):
            # Sizes known only at run time: still refuse odd ones.
            even = tf.logical_and(
                tf.equal(height % 2, 0), tf.equal(width % 2, 0)
            )
            with tf.control_dependencies(
                [
                    tf.debugging.Assert(
                        even,
                        ["SelfAttention with pool_keys=True needs even H, W"],
                    )
                ]
            ):
                keys = tf.identity(keys)
        if self.pool_keys:
            keys = tf.nn.max_pool2d(keys, 2, 2, "VALID")
            values = tf.nn.max_pool2d(values, 2, 2, "VALID")

        # [B, H, W, C'] -> [B, N, C'] (keys and values: [B, N', C'])
        queries = tf.reshape(queries, [batch, height * width, -1])
        keys = tf.reshape(keys, [batch, -1, keys.shape[-1]])
        values = tf.reshape(values, [batch, -1, values.shape[-1]])

        # Eq. 1: β = softmax over keys of f(x)^T g(x).
        # [B, N, C'] x [B, N', C']^T -> [B, N, N']
        attention_scores = tf.matmul(queries, keys, transpose_b=True)
        attention = tf.nn.softmax(
            tf.cast(attention_scores, tf.float32), axis=-1
        )
        attention = tf.cast(attention, values.dtype)

        # Eq. 2: o = v(Σ β h(x)).
        # [B, N, N'] x [B, N', C''] -> [B, N, C'']
        attended = tf.matmul(attention, values)
        # [B, N, C''] -> [B, H, W, C''] (C'' static, for symbolic inputs)
        attended = tf.reshape(
            attended, [batch, height, width, values.shape[-1]]
        )
        outputs = self.output_conv(attended, **kwargs)

        # Eq. 3: y = x + γ o.
        outputs = inputs + tf.cast(self.gamma, inputs.dtype) * outputs
        if return_attention:
            return outputs, attention
        return outputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "key_divisor": self.key_divisor,
                "value_divisor": self.value_divisor,
                "pool_keys": self.pool_keys,
                "spectral_norm": self.spectral_norm,
                "epsilon": self.epsilon,
            }
        )
        return config
