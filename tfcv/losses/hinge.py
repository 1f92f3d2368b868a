"""Hinge adversarial losses.

References: Lim & Ye (2017), "Geometric GAN", arXiv:1705.02894; Tran,
Ranganath, Blei (2017), arXiv:1707.06514; used by SAGAN (Zhang et al. 2019,
§4, Eq. 4) and BigGAN (Brock et al. 2019, §3).

  L_D = E[max(0, 1 - D(x, y))] + E[max(0, 1 + D(G(z), y))]
  L_G = -E[D(G(z), y)]

Both functions return *per-example* losses `[B]` so that a distributed
trainer can divide by the global batch size (`tf.nn.compute_average_loss`);
take `tf.reduce_mean` of the result for the plain expectation.

Deviations from the paper: None.
"""

import tensorflow as tf


def _check_logits(name, logits):
    if logits.shape.rank != 1:
        raise ValueError(
            f"`{name}` must be a vector of per-example logits [B], got shape "
            f"{tuple(logits.shape)}; squeeze the last axis first."
        )


def hinge_discriminator_loss(real_logits, fake_logits):
    """Per-example hinge loss of the discriminator (SAGAN Eq. 4, first line).

    Args:
      real_logits: `[B]` D's outputs on real images.
      fake_logits: `[B]` D's outputs on generated images.

    Returns:
      `[B]` tensor `max(0, 1 - real) + max(0, 1 + fake)`.

    Raises:
      ValueError: if either input is not rank 1 or their sizes differ.

    Example:
      >>> hinge_discriminator_loss(tf.constant([2.0]), tf.constant([-2.0]))
      <tf.Tensor: ... numpy=array([0.], dtype=float32)>
    """
    real_logits = tf.convert_to_tensor(real_logits)
    fake_logits = tf.convert_to_tensor(fake_logits)
    _check_logits("real_logits", real_logits)
    _check_logits("fake_logits", fake_logits)
    if (
        real_logits.shape[0] is not None
        and fake_logits.shape[0] is not None
        and real_logits.shape[0] != fake_logits.shape[0]
    ):
        raise ValueError(
            "`real_logits` and `fake_logits` must have the same batch size, "
            f"got {real_logits.shape[0]} and {fake_logits.shape[0]}."
        )
    return tf.nn.relu(1.0 - real_logits) + tf.nn.relu(1.0 + fake_logits)


def hinge_generator_loss(fake_logits):
    """Per-example hinge loss of the generator: `-D(G(z), y)`, shape `[B]`.

    Raises:
      ValueError: if `fake_logits` is not rank 1.
    """
    fake_logits = tf.convert_to_tensor(fake_logits)
    _check_logits("fake_logits", fake_logits)
    return -fake_logits
