"""Group normalization of channels-last feature maps.

Reference: Wu & He (2018), "Group Normalization", arXiv:1803.08494, §3.1:
the set of Eq. 7 (one example, the channels of one group, every position)
used in Eqs. 1, 2 and 6. The channels are split into `G` groups of `C/G`
consecutive channels; each example and group gets its own mean μ and biased
variance σ² over the group's channels and all positions; then
`y = γ (x - μ) / sqrt(σ² + ε) + β` with per-channel γ and β. `G = 1` is
layer normalization, `G = C` instance normalization (§3.1). The
channels-per-group mode is Table 3 (bottom); zero-initialized γ for the last
normalization of each residual block is §4.1's choice, after Goyal et al.
(2017), arXiv:1706.02677.

Shapes: inputs `[B, L, C]`, `[B, H, W, C]` or `[B, T, H, W, C]` (video,
§4.3); `G` groups; `N` positions (`L`, `H·W` or `T·H·W`), so the statistics
of one group cover `N·C/G` values.

Why not `tf_keras.layers.GroupNormalization`: under `mixed_float16` it
computes the moments in float16, so a group whose `x²` exceeds 65504 comes
out as zeros; its divisibility error states the rule backwards; and it
weights its moments by an all-ones mask, which costs extra passes over the
input (`benchmarks/layers.py` times both layers).

Implementation notes: moments and normalization run in float32 when the
inputs are float16 or bfloat16 (the output is cast back). The work is
`tfcv_ops.group_norm` on the inputs reshaped to `[B, N, C]`: a fused C++
kernel and gradient on CPU (statistics summed in float64), and a
pure-TensorFlow twin under XLA, in exported SavedModels and without the
custom-op library. Both gradients are differentiable again, so gradient
penalties work. ε is rounded to float32 (the kernel's attribute).

Deviations from the paper: None.
"""

import math
import numbers

import tensorflow as tf
import tf_keras

import tfcv_ops

_DEFAULT_GROUPS = 32
_SUPPORTED_RANKS = (3, 4, 5)


def _divisors(number):
    """All divisors of `number`, for error messages."""
    return tuple(d for d in range(1, number + 1) if number % d == 0)


