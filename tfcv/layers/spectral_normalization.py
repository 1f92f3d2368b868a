"""Spectral normalization of a wrapped layer's kernel.

Reference: Miyato, Kataoka, Koyama, Yoshida (2018), "Spectral Normalization
for Generative Adversarial Networks", arXiv:1802.05957, Algorithm 1 and
Eq. 8; used in G and D by SAGAN (Zhang et al. 2019, §4) and BigGAN (Brock et
al. 2019, §3 and Appendix C, where epsilon is 1e-4).

The wrapped layer's kernel `W` stays the raw trainable weight. On each call
the largest singular value σ(W) is estimated by power iteration from a
persistent, non-trainable vector `u` (updated only when `training=True`), and
the wrapped layer runs with `W / σ(W)`. Gradients flow through σ as in the
paper; `u` and `v` are treated as constants.

How this differs from tf-keras' own `SpectralNormalization`: that layer
overwrites the kernel variable with `W / σ` (so no gradient flows through σ
and the raw weight is lost), and in tf-keras 2.21 it fails to build unless
`TF_USE_LEGACY_KERAS=1` is set. Ours reparameterizes without touching the
variable.

Matrix view of the kernel: Dense `[in, out]` and Conv2D `[h, w, in, out]` are
reshaped to `[-1, out]`; Conv1D/2D/3DTranspose kernels `[..., out, in]` are
transposed to put `out` last first; Embedding `[vocabulary, dim]` is used as it
is.

`training` may be a Python bool or a boolean tensor (then `tf.cond` picks). σ
is computed in float32 under mixed precision. Power iteration keeps `u` and `v`
at unit norm exactly (`u` starts as a random unit vector), and the kernel is
divided by `max(σ, ε)`, so a kernel whose σ is below ε (e.g. all zeros) is
scaled by 1/ε instead of producing NaN or exploding. Before the first training
call σ is estimated from the initial random `u` (an underestimate); a model's
first training step fixes that. Under `tf.distribute` every replica computes
the same `u` update from the same mirrored `W` and `u`; the variable is
aggregated with `ONLY_FIRST_REPLICA`, so replicas never disagree.

Deviations from the paper: None.
"""

import numbers

import tensorflow as tf
import tf_keras

from tfcv.layers.validation import check_epsilon


# Smallest norm power iteration divides by (guards only an all-zero vector).
_TINY = 1e-12


def _l2_normalize(vector):
    return vector / tf.maximum(tf.norm(vector), _TINY)


# Kernels laid out `[..., out, in]` (every other layer: `[..., in, out]`).
_TRANSPOSED_CONVOLUTIONS = (
    tf_keras.layers.Conv1DTranspose,
    tf_keras.layers.Conv2DTranspose,
    tf_keras.layers.Conv3DTranspose,
)


def _random_unit_vector(shape, dtype=None):
    """Initial `u`: a standard normal draw scaled to unit norm."""
    vector = tf.random.normal(shape, dtype=dtype or tf.float32)
    return _l2_normalize(vector)


