"""Residual up- and down-blocks of BigGAN's generator and discriminator.

Reference: Brock, Donahue, Simonyan (2019), "Large Scale GAN Training for
High Fidelity Natural Image Synthesis", arXiv:1809.11096, Appendix B,
Figure 15 (a) and (c).

Generator block: BN(c) -> ReLU -> upsample x2 -> conv3x3 -> BN(c) -> ReLU ->
conv3x3, plus an upsampled 1x1-convolution skip; `c` is the block's
conditioning vector. Discriminator block: (ReLU) -> conv3x3 -> ReLU ->
conv3x3 -> average-pool x2, plus a skip that is pooled and, where the
channel count changes, goes through a 1x1 convolution. Every convolution is
spectrally normalized and has a bias.

Shapes: `[B, H, W, C]` in, `[B, 2H, 2W, C']` (G) or `[B, H/2, W/2, C']` (D)
out.

Deviations from the paper: Figure 15 (c) draws a 1x1 convolution in the
skip of every D block, while Appendix B's text uses one "whenever the
number of channels needs to change". We follow the text, as Google's
TensorFlow re-implementation (compare_gan) does; its parameter counts are
the ones our tests check (D at 256 and 512 has down-blocks from 8ch to 8ch
and, at 512, from ch to ch). compare_gan drops the skip of such blocks
altogether; we keep an identity (pooled) skip, which has no parameters
either. BigGAN-PyTorch instead puts the 1x1 convolution in every
downsampling block (590,592 more parameters in D at 256 and 599,904 more
at 512, with ch = 96).
"""

import tensorflow as tf
import tf_keras

from tfcv.layers.conditional_batch_normalization import (
    ConditionalBatchNormalization,
)
from tfcv.layers.spectral_normalization import SpectralNormalization


def sn_conv(filters, kernel_size, epsilon, name):
    """A spectrally normalized, orthogonally initialized 'same' Conv2D."""
    conv = tf_keras.layers.Conv2D(
        filters,
        kernel_size,
        padding="same",
        kernel_initializer="orthogonal",
        name=name,
    )
    return SpectralNormalization(conv, epsilon=epsilon, name=f"sn_{name}")


def sn_dense(units, epsilon, name, use_bias=True):
    """A spectrally normalized, orthogonally initialized Dense layer."""
    dense = tf_keras.layers.Dense(
        units, use_bias=use_bias, kernel_initializer="orthogonal", name=name
    )
    return SpectralNormalization(dense, epsilon=epsilon, name=f"sn_{name}")


def projection_logits(hidden, y, linear, embedding, training):
    """Projection discriminator head (Miyato & Koyama 2018, Eq. 3).

    ReLU, global sum pooling to `h [B, C]`, then `w·h + b + <E y, h>`.

    Args:
      hidden: `[B, H, W, C]` features of D's last block.
      y: `[B, K]` one-hot classes (or mixtures).
      linear: the SN Dense `C -> 1` (with bias).
      embedding: the SN Dense `K -> C` without bias (the class embedding).
      training: whether SN vectors update.

    Returns:
      Logits `[B]`.
    """
    # Global sum pooling of ReLU features: [B, H, W, C] -> [B, C].
    features = tf.reduce_sum(tf.nn.relu(hidden), axis=[1, 2])

    # [B, C] x [C, 1] -> [B, 1] -> [B]
    logits = tf.squeeze(linear(features, training=training), -1)
    # [B, K] x [K, C] -> [B, C]
    class_embedding = embedding(y, training=training)
    return logits + tf.reduce_sum(class_embedding * features, axis=-1)


def upsample(inputs):
    """Nearest-neighbour upsampling x2: `[B, H, W, C] -> [B, 2H, 2W, C]`."""
    height, width, channels = inputs.shape[1:]
    # [B, H, 1, W, 1, C] -> [B, H, 2, W, 2, C] -> [B, 2H, 2W, C]
    tiled = tf.broadcast_to(
        inputs[:, :, None, :, None, :],
        [tf.shape(inputs)[0], height, 2, width, 2, channels],
    )
    return tf.reshape(tiled, [-1, 2 * height, 2 * width, channels])


def downsample(inputs):
    """2x2 average pooling: `[B, H, W, C] -> [B, H/2, W/2, C]`."""
    return tf.nn.avg_pool2d(inputs, 2, 2, "VALID")


