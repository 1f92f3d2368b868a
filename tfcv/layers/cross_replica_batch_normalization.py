"""Batch normalization over the global batch, with standing statistics.

References: Ioffe & Szegedy (2015), "Batch Normalization", arXiv:1502.03167,
Algorithm 1; cross-replica statistics and "standing statistics" as BigGAN
uses them (Brock, Donahue, Simonyan 2019, "Large Scale GAN Training for High
Fidelity Natural Image Synthesis", arXiv:1809.11096, §3 and Appendix C.1).

Training mode normalizes with the mean and variance of the *global* batch:
each replica sums `x`, `x^2` and its example count and the sums are
all-reduced across replicas, so the result does not depend on how the batch
is split, even unevenly. Inference mode normalizes with standing statistics
(BigGAN Appendix C.1): after training, N forward passes with fresh noise run
with batch statistics, and the standing mean and variance are the exact
averages of those N passes' batch means and batch variances -- not a
momentum average. One set is stored per truncation level
(`standing_levels`); at inference the statistics are interpolated linearly
in the truncation, so an output depends only on its own input, never on the
rest of the batch.

Before standing statistics are collected, inference mode uses mean 0 and
variance 1 (the output is `γ x + β`): there is no momentum average. Models
made of these layers collect them after training
(`tfcv.training.standing_statistics`).

Collecting standing statistics, for each level index `i`:
`start_standing_statistics()`, then N calls with `batch_statistics=True`
(trace any `tf.function` after the start), then
`finish_standing_statistics(i)`.

Shapes: inputs `[B, H, W, C]` (or `[B, C]`); statistics `[L, C]` for `L`
standing levels.

Deviations from the paper: BigGAN's standing statistics are collected at
the truncation used for sampling; we store one set per level and interpolate
between levels so that a single exported module serves any truncation.
"""

import math

import tensorflow as tf
import tf_keras

from tfcv.layers.validation import check_epsilon


def _all_reduce_sum(value):
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        return context.all_reduce(tf.distribute.ReduceOp.SUM, value)
    return value


def global_moments(inputs, axes):
    """Mean and variance over `axes` of the batch summed across replicas.

    Two passes, each one all-reduce: `[Σx, n]` gives the mean, then
    `Σ(x - mean)²` the variance. (One pass with `Σx²` would lose float32
    precision when the mean is large against the spread.)

    Args:
      inputs: `[B, ..., C]` tensor.
      axes: the axes to reduce (all but the channel axis).

    Returns:
      `(mean [C], variance [C])` in float32.
    """
    inputs = tf.cast(inputs, tf.float32)
    channels = inputs.shape[-1]
    count = tf.cast(
        tf.reduce_prod(tf.gather(tf.shape(inputs), axes)), tf.float32
    )

    # Pass 1: [Σx, n] -> mean [C].
    packed = _all_reduce_sum(
        tf.concat([tf.reduce_sum(inputs, axis=axes), tf.reshape(count, [1])], 0)
    )
    total = packed[channels]
    mean = packed[:channels] / total

    # Pass 2: Σ(x - mean)² -> biased variance [C].
    squares = tf.reduce_sum(tf.math.squared_difference(inputs, mean), axes)
    variance = _all_reduce_sum(squares) / total
    return mean, variance


