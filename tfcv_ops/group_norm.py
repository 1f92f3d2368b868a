"""Group normalization of `[B, N, C]` maps: a fused C++ kernel and its twin.

Reference: Wu & He (2018), "Group Normalization", arXiv:1803.08494, §3.1,
Eqs. 1, 2, 6 and 7. The `C` channels form `G` groups of `C/G` consecutive
channels; the set of Eq. 7 is one example and one group, `m = N·C/G`
values. Each set gets its mean μ and biased variance σ² (Eq. 2), and
`y = γ (x - μ) / sqrt(σ² + ε) + β` with per-channel γ and β (Eqs. 1, 6).

Two paths give the same values (to about 1e-6 relative in float32 and
1e-12 in float64):
  - the kernels `TfcvGroupNorm` / `TfcvGroupNormGrad` of
    `tfcv_ops/cc/group_norm.cc`: two passes over the map from memory
    forward (statistics, output) and two backward, sharded over the CPU
    threads (also over positions, so that a batch of 2 uses every core),
    every sum accumulated in float64;
  - the pure-TensorFlow twin `group_norm_reference`, whose gradient is
    written out and is itself differentiable (gradient penalties). It runs
    under XLA (`jit_compile=True`, TPU) and in exported SavedModels.

`group_norm` picks the path like the other ops of `tfcv_ops`
(`use_custom_op`, `set_use_custom_op`): the kernel when the library loads
and holds it, outside XLA and outside `tf.saved_model.save`; the twin
otherwise, with one warning per process when the library lacks the op.
The kernel's gradient is `TfcvGroupNormGrad`; the gradient of that op
(second order) is the twin's, recomputed from `dy`, `x` and γ.

Shapes: `B` batch, `N` positions (all spatial axes), `C` channels, `G`
groups.

Deviations from the paper: None. Numerics: both paths compute σ² as the
mean of squared deviations from μ (never E[x²] - μ²). The kernel keeps μ in
float64 and subtracts it in two parts, so for float32 inputs whose mean is
far larger than their spread (|μ| ≈ 1e4 σ) it stays accurate where the
twin's float32 arithmetic loses digits (1e-4 to 1e-3 relative there). ε is
rounded to float32 on both paths (the kernel's attribute is float32).
"""

import numbers

import numpy as np
import tensorflow as tf

from tfcv_ops import _loader
from tfcv_ops import primitives

_DTYPES = (tf.float32, tf.float64)
_OPS = ("tfcv_group_norm", "tfcv_group_norm_grad")


def group_norm(x, gamma, beta, groups: int, epsilon: float, use_custom_op=None):
    """Group normalization (Wu & He 2018, Eqs. 1, 2, 6, 7) of `[B, N, C]`.

    Args:
      x: float32 or float64 `[B, N, C]`; `C` static, `B` and `N` may be
        dynamic. Cast half-precision inputs to float32 first.
      gamma: `[C]` scale γ, `x`'s dtype (ones for no scale).
      beta: `[C]` offset β, `x`'s dtype (zeros for no offset).
      groups: `G`, an `int >= 1` that divides `C`.
      epsilon: ε of Eq. 2, a finite `float > 0` (rounded to float32).
      use_custom_op: `None` (default: the kernel when it can run, see
        `tfcv_ops.set_use_custom_op`), `True` (require it) or `False` (the
        pure-TensorFlow twin).

    Returns:
      `[B, N, C]` in `x`'s dtype.

    Raises:
      ValueError: for a rank, dtype, shape, `groups` or `epsilon` that
        breaks the rules above, or `use_custom_op=True` when the kernel
        cannot run (no library, inside XLA or `tf.saved_model.save`).

    Example:
      >>> x = tf.random.normal([2, 16, 8])
      >>> group_norm(x, tf.ones([8]), tf.zeros([8]), 4, 1e-5).shape
      TensorShape([2, 16, 8])
    """
    x, gamma, beta = _check_inputs(x, gamma, beta, groups)
    epsilon = _check_epsilon(epsilon)
    library = _select(use_custom_op)
    if library is None:
        return group_norm_reference(x, gamma, beta, groups, epsilon)
    outputs, _, _ = library.tfcv_group_norm(
        x=x, gamma=gamma, beta=beta, groups=groups, epsilon=epsilon
    )
    return outputs


