"""The truncation trick: latents resampled into `[-θ, θ]`.

Reference: Brock, Donahue, Simonyan (2019), "Large Scale GAN Training for
High Fidelity Natural Image Synthesis", arXiv:1809.11096, §4.1: "truncating
a z vector by resampling the values with magnitude above a chosen threshold
leads to improvement in individual sample quality at the cost of reduction
in overall sample variety". Resampling each value until it lands in
`[-θ, θ]` draws it from the standard normal truncated to that interval;
`tf.random.stateless_parameterized_truncated_normal` draws that directly.
Values are never clipped (clipping would pile mass up at ±θ).

The published BigGAN modules take a second convention: z = t·u with u a
normal truncated at ±2, and the scale t also picks the batch-norm standing
statistics (`tfcv.training.standing_statistics`). At θ = 2 the two
conventions draw the same z (t = 1). For another θ, `module_truncation(θ)`
gives the t whose z has the same variance as the resampled latents, so the
standing statistics match the first layer's input moments.

Shapes: `[B, dim_z]` latents.

Deviations from the paper: None.
"""

import math
import numbers

import tensorflow as tf


def _check_threshold(threshold):
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(
            "`threshold` must be a real number > 0, got "
            f"{type(threshold).__name__} {threshold!r}."
        )
    if not (math.isfinite(threshold) and threshold > 0):
        raise ValueError(
            f"`threshold` must be a finite number > 0, got {threshold!r}."
        )


def truncated_normal_std(threshold):
    """Standard deviation of N(0, 1) truncated to `[-θ, θ]` (closed form)."""
    _check_threshold(threshold)
    if threshold < 1e-3:
        # Nearly uniform on [-θ, θ]; the closed form below cancels.
        return threshold / math.sqrt(3.0)
    density = math.exp(-0.5 * threshold * threshold) / math.sqrt(2 * math.pi)
    mass = math.erf(threshold / math.sqrt(2.0))  # P(|x| <= θ)
    return math.sqrt(max(1.0 - 2.0 * threshold * density / mass, 0.0))


def module_truncation(threshold):
    """The modules' `truncation` input matching resampling at `threshold`.

    The published modules expect z = t·u, u ~ N(0, 1) truncated at ±2; the
    returned t gives that z the variance of `truncated_latents(threshold)`
    (t = 1 exactly at θ = 2; t < 1 below, > 1 above, where the standing
    statistics stop at their largest level).
    """
    return truncated_normal_std(threshold) / truncated_normal_std(2.0)


def truncated_latents(shape, threshold, seed):
    """Standard-normal latents with every `|z| > threshold` resampled.

    Args:
      shape: e.g. `[B, dim_z]`.
      threshold: θ, a finite number > 0 (BigGAN §4.1; 2.0 is a common
        choice, smaller trades variety for fidelity).
      seed: a shape `[2]` integer seed (stateless: same seed, same z).

    Returns:
      float32 tensor `shape` with values in `[-θ, θ]`.

    Raises:
      TypeError: if `threshold` is not a real number.
      ValueError: if `threshold` is not finite and > 0.
    """
    _check_threshold(threshold)
    return tf.random.stateless_parameterized_truncated_normal(
        shape,
        seed=seed,
        means=0.0,
        stddevs=1.0,
        minvals=-float(threshold),
        maxvals=float(threshold),
    )
