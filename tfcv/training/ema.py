"""Exponential moving average of a generator's weights.

Reference: Brock et al. (2019), arXiv:1809.11096, §3 and Appendix C: G's
weights are averaged with decay 0.9999, starting after 20k iterations;
Yazıcı et al. (2019), arXiv:1806.04498, for the analysis.

  w_ema <- decay · w_ema + (1 - decay) · w       (after `start_step`)
  w_ema <- w                                     (before it)

Non-trainable state that is not a statistic of the data (spectral-norm
vectors) is copied; batch-norm standing statistics belong to the averaged
model and are collected for it separately.

Deviations from the paper: None.
"""

import tensorflow as tf


def _pairs(source, target):
    source_vars = source.variables
    target_vars = target.variables
    if len(source_vars) != len(target_vars):
        raise ValueError(
            "EMA source and target models have different variables "
            f"({len(source_vars)} vs {len(target_vars)}); build both from "
            "the same config."
        )
    return list(zip(source_vars, target_vars))


def update_ema(source, target, decay, step, start_step):
    """Moves `target`'s weights toward `source`'s (call in cross-replica).

    Args:
      source: the trained model.
      target: its averaged copy (same architecture, built).
      decay: `float` in [0, 1).
      step: scalar int tensor, the training step just finished.
      start_step: steps before which the target just copies the source.
    """
    decay = tf.where(
        tf.cast(step, tf.int64) < start_step,
        tf.constant(0.0),
        tf.constant(float(decay)),
    )
    for source_var, target_var in _pairs(source, target):
        name = source_var.name
        if "standing_" in name:
            continue
        if source_var.trainable:
            target_var.assign(decay * target_var + (1.0 - decay) * source_var)
        else:
            target_var.assign(source_var)


def copy_weights(source, target):
    """Copies every variable except standing statistics."""
    for source_var, target_var in _pairs(source, target):
        if "standing_" not in source_var.name:
            target_var.assign(source_var)
