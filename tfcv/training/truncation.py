"""The truncation trick: latents resampled into `[-θ, θ]`.

Reference: Brock, Donahue, Simonyan (2019), "Large Scale GAN Training for
High Fidelity Natural Image Synthesis", arXiv:1809.11096, §4.1: "truncating
a z vector by resampling the values with magnitude above a chosen threshold
leads to improvement in individual sample quality at the cost of reduction
in overall sample variety". Resampling each value until it lands in
`[-θ, θ]` draws it from the standard normal truncated to that interval;
`tf.random.stateless_parameterized_truncated_normal` draws that directly.
Values are never clipped (clipping would pile mass up at ±θ).

Shapes: `[B, dim_z]` latents.

Deviations from the paper: None.
"""

import math
import numbers

import tensorflow as tf


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
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(
            "`threshold` must be a real number > 0, got "
            f"{type(threshold).__name__} {threshold!r}."
        )
    if not (math.isfinite(threshold) and threshold > 0):
        raise ValueError(
            f"`threshold` must be a finite number > 0, got {threshold!r}."
        )
    return tf.random.stateless_parameterized_truncated_normal(
        shape,
        seed=seed,
        means=0.0,
        stddevs=1.0,
        minvals=-float(threshold),
        maxvals=float(threshold),
    )