def group_norm_reference(x, gamma, beta, groups: int, epsilon: float):
    """The pure-TensorFlow twin of `group_norm`, with a written gradient.

    Statistics are summed per channel first and then per group, and γ, β,
    μ and σ fold into one per-channel scale and offset, so every
    elementwise step broadcasts a `[B, 1, C]` tensor over `[B, N, C]`
    without a transpose. The gradient is itself differentiable.

    Args:
      x: float32 or float64 `[B, N, C]` with a static `C`.
      gamma: `[C]` scale γ in `x`'s dtype.
      beta: `[C]` offset β in `x`'s dtype.
      groups: `G`, a divisor of `C`.
      epsilon: ε of Eq. 2.

    Returns:
      `[B, N, C]` in `x`'s dtype.

    Example:
      >>> x = tf.random.normal([2, 16, 8])
      >>> group_norm_reference(x, tf.ones([8]), tf.zeros([8]), 4,
      ...                      1e-5).shape
      TensorShape([2, 16, 8])
    """

    @tf.custom_gradient
    def forward(flat, gamma, beta):
        count = _group_count(flat, groups)
        mean, inverse_std = _statistics(flat, groups, epsilon, count)

        # Eqs. 1 and 6 folded: y = x · γ/σ + (β - μ γ/σ).
        scale = gamma * inverse_std
        outputs = flat * scale + (beta - mean * scale)

        def backward(upstream):
            return _backward(
                upstream, flat, gamma, mean, inverse_std, groups, count
            )

        return outputs, backward

    return forward(x, gamma, beta)


# The twin's pieces, shared with the second-order gradient of the kernel.


