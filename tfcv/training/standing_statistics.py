"""Standing batch-norm statistics for a generator's inference mode.

Reference: Brock et al. (2019), arXiv:1809.11096, Appendix C.1 ("standing
statistics"): after training, run G in training mode over many batches,
average each BN layer's batch means and variances, and use those averages
at inference. We collect one set per truncation level of the layers'
`standing_levels`, sampling z from a normal truncated at ±2 and scaled by
the level, as the published BigGAN modules expect their inputs.

Deviations from the paper: see `CrossReplicaBatchNormalization` (one set of
statistics per truncation level, interpolated).
"""

import tensorflow as tf


def sample_latents(num, dim_z, num_classes, seed, truncation=1.0):
    """Truncated-normal z `[num, dim_z]` (scaled) and one-hot y `[num, K]`."""
    seed = tf.constant(seed, tf.int64)
    z = tf.random.stateless_truncated_normal(
        [num, dim_z],
        seed=tf.stack([seed, tf.constant(1, tf.int64)]),
        alg="philox",
    )
    labels = tf.random.stateless_uniform(
        [num],
        seed=tf.stack([seed, tf.constant(2, tf.int64)]),
        maxval=num_classes,
        dtype=tf.int32,
        alg="philox",
    )
    return truncation * z, tf.one_hot(labels, num_classes)


def collect_standing_statistics(
    generator, num_batches=8, batch_size=64, seed=0
):
    """Sets every BN layer's standing statistics from fresh batches.

    Args:
      generator: a built generator of `tfcv.models` (any family).
      num_batches: batches averaged per truncation level.
      batch_size: examples per batch.
      seed: integer seed; the same seed gives the same statistics.
    """
    config = generator.config
    layers = generator.batch_norm_layers()

    # Traced on first use, after a start, so the layers add each pass's
    # moments; the same graph serves every level.
    @tf.function(reduce_retracing=True)
    def accumulate(z, y):
        generator((z, y), training=False, batch_statistics=True)

    for level_index, level in enumerate(layers[0].standing_levels):
        for layer in layers:
            layer.start_standing_statistics()
        for batch in range(num_batches):
            z, y = sample_latents(
                batch_size,
                config.dim_z,
                config.num_classes,
                seed=seed * 100_003 + level_index * 1_009 + batch,
                truncation=level,
            )
            accumulate(z, y)
        for layer in layers:
            layer.finish_standing_statistics(level_index)