@tf_keras.utils.register_keras_serializable(package="tfcv")
class SpectralNormalization(tf_keras.layers.Wrapper):
    """Wraps a Dense, Conv2D, Conv2DTranspose or Embedding layer with SN.

    Args:
      layer: the `tf_keras` layer to wrap; it must own a `kernel` (or, for
        Embedding, `embeddings`) variable.
      power_iterations: `int >= 1`, power-iteration steps per training call
        (default 1, as in the paper).
      epsilon: `float > 0`, the smallest σ the kernel is divided by
        (default 1e-4, BigGAN's value).

    Call arguments:
      inputs: what the wrapped layer takes.
      training: Python bool or boolean tensor; if true, run power
        iteration and update `u`.

    Example:
      >>> dense = SpectralNormalization(tf_keras.layers.Dense(8))
      >>> dense(tf.ones([2, 4]), training=True).shape
      TensorShape([2, 8])
    """

    def __init__(self, layer, power_iterations=1, epsilon=1e-4, **kwargs):
        if not isinstance(layer, tf_keras.layers.Layer):
            raise ValueError(
                "`layer` must be a tf_keras layer, got "
                f"{type(layer).__name__}. Pass e.g. tf_keras.layers.Dense(8)."
            )
        if (
            isinstance(power_iterations, bool)
            or not isinstance(power_iterations, numbers.Integral)
            or power_iterations < 1
        ):
            raise ValueError(
                "`power_iterations` must be an integer >= 1, got "
                f"{power_iterations!r}."
            )
        check_epsilon(epsilon)
        super().__init__(layer, **kwargs)
        self.power_iterations = int(power_iterations)
        self.epsilon = epsilon

    def _kernel_attribute(self):
        if isinstance(self.layer, tf_keras.layers.Embedding):
            return "embeddings"
        return "kernel"

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        attribute = self._kernel_attribute()
        if not hasattr(self.layer, attribute):
            raise ValueError(
                f"Layer {self.layer.name!r} of type "
                f"{type(self.layer).__name__} has no `{attribute}`; "
                "SpectralNormalization needs a Dense, Conv2D, "
                "Conv2DTranspose or Embedding layer."
            )
        self.kernel = getattr(self.layer, attribute)
        out_units = self._as_matrix(self.kernel).shape[-1]
        self.u = self.add_weight(
            name="u",
            shape=(1, out_units),
            initializer=_random_unit_vector,
            trainable=False,
            synchronization=tf.VariableSynchronization.ON_WRITE,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            experimental_autocast=False,
        )
        super().build(input_shape)

    def _as_matrix(self, kernel):
        if isinstance(self.layer, _TRANSPOSED_CONVOLUTIONS):
            # [..., out, in] -> [..., in, out]
            rank = len(kernel.shape)
            kernel = tf.transpose(
                kernel, list(range(rank - 2)) + [rank - 1, rank - 2]
            )
        # [..., out] -> [N, out]
        return tf.reshape(kernel, [-1, kernel.shape[-1]])

    def _power_iteration(self, matrix, u):
        """Algorithm 1: `power_iterations` steps from `u`; returns new `u`."""
        start = u
        for _ in range(self.power_iterations):
            # v = W u / |W u|: [1, out] x [out, N] -> [1, N]
            v = _l2_normalize(tf.matmul(u, matrix, transpose_b=True))
            # u = W^T v / |W^T v|: [1, N] x [N, out] -> [1, out]
            u = _l2_normalize(tf.matmul(v, matrix))

        # An all-zero W maps u to 0; keep the old u so iteration can resume.
        u = tf.where(tf.norm(u) > 0.5, u, start)
        return tf.stop_gradient(u)

    def _stored_u(self, dtype):
        # Read in `dtype` even where mixed precision would autocast `u`.
        return tf.cast(tf.convert_to_tensor(self.u), dtype)

    def _updated_u(self, matrix):
        """Runs power iteration, stores the result in `self.u`, returns it."""
        u = self._power_iteration(matrix, self._stored_u(matrix.dtype))
        self.u.assign(u)
        return u

    def normalized_kernel(self, training=False):
        """Returns `W / σ(W)`, updating `u` first when `training`.

        σ is computed in float32 when the kernel is read in a 16-bit
        dtype (mixed precision); the result has the kernel's read dtype.
        """
        kernel = tf.convert_to_tensor(self.kernel)
        matrix = self._as_matrix(kernel)
        if matrix.dtype in (tf.float16, tf.bfloat16):
            matrix = tf.cast(matrix, tf.float32)

        # Power iteration only in training; a tensor flag picks at run time.
        if isinstance(training, bool):
            if training:
                u = self._updated_u(matrix)
            else:
                u = self._stored_u(matrix.dtype)
        else:
            u = tf.cond(
                tf.cast(training, tf.bool),
                lambda: self._updated_u(matrix),
                lambda: self._stored_u(matrix.dtype),
            )
        v = tf.stop_gradient(
            _l2_normalize(tf.matmul(u, matrix, transpose_b=True))
        )

        # σ(W) = v^T W u (Eq. 7); the gradient flows through W here.
        # [1, N] x [N, out] x [out, 1] -> [1, 1]
        sigma = tf.matmul(tf.matmul(v, matrix), u, transpose_b=True)

        # A kernel with σ below ε is divided by ε (never by ~0).
        sigma = tf.maximum(tf.squeeze(sigma), self.epsilon)
        return kernel / tf.cast(sigma, kernel.dtype)

    def call(self, inputs, training=None):
        if training is None:
            training = tf_keras.backend.learning_phase()
        if not tf.is_tensor(training):
            training = bool(training)
        attribute = self._kernel_attribute()
        raw_kernel = getattr(self.layer, attribute)
        normalized = self.normalized_kernel(training=training)

        # Run the wrapped layer with W / σ in place of W, then restore W.
        object.__setattr__(self.layer, attribute, normalized)
        try:
            outputs = self.layer(inputs)
        finally:
            object.__setattr__(self.layer, attribute, raw_kernel)
        return outputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "power_iterations": self.power_iterations,
                "epsilon": self.epsilon,
            }
        )
        return config
