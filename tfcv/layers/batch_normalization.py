"""Batch normalization for classifiers and backbones, and its frozen form.

References: Ioffe & Szegedy (2015), "Batch Normalization", arXiv:1502.03167,
Algorithm 1; Wu & He (2018), "Group Normalization", arXiv:1803.08494, §4.2,
for "BN*": batch normalization turned into a linear layer
`y = γ (x - μ) / σ + β` whose μ, σ, γ and β are all frozen (detection
fine-tuning at 1-2 images per device).

`BatchNormalization` is `tf_keras.layers.BatchNormalization` with the GN
paper's defaults (ε = 1e-5, moving-average momentum 0.9, as the ResNet code
the paper follows uses) and one check: in training, a batch of one example
per replica is refused. Its batch statistics are then those of a single
image — BN degenerates into normalizing each image by itself, at positions
where the map is 1×1 it outputs β whatever the input, and the moving
averages it accumulates match nothing seen at test time. Group normalization
does not depend on the batch and is the fix the GN paper proposes. The check
needs the batch size at trace time (eager calls, or a `tf.function` traced
with a fixed batch, as `drop_remainder=True` input pipelines give); a batch
axis of unknown size is not checked. With `synchronized=True` the statistics
are taken over the global batch (all replicas); otherwise each replica uses
its own examples, as the paper's BN baseline does ("computed within each
GPU", §4.1).

`FrozenBatchNormalization` is BN*: it always normalizes with its stored
moving mean and variance, never updates them, and has no trainable weights.
Its variables have the same names and shapes as `BatchNormalization`'s, so
a checkpoint or `get_weights()` of a model trained with BN loads into the
same model built with frozen BN.

Shapes: inputs `[B, ..., C]`, statistics over every axis but the last.

Deviations from the paper: None.
"""

import math
import numbers

import tensorflow as tf
import tf_keras

from tfcv.layers.validation import check_epsilon

# GN paper §4.1 follows fb.resnet.torch (its ref. [17]), whose batch
# normalization uses ε = 1e-5 and a moving-average momentum of 0.9.
DEFAULT_EPSILON = 1e-5
DEFAULT_MOMENTUM = 0.9


@tf_keras.utils.register_keras_serializable(package="tfcv")
class BatchNormalization(tf_keras.layers.BatchNormalization):
    """Batch normalization over the last axis that refuses 1-example batches.

    Args:
      momentum: moving-average momentum (default 0.9).
      epsilon: ε added to the variance (default 1e-5).
      synchronized: `bool`; statistics over the global batch of all
        replicas (cross-replica BN) instead of each replica's own.
      **kwargs: the other arguments of `tf_keras.layers.BatchNormalization`
        (`center`, `scale`, initializers, regularizers, `name`, ...).

    Call arguments:
      inputs: `[B, ..., C]`; in training `B` (per replica) must not be 1
        when it is known.
      training: Python bool or tensor.

    Raises:
      ValueError: in training, for a static per-replica batch of 1.

    Example:
      >>> norm = BatchNormalization()
      >>> norm(tf.ones([4, 8, 8, 16]), training=True).shape
      TensorShape([4, 8, 8, 16])
    """

    def __init__(
        self,
        momentum: float = DEFAULT_MOMENTUM,
        epsilon: float = DEFAULT_EPSILON,
        synchronized: bool = False,
        **kwargs,
    ):
        kwargs.pop("axis", None)
        check_epsilon(epsilon)
        if (
            isinstance(momentum, bool)
            or not isinstance(momentum, numbers.Real)
            or not (math.isfinite(momentum) and 0 <= momentum < 1)
        ):
            raise ValueError(
                f"`momentum` must be a number in [0, 1), got {momentum!r}; "
                "the moving averages keep this share of their old value "
                "(0.9 by default)."
            )
        super().__init__(
            axis=-1,
            momentum=momentum,
            epsilon=epsilon,
            synchronized=synchronized,
            **kwargs,
        )

    def call(self, inputs, training=None):
        # A tensor `training` may still be False at run time; only a
        # Python True (what Keras passes in fit and in our train steps) is
        # checked, so inference on one image stays allowed.
        replicas = 1
        context = tf.distribute.get_replica_context()
        if self.synchronized and context is not None:
            replicas = context.num_replicas_in_sync
        batch = inputs.shape[0]
        if (
            training is True
            and self.trainable
            and batch is not None
            and batch * replicas == 1
        ):
            raise ValueError(
                f"Batch normalization layer {self.name!r} got a batch of 1 "
                "example per replica in training: its batch statistics "
                "would be one image's own, so it cannot normalize across "
                "examples and its moving averages would not match test "
                "time. Use a per-replica batch of at least 2, or group "
                "normalization (norm='gn'), which does not depend on the "
                "batch."
            )
        return super().call(inputs, training=training)

    def get_config(self):
        config = super().get_config()
        config.pop("axis", None)
        return config


@tf_keras.utils.register_keras_serializable(package="tfcv")
class FrozenBatchNormalization(tf_keras.layers.BatchNormalization):
    """BN* (GN paper §4.2): `γ (x - μ) / sqrt(σ² + ε) + β`, all frozen.

    Always uses the stored moving mean and variance, in training too; μ,
    σ², γ and β are non-trainable. Load them from a model trained with
    `BatchNormalization` (same variable names and shapes).

    Args:
      epsilon: ε added to the variance (default 1e-5).
      **kwargs: the other arguments of `tf_keras.layers.BatchNormalization`
        (initializers, `name`, ...); `trainable` is always False.

    Example:
      >>> norm = FrozenBatchNormalization()
      >>> norm(tf.ones([1, 4, 4, 8]), training=True).shape
      TensorShape([1, 4, 4, 8])
    """

    def __init__(self, epsilon: float = DEFAULT_EPSILON, **kwargs):
        kwargs.pop("axis", None)
        kwargs.pop("trainable", None)
        for regularizer in ("gamma_regularizer", "beta_regularizer"):
            # Frozen parameters cannot be decayed: a regularizer would only
            # add a constant to the loss.
            kwargs.pop(regularizer, None)
        super().__init__(axis=-1, epsilon=epsilon, trainable=False, **kwargs)

    @property
    def trainable(self):
        return False

    @trainable.setter
    def trainable(self, value):
        # Keras sets `trainable` on every layer (e.g. model.trainable =
        # True); BN* stays frozen whatever it is told.
        del value
        self._trainable = False

    def call(self, inputs, training=None):
        del training
        return super().call(inputs, training=False)

    def get_config(self):
        config = super().get_config()
        for key in ("axis", "trainable"):
            config.pop(key, None)
        for key in ("gamma_regularizer", "beta_regularizer"):
            config.pop(key, None)
        return config