def _is_integer(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _normalize(flat, gamma, beta, groups, epsilon):
    """Eqs. 1, 2, 6 and 7 on a `[B, N, C]` tensor, with their gradient.

    Runs `tfcv_ops.group_norm`: the fused C++ kernel when the custom-op
    library holds it, the pure-TensorFlow twin (written, twice
    differentiable gradient) under XLA, during export, or without the
    library.

    Args:
      flat: `[B, N, C]` inputs, float32 or float64.
      gamma: `[C]` scale γ (ones when the layer does not scale).
      beta: `[C]` offset β (zeros when the layer does not center).
      groups: `G`, a divisor of `C`.
      epsilon: ε of Eq. 2.

    Returns:
      `[B, N, C]` outputs in `flat`'s dtype.
    """
    return tfcv_ops.group_norm(flat, gamma, beta, groups, epsilon)


@tf_keras.utils.register_keras_serializable(package="tfcv")
class GroupNormalization(tf_keras.layers.Layer):
    """Group normalization (Wu & He 2018, Eq. 7), channels last.

    Per example, the `C` channels are split into `G` groups of `C/G`
    consecutive channels; each group is normalized with its own mean and
    biased variance over its channels and all positions, then scaled and
    shifted per channel.

    Choose the groups either by number (`groups`, Table 3 top) or by size
    (`channels_per_group`, Table 3 bottom). When `channels_per_group` is
    given, `G = C / channels_per_group`, and `groups` must be left at its
    default or equal that `G`; an explicit `groups=32` cannot be told apart
    from the default and is therefore not checked.

    Args:
      groups: `int >= 1`, the number of groups `G` (default 32, the
        paper's); must divide `C` and be at most `C`.
      channels_per_group: `int >= 1` or `None` (default). If set, the
        group size `C/G`; must divide `C`.
      epsilon: `float > 0`, ε of Eq. 2 (default 1e-5, the paper's).
      center: `bool`, learn the offset β of Eq. 6 (default True).
      scale: `bool`, learn the scale γ of Eq. 6 (default True).
      gamma_initializer: initializer of γ (default `"ones"`). Pass
        `"zeros"` for the last normalization of a residual block, so that
        the block starts as the identity (§4.1).
      beta_initializer: initializer of β (default `"zeros"`).
      gamma_regularizer: optional regularizer of γ, e.g. the weight decay
        the paper applies to γ and β (§4.1).
      beta_regularizer: optional regularizer of β.
      **kwargs: base `tf_keras.layers.Layer` arguments (`name`, `dtype`).

    Attributes:
      resolved_groups: `G` in use, known once the layer is built.

    Call arguments:
      inputs: `[B, L, C]`, `[B, H, W, C]` or `[B, T, H, W, C]`; `C` known
        when the layer is built, the other axes may be dynamic.

    Returns:
      A tensor of the inputs' shape and dtype.

    Example:
      >>> norm = GroupNormalization(groups=4)
      >>> norm(tf.random.normal([2, 8, 8, 16])).shape
      TensorShape([2, 8, 8, 16])
    """

    def __init__(
        self,
        groups: int = _DEFAULT_GROUPS,
        channels_per_group: int | None = None,
        epsilon: float = 1e-5,
        center: bool = True,
        scale: bool = True,
        gamma_initializer="ones",
        beta_initializer="zeros",
        gamma_regularizer=None,
        beta_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not _is_integer(groups) or groups < 1:
            raise ValueError(
                f"`groups` must be an integer >= 1, got {groups!r}. Pass "
                "the number of channel groups G, e.g. groups=32."
            )
        if channels_per_group is not None and (
            not _is_integer(channels_per_group) or channels_per_group < 1
        ):
            raise ValueError(
                "`channels_per_group` must be None or an integer >= 1, got "
                f"{channels_per_group!r}. Pass the group size C/G, e.g. "
                "channels_per_group=16, or None to use `groups`."
            )
        if (
            isinstance(epsilon, bool)
            or not isinstance(epsilon, numbers.Real)
            or not (math.isfinite(epsilon) and epsilon > 0)
        ):
            raise ValueError(
                f"`epsilon` must be a number > 0, got {epsilon!r}; a finite "
                "one keeps "
                "1 / sqrt(σ² + ε) finite for constant groups. The paper "
                "uses 1e-5."
            )
        self.groups = int(groups)
        self.channels_per_group = (
            None if channels_per_group is None else int(channels_per_group)
        )
        self.epsilon = float(epsilon)
        self.center = center
        self.scale = scale
        self.gamma_initializer = tf_keras.initializers.get(gamma_initializer)
        self.beta_initializer = tf_keras.initializers.get(beta_initializer)
        self.gamma_regularizer = tf_keras.regularizers.get(gamma_regularizer)
        self.beta_regularizer = tf_keras.regularizers.get(beta_regularizer)
        self.resolved_groups = None

    def _resolve_groups(self, channels):
        """The number of groups `G` for `channels`, or a ValueError."""
        if self.channels_per_group is None:
            if self.groups > channels:
                raise ValueError(
                    f"`groups` (G={self.groups}) must not exceed the number "
                    f"of channels (C={channels}): every group needs at "
                    f"least one channel. Use groups <= {channels}."
                )
            if channels % self.groups:
                raise ValueError(
                    f"The number of channels (C={channels}) must be "
                    f"divisible by `groups` (G={self.groups}). Use one of "
                    f"the divisors of {channels}: {_divisors(channels)}."
                )
            return self.groups
        if channels % self.channels_per_group:
            raise ValueError(
                f"The number of channels (C={channels}) must be divisible "
                "by `channels_per_group` (got "
                f"{self.channels_per_group}). Use one of the divisors of "
                f"{channels}: {_divisors(channels)}."
            )
        groups = channels // self.channels_per_group
        if self.groups not in (_DEFAULT_GROUPS, groups):
            raise ValueError(
                f"`groups` (G={self.groups}) conflicts with "
                f"`channels_per_group`={self.channels_per_group}, which "
                f"gives G = {channels} / {self.channels_per_group} = "
                f"{groups} for C={channels} channels. Pass only one of the "
                "two (leave `groups` at its default)."
            )
        return groups

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank not in _SUPPORTED_RANKS:
            raise ValueError(
                f"{type(self).__name__} expects channels-last inputs of "
                "rank 3 [B, L, C], 4 [B, H, W, C] or 5 [B, T, H, W, C]; got "
                f"rank {input_shape.rank} with shape "
                f"{tuple(input_shape.as_list()) if input_shape.rank else ()}"
                ". Add or merge axes with a reshape."
            )
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                "The channel axis (last) of the input must be known when "
                f"{type(self).__name__} is built; got shape "
                f"{tuple(input_shape.as_list())}. Give the input a static "
                "channel count, e.g. tf_keras.Input((H, W, C))."
            )
        self.resolved_groups = self._resolve_groups(channels)
        self.input_spec = tf_keras.layers.InputSpec(
            min_ndim=3, max_ndim=5, axes={-1: channels}
        )

        # γ and β stay float32 under mixed precision (no autocast).
        self.gamma = None
        self.beta = None
        if self.scale:
            self.gamma = self.add_weight(
                name="gamma",
                shape=(channels,),
                initializer=self.gamma_initializer,
                regularizer=self.gamma_regularizer,
                experimental_autocast=False,
            )
        if self.center:
            self.beta = self.add_weight(
                name="beta",
                shape=(channels,),
                initializer=self.beta_initializer,
                regularizer=self.beta_regularizer,
                experimental_autocast=False,
            )
        super().build(input_shape)

    def call(self, inputs):
        channels = inputs.shape[-1]
        dynamic_shape = tf.shape(inputs)
        compute_dtype = inputs.dtype
        if compute_dtype in (tf.float16, tf.bfloat16):
            compute_dtype = tf.float32

        # [B, ..., C] -> [B, N, C]: the N positions of all spatial axes.
        positions = tf.reduce_prod(dynamic_shape[1:-1])
        flat = tf.reshape(
            tf.cast(inputs, compute_dtype),
            [dynamic_shape[0], positions, channels],
        )

        # Eqs. 1, 2, 6 and 7; γ = 1 and β = 0 when not learned.
        gamma = tf.ones([channels], compute_dtype)
        beta = tf.zeros([channels], compute_dtype)
        if self.scale:
            gamma = tf.cast(tf.convert_to_tensor(self.gamma), compute_dtype)
        if self.center:
            beta = tf.cast(tf.convert_to_tensor(self.beta), compute_dtype)
        outputs = _normalize(
            flat, gamma, beta, self.resolved_groups, self.epsilon
        )

        # [B, N, C] -> [B, ..., C]
        outputs = tf.reshape(outputs, dynamic_shape)
        return tf.cast(outputs, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "groups": self.groups,
                "channels_per_group": self.channels_per_group,
                "epsilon": self.epsilon,
                "center": self.center,
                "scale": self.scale,
                "gamma_initializer": tf_keras.initializers.serialize(
                    self.gamma_initializer
                ),
                "beta_initializer": tf_keras.initializers.serialize(
                    self.beta_initializer
                ),
                "gamma_regularizer": tf_keras.regularizers.serialize(
                    self.gamma_regularizer
                ),
                "beta_regularizer": tf_keras.regularizers.serialize(
                    self.beta_regularizer
                ),
            }
        )
        return config