@tf_keras.utils.register_keras_serializable(package="tfcv")
class GeneratorBlock(tf_keras.layers.Layer):
    """BigGAN generator residual up-block with class-conditional BN.

    Args:
      filters: output channels `C'`.
      epsilon: BN and SN epsilon (BigGAN: 1e-4).
      standing_levels: truncation levels for the BN standing statistics.
    """

    def __init__(self, filters, epsilon=1e-4, standing_levels=(1.0,), **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.epsilon = epsilon
        self.standing_levels = tuple(standing_levels)

    def build(self, input_shape):
        self.norm_1 = ConditionalBatchNormalization(
            epsilon=self.epsilon,
            standing_levels=self.standing_levels,
            name="cbn_1",
        )
        self.norm_2 = ConditionalBatchNormalization(
            epsilon=self.epsilon,
            standing_levels=self.standing_levels,
            name="cbn_2",
        )
        self.conv_1 = sn_conv(self.filters, 3, self.epsilon, "conv_1")
        self.conv_2 = sn_conv(self.filters, 3, self.epsilon, "conv_2")
        self.conv_skip = sn_conv(self.filters, 1, self.epsilon, "conv_skip")
        super().build(input_shape)

    def call(
        self, inputs, training=False, truncation=1.0, batch_statistics=None
    ):
        features, condition = inputs
        norm_kwargs = dict(
            training=training,
            truncation=truncation,
            batch_statistics=batch_statistics,
        )

        # Residual branch.
        hidden = self.norm_1((features, condition), **norm_kwargs)
        hidden = upsample(tf.nn.relu(hidden))
        hidden = self.conv_1(hidden, training=training)
        hidden = self.norm_2((hidden, condition), **norm_kwargs)
        hidden = self.conv_2(tf.nn.relu(hidden), training=training)

        # Skip branch.
        skip = self.conv_skip(upsample(features), training=training)
        return hidden + skip

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            epsilon=self.epsilon,
            standing_levels=list(self.standing_levels),
        )
        return config


@tf_keras.utils.register_keras_serializable(package="tfcv")
class DiscriminatorBlock(tf_keras.layers.Layer):
    """BigGAN discriminator residual down-block.

    Args:
      filters: output channels `C'`.
      downsample: `bool`, halve H and W (default True).
      preactivation: `bool`, ReLU before the first conv (False for the
        first block, which sees the image).
      epsilon: SN epsilon (BigGAN: 1e-4).

    The skip is a 1x1 convolution only when `C != C'`; otherwise the
    identity (pooled when downsampling).
    """

    def __init__(
        self,
        filters,
        downsample=True,
        preactivation=True,
        epsilon=1e-4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = filters
        self.downsample = downsample
        self.preactivation = preactivation
        self.epsilon = epsilon

    def build(self, input_shape):
        self.conv_1 = sn_conv(self.filters, 3, self.epsilon, "conv_1")
        self.conv_2 = sn_conv(self.filters, 3, self.epsilon, "conv_2")
        # NOTE: Figure 15 (c) has a 1x1 skip conv in every block; we use
        # one only where channels change, as Appendix B's text says.
        self.learnable_skip = int(input_shape[-1]) != self.filters
        if self.learnable_skip:
            self.conv_skip = sn_conv(self.filters, 1, self.epsilon, "conv_skip")
        super().build(input_shape)

    def call(self, inputs, training=False):
        # Residual branch.
        hidden = tf.nn.relu(inputs) if self.preactivation else inputs
        hidden = self.conv_1(hidden, training=training)
        hidden = self.conv_2(tf.nn.relu(hidden), training=training)
        if self.downsample:
            hidden = downsample(hidden)

        # Skip branch: conv then pool after a preactivation, else the reverse,
        # in the authors' order (both maps are linear, so they commute).
        skip = inputs
        if self.learnable_skip and self.preactivation:
            skip = self.conv_skip(skip, training=training)
        if self.downsample:
            skip = downsample(skip)
        if self.learnable_skip and not self.preactivation:
            skip = self.conv_skip(skip, training=training)
        return hidden + skip

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            downsample=self.downsample,
            preactivation=self.preactivation,
            epsilon=self.epsilon,
        )
        return config


def check_input_widths(config, y, z=None, images=None):
    """Refuses inputs whose static sizes do not match `config`.

    Keras builds a model from its first inputs, so a wrong width there
    would silently make a model that no longer matches its config.

    Raises:
      ValueError: naming the input, the size found and the size expected.
    """
    expected = [("y", y, -1, config.num_classes, "one-hot over the classes")]
    if z is not None:
        expected.append(("z", z, -1, config.dim_z, "dim_z"))
    if images is not None:
        for axis in (1, 2):
            expected.append(
                ("images", images, axis, config.resolution, "resolution")
            )
    for name, tensor, axis, size, meaning in expected:
        shape = tensor.shape
        if shape.rank is not None and shape.rank > abs(axis):
            found = shape[axis]
            if found is not None and found != size:
                raise ValueError(
                    f"`{name}` has size {found} on axis {axis} but this "
                    f"model's config needs {size} ({meaning}); shape "
                    f"{tuple(shape)}."
                )