def _sum_within_groups(per_channel, groups):
    """Sums a per-channel tensor over each group, repeated per channel.

    Args:
      per_channel: `[B, 1, C]` tensor.
      groups: `G`, a divisor of `C`.

    Returns:
      `[B, 1, C]`: entry `c` holds the sum over the channels of `c`'s group.
    """
    channels = per_channel.shape[-1]
    # [B, 1, C] -> [B, G, C/G]
    grouped = tf.reshape(per_channel, [-1, groups, channels // groups])
    group_sums = tf.reduce_sum(grouped, axis=-1, keepdims=True)
    # [B, G, 1] -> [B, G, C/G] -> [B, 1, C]
    repeated = tf.broadcast_to(group_sums, tf.shape(grouped))
    return tf.reshape(repeated, [-1, 1, channels])


def _group_mean(values, groups, count):
    """Mean of `[B, N, C]` values over each group's `count` entries.

    Returns:
      `[B, 1, C]`: entry `c` holds the mean over all positions and the
      channels of `c`'s group.
    """
    per_channel = tf.reduce_sum(values, axis=1, keepdims=True)
    return _sum_within_groups(per_channel, groups) / count


def _group_count(flat, groups):
    """m = N·C/G values per (example, group), in `flat`'s dtype."""
    channels_per_group = flat.shape[-1] // groups
    return tf.cast(tf.shape(flat)[1], flat.dtype) * channels_per_group


def _statistics(flat, groups, epsilon, count):
    """Eq. 2 in two passes, μ then σ² = mean((x - μ)²): `[B, 1, C]` each.

    Returns:
      `(μ, 1 / sqrt(σ² + ε))`, repeated over each group's channels.
    """
    mean = _group_mean(flat, groups, count)
    squares = tf.math.squared_difference(flat, mean)
    variance = _group_mean(squares, groups, count)
    return mean, tf.math.rsqrt(variance + epsilon)


def _backward(upstream, flat, gamma, mean, inverse_std, groups, count):
    """The written gradient of Eqs. 1, 2 and 6: `(dx, dγ, dβ)`.

    With x̂ = (x - μ)/σ and means over a group's m values:
      dβ = Σ dy,  dγ = Σ dy x̂,
      dx = (γ dy - mean(γ dy) - x̂ mean(γ dy x̂)) / σ.
    """
    # Per-channel sums over the N positions first: [B, 1, C].
    sum_upstream = tf.reduce_sum(upstream, axis=1, keepdims=True)
    sum_upstream_x = tf.reduce_sum(upstream * flat, axis=1, keepdims=True)
    sum_upstream_xhat = inverse_std * (sum_upstream_x - mean * sum_upstream)

    # Parameter gradients: [B, 1, C] -> [C].
    gamma_gradient = tf.reduce_sum(sum_upstream_xhat, axis=[0, 1])
    beta_gradient = tf.reduce_sum(sum_upstream, axis=[0, 1])

    # Group means of γ dy and γ dy x̂: [B, 1, C].
    mean_upstream = _sum_within_groups(gamma * sum_upstream, groups) / count
    mean_upstream_xhat = (
        _sum_within_groups(gamma * sum_upstream_xhat, groups) / count
    )

    # dx = dy γ/σ - x k + (μ k - mean(γ dy)/σ), k = mean(γ dy x̂)/σ².
    scale = gamma * inverse_std
    x_coefficient = mean_upstream_xhat * tf.square(inverse_std)
    constant = mean * x_coefficient - mean_upstream * inverse_std
    input_gradient = upstream * scale - flat * x_coefficient + constant
    return input_gradient, gamma_gradient, beta_gradient


def _reference_gradients(upstream, flat, gamma, groups, epsilon):
    """`(dx, dγ, dβ)` of the twin, statistics recomputed from `flat`."""
    count = _group_count(flat, groups)
    mean, inverse_std = _statistics(flat, groups, epsilon, count)
    return _backward(upstream, flat, gamma, mean, inverse_std, groups, count)


# Gradients of the kernels.


@tf.RegisterGradient("TfcvGroupNorm")
def _group_norm_gradient(op, upstream, *unused_statistics_gradients):
    """`TfcvGroupNormGrad`; `mean` and `inv_std` pass no gradient on.

    They are saved for the gradient only (`group_norm` does not return
    them), like the batch statistics of `FusedBatchNormV3`.
    """
    x, gamma, _ = op.inputs
    _, mean, inverse_std = op.outputs
    library = _loader.load_library()
    input_gradient, gamma_gradient, beta_gradient = (
        library.tfcv_group_norm_grad(
            dy=upstream,
            x=x,
            gamma=gamma,
            mean=mean,
            inv_std=inverse_std,
            groups=op.get_attr("groups"),
            epsilon=op.get_attr("epsilon"),
        )
    )
    return [input_gradient, gamma_gradient, beta_gradient]


@tf.RegisterGradient("TfcvGroupNormGrad")
def _group_norm_grad_gradient(op, *upstream):
    """Second order: differentiates the twin's gradient formula.

    `dx`, `dγ` and `dβ` are functions of `dy`, `x` and γ alone (`mean` and
    `inv_std` are functions of `x`); the twin recomputes the statistics, so
    differentiating it with respect to `dy`, `x` and γ gives the whole
    derivative, and `mean` and `inv_std` get none.
    """
    upstream_gradient, x, gamma = op.inputs[:3]
    groups = op.get_attr("groups")
    epsilon = op.get_attr("epsilon")
    with tf.GradientTape() as tape:
        tape.watch([upstream_gradient, x, gamma])
        gradients = _reference_gradients(
            upstream_gradient, x, gamma, groups, epsilon
        )
    # A missing upstream gradient is a zero one (None would mean ones).
    upstream = [
        tf.zeros_like(value) if gradient is None else gradient
        for gradient, value in zip(upstream, gradients)
    ]
    second_order = tape.gradient(
        gradients,
        [upstream_gradient, x, gamma],
        output_gradients=upstream,
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )
    return second_order + [None, None]


# Checks and dispatch.


def _select(use_custom_op):
    """The library holding both kernels, or `None` for the twin."""
    explicit = use_custom_op
    if explicit is None:
        explicit = primitives.get_use_custom_op()
    blocker = primitives.custom_op_blocker(use_custom_op)
    library = None
    if blocker is None:
        # Stops at the first missing op: one warning per process.
        if all(_loader.library_op(name) is not None for name in _OPS):
            library = _loader.load_library()
        else:
            blocker = "the custom-op library provides no `tfcv_group_norm`"
    if library is None and explicit is True:
        raise ValueError(
            f"`use_custom_op=True` was requested for `group_norm` but the "
            f"custom kernel cannot run: {blocker}; pass "
            f"`use_custom_op=None` or `False` to use the pure twin."
        )
    return library


def _check_inputs(x, gamma, beta, groups):
    """Converts the tensors; checks ranks, dtypes, `C` and `groups`."""
    x = tf.convert_to_tensor(x)
    if x.dtype not in _DTYPES:
        raise ValueError(
            f"`x` must be float32 or float64, received {x.dtype.name}; "
            f"cast it, e.g. `tf.cast(x, tf.float32)` for float16 or "
            f"bfloat16 inputs."
        )
    if x.shape.rank != 3 or x.shape[-1] is None:
        raise ValueError(
            f"`x` must have rank 3 [B, N, C] with a static C, received "
            f"shape {_shape(x)}; merge the spatial axes into N with a "
            f"reshape."
        )
    channels = x.shape[-1]
    if (
        isinstance(groups, (bool, np.bool_))
        or not isinstance(groups, (numbers.Integral, np.integer))
        or not 1 <= groups <= channels
        or channels % groups
    ):
        raise ValueError(
            f"`groups` must be an int that divides C = {channels} "
            f"(1 <= groups <= C), received {groups!r}; use one of "
            f"{tuple(d for d in range(1, channels + 1) if channels % d == 0)}."
        )
    tensors = []
    for name, value in (("gamma", gamma), ("beta", beta)):
        value = tf.convert_to_tensor(value)
        if value.dtype != x.dtype or value.shape.as_list() != [channels]:
            raise ValueError(
                f"`{name}` must be a {x.dtype.name} tensor of shape "
                f"({channels},) like `x`'s channels, received "
                f"{value.dtype.name} of shape {_shape(value)}; cast or "
                f"reshape it."
            )
        tensors.append(value)
    return (x, *tensors)


def _check_epsilon(epsilon) -> float:
    """ε as the float32 value both paths use."""
    valid = (
        not isinstance(epsilon, (bool, np.bool_))
        and isinstance(epsilon, (numbers.Real, np.floating))
        and 0 < epsilon <= np.finfo(np.float32).max
    )
    rounded = float(np.float32(epsilon)) if valid else 0.0
    if rounded <= 0:
        raise ValueError(
            f"`epsilon` must be a number > 0 that is finite and non-zero in "
            f"float32, received {epsilon!r}; the paper uses 1e-5."
        )
    return rounded


def _shape(tensor) -> tuple:
    if tensor.shape.rank is None:
        return "(unknown rank)"
    return tuple(tensor.shape.as_list())