@tf_keras.utils.register_keras_serializable(package="tfcv")
class CrossReplicaBatchNormalization(tf_keras.layers.Layer):
    """Batch norm with global-batch statistics and standing statistics.

    Args:
      epsilon: `float > 0` added to the variance (default 1e-4, BigGAN's).
      center: `bool`, learn an offset β (default True).
      scale: `bool`, learn a scale γ (default True).
      standing_levels: increasing sequence of truncation values at which
        standing statistics are stored (default `(1.0,)`).

    Call arguments:
      inputs: `[B, ..., C]`.
      training: Python bool or boolean tensor; true uses the global
        batch's statistics.
      truncation: scalar; which standing statistics to use at inference.
      batch_statistics: overrides `training` for the choice of statistics
        only (used to collect standing statistics without training).

    Example:
      >>> norm = CrossReplicaBatchNormalization()
      >>> norm(tf.random.normal([4, 8, 8, 3]), training=True).shape
      TensorShape([4, 8, 8, 3])
    """

    def __init__(
        self,
        epsilon=1e-4,
        center=True,
        scale=True,
        standing_levels=(1.0,),
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_epsilon(epsilon)
        try:
            levels = [float(level) for level in standing_levels]
        except (TypeError, ValueError):
            levels = []
        if (
            isinstance(standing_levels, str)
            or not levels
            or not all(math.isfinite(level) for level in levels)
            or any(b <= a for a, b in zip(levels, levels[1:]))
        ):
            raise ValueError(
                "`standing_levels` must be a non-empty increasing sequence "
                f"of finite numbers, got {standing_levels!r}."
            )
        self.epsilon = epsilon
        self.center = center
        self.scale = scale
        self.standing_levels = tuple(levels)
        self.accumulating = False

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                "The channel axis of the input must be known, got shape "
                f"{tuple(input_shape)}."
            )
        self.channels = int(channels)
        stat_shape = (len(self.standing_levels), self.channels)
        self.standing_mean = self.add_weight(
            name="standing_mean",
            shape=stat_shape,
            initializer="zeros",
            trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            experimental_autocast=False,
        )
        self.standing_variance = self.add_weight(
            name="standing_variance",
            shape=stat_shape,
            initializer="ones",
            trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            experimental_autocast=False,
        )
        # Σ over passes of [batch mean; batch variance], and the pass count.
        self.standing_accumulator = self.add_weight(
            name="standing_accumulator",
            shape=(2, self.channels),
            initializer="zeros",
            trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            experimental_autocast=False,
        )
        self.standing_passes = self.add_weight(
            name="standing_passes",
            shape=(),
            initializer="zeros",
            trainable=False,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            experimental_autocast=False,
        )
        if self.scale:
            self.gamma = self.add_weight(
                name="gamma", shape=(self.channels,), initializer="ones"
            )
        if self.center:
            self.beta = self.add_weight(
                name="beta", shape=(self.channels,), initializer="zeros"
            )
        super().build(input_shape)

    def _standing_moments(self, truncation):
        """Standing statistics interpolated linearly in the truncation."""
        levels = tf.constant(self.standing_levels, tf.float32)
        if len(self.standing_levels) == 1:
            return self.standing_mean[0], self.standing_variance[0]
        truncation = tf.clip_by_value(
            tf.cast(truncation, tf.float32), levels[0], levels[-1]
        )

        # Hat-function weights over the levels: [L].
        below = tf.concat([levels[:1], levels[:-1]], 0)
        above = tf.concat([levels[1:], levels[-1:]], 0)
        rising = (truncation - below) / tf.maximum(levels - below, 1e-12)
        falling = (above - truncation) / tf.maximum(above - levels, 1e-12)
        weights = tf.where(truncation <= levels, rising, falling)
        weights = tf.where(tf.equal(levels, truncation), 1.0, weights)
        weights = tf.clip_by_value(weights, 0.0, 1.0)
        weights = weights / tf.reduce_sum(weights)

        # [L] x [L, C] -> [C]
        mean = tf.linalg.matvec(self.standing_mean, weights, transpose_a=True)
        variance = tf.linalg.matvec(
            self.standing_variance, weights, transpose_a=True
        )
        return mean, variance

    def _batch_moments(self, inputs):
        """Global-batch moments, added to the accumulator when collecting."""
        axes = list(range(inputs.shape.rank - 1))
        mean, variance = global_moments(inputs, axes)
        if self.accumulating:
            self.standing_accumulator.assign_add(tf.stack([mean, variance]))
            self.standing_passes.assign_add(1.0)
        return mean, variance

    def normalize(self, inputs, training, truncation, batch_statistics):
        """Returns `(x - μ) / sqrt(σ² + ε)` in the input's dtype."""
        if inputs.shape.rank is None or inputs.shape[-1] != self.channels:
            raise ValueError(
                f"Layer {self.name!r} was built for {self.channels} "
                f"channels, got inputs of shape {tuple(inputs.shape)}."
            )
        use_batch = training if batch_statistics is None else batch_statistics
        if tf.is_tensor(use_batch):
            mean, variance = tf.cond(
                tf.cast(use_batch, tf.bool),
                lambda: self._batch_moments(inputs),
                lambda: self._standing_moments(truncation),
            )
        elif use_batch:
            mean, variance = self._batch_moments(inputs)
        else:
            mean, variance = self._standing_moments(truncation)
        inv = tf.math.rsqrt(variance + self.epsilon)
        normalized = (tf.cast(inputs, tf.float32) - mean) * inv
        return tf.cast(normalized, inputs.dtype)

    def start_standing_statistics(self):
        """Zeroes the accumulator; later batch-statistics calls add to it."""
        self.standing_accumulator.assign(
            tf.zeros_like(self.standing_accumulator)
        )
        self.standing_passes.assign(0.0)
        self.accumulating = True

    def finish_standing_statistics(self, level_index=0):
        """Stores the passes' average moments as level `level_index`'s."""
        if not 0 <= level_index < len(self.standing_levels):
            raise ValueError(
                f"`level_index` must be in [0, {len(self.standing_levels)}) "
                f"for standing_levels={self.standing_levels}, got "
                f"{level_index!r}."
            )
        passes = float(self.standing_passes.numpy())
        if passes < 1:
            raise ValueError(
                f"Layer {self.name!r} saw no batch-statistics pass since "
                "start_standing_statistics(); call it with "
                "batch_statistics=True at least once."
            )
        # [2, C] / N: the average batch mean and batch variance.
        average = self.standing_accumulator.numpy() / passes
        for variable, row in (
            (self.standing_mean, average[0]),
            (self.standing_variance, average[1]),
        ):
            values = variable.numpy()
            values[level_index] = row
            variable.assign(values)
        self.accumulating = False

    def call(
        self, inputs, training=False, truncation=1.0, batch_statistics=None
    ):
        outputs = self.normalize(inputs, training, truncation, batch_statistics)
        if self.scale:
            outputs = outputs * tf.cast(self.gamma, outputs.dtype)
        if self.center:
            outputs = outputs + tf.cast(self.beta, outputs.dtype)
        return outputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "epsilon": self.epsilon,
                "center": self.center,
                "scale": self.scale,
                "standing_levels": list(self.standing_levels),
            }
        )
        return config
