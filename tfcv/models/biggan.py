"""A class-conditional BigGAN generator and projection discriminator.

Reference: Brock, Donahue, Simonyan (2019), "Large Scale GAN Training for
High Fidelity Natural Image Synthesis", arXiv:1809.11096, §3, Appendix B
(architecture: Tables 4-6, Figure 15) and C (training); self-attention from
Zhang et al. (2019), arXiv:1805.08318; projection discriminator from Miyato
& Koyama (2018), arXiv:1802.05637.

Generator: z `[B, dim_z]` is split into `num_blocks + 1` equal chunks
(hierarchical latent, 20-d in the paper). The first chunk is projected to a
`[4, 4, C0]` map; each later chunk is concatenated with the shared class
embedding `E y` (128-d) and conditions both batch norms of one residual
up-block (gains centred at 1). One self-attention (non-local) block follows
the block that reaches `attention_resolution`. Then BN (unconditional, own
gain and bias), ReLU, 3x3 conv to RGB and tanh. The class input `y` is
one-hot (or any mixture of classes) `[B, K]`, so the embedding is a linear
map, as in the published BigGAN modules.

Discriminator: residual down-blocks (the last keeps the side) with
self-attention at `d_attention_resolution`, ReLU, global sum pooling to
`h [B, C]`, and the projection output `w·h + b + <E_D y, h>`.

Every convolution and linear map except G's shared embedding is spectrally
normalized (ε 1e-4, Appendix C); every kernel is orthogonally initialized.

Where the parameters are, with `c = 20 + 128` the conditioning size: G's
shared embedding `K x 128` (no bias); the linear map `20 -> 16 C0` (bias);
per up-block `C -> C'`, two 3x3 convs and a 1x1 skip conv (biases) and two
conditional BNs with bias-free projections `c -> C` and `c -> C'` (gain and
bias each); attention `C -> C/8, C/8, C/2` and `C/2 -> C` 1x1 convs without
bias plus γ; the output BN's gain and bias; the 3x3 conv to RGB (bias). D:
per block two 3x3 convs (biases) and a 1x1 skip conv where channels change;
attention as in G; the linear output `C -> 1` (bias) and the class
embedding `K x C` (no bias). At ch = 96 and K = 1,000 this gives G / D
70,433,988 / 87,982,370 (128), 82,097,604 / 98,635,298 (256) and
82,468,068 / 98,801,378 (512).

Shapes: `B` batch, `K` classes, `C` channels, images `[B, R, R, 3]` in
[-1, 1].

Deviations from the paper:
- Tables 4-6 write G's first layer as "Linear (20 + 128) -> 4x4x16ch"; it
  takes the first 20-d chunk alone, as in the authors' BigGAN-PyTorch and
  in compare_gan (whose counts are the ones above).
- Tables 4-6 label D's first block "ch -> 2ch" (128, 256) or "ch -> ch"
  (512) although it reads the RGB image. Our first block maps 3 -> ch and
  each later block's input is the previous one's output, as in both
  codebases (so D's non-local block sees ch channels at 128, 2ch at 256 and
  512).
- D's skip has a 1x1 convolution only where channels change (Appendix B's
  text); see `tfcv/models/biggan_blocks.py`.
- `biggan_digits_32` is not in the paper: it follows the same pattern with
  fewer blocks (its multipliers are `BigGANConfig`'s defaults).
"""

import tensorflow as tf
import tf_keras

from tfcv.layers.cross_replica_batch_normalization import (
    CrossReplicaBatchNormalization,
)
from tfcv.layers.self_attention import SelfAttention
from tfcv.models.biggan_blocks import DiscriminatorBlock
from tfcv.models.biggan_blocks import GeneratorBlock
from tfcv.models.biggan_blocks import check_input_widths
from tfcv.models.biggan_blocks import projection_logits
from tfcv.models.biggan_blocks import sn_conv
from tfcv.models.biggan_blocks import sn_dense
from tfcv.models.biggan_config import BigGANConfig
from tfcv.models.biggan_config import paper_config


@tf_keras.utils.register_keras_serializable(package="tfcv")
class BigGANGenerator(tf_keras.Model):
    """Class-conditional BigGAN generator `G(z, y)`.

    Args:
      config: a `BigGANConfig` (or its dict form).

    Call arguments:
      inputs: `(z [B, dim_z], y [B, K])`, y one-hot (or a class mixture).
      training: Python bool: batch statistics and SN vector updates.
      truncation: scalar selecting standing BN statistics at inference.
      batch_statistics: use batch statistics without training (standing
        statistics collection).

    Example:
      >>> generator = BigGANGenerator(BigGANConfig(ch=8))
      >>> z, y = tf.random.normal([2, 80]), tf.one_hot([3, 7], 10)
      >>> generator((z, y)).shape
      TensorShape([2, 32, 32, 3])
    """

    def __init__(self, config=BigGANConfig(), **kwargs):
        super().__init__(**kwargs)
        self.config = config = BigGANConfig.coerce(config)
        ch, eps = config.ch, config.epsilon
        levels = config.standing_levels
        self.chunk_size = config.dim_z // config.num_chunks

        self.shared_embedding = tf_keras.layers.Dense(
            config.shared_dim,
            use_bias=False,
            kernel_initializer="orthogonal",
            name="shared_embedding",
        )
        self.base_channels = ch * config.g_multipliers[0]
        self.linear = sn_dense(4 * 4 * self.base_channels, eps, "linear")
        self.blocks = [
            GeneratorBlock(
                ch * multiplier,
                epsilon=eps,
                standing_levels=levels,
                name=f"block_{index}",
            )
            for index, multiplier in enumerate(config.g_multipliers[1:])
        ]
        # Attention follows the block whose output has the listed side.
        self.attention_index = config.generator_sides.index(
            config.attention_resolution
        )
        self.attention = SelfAttention(epsilon=eps, name="attention")
        self.output_norm = CrossReplicaBatchNormalization(
            epsilon=eps, standing_levels=levels, name="output_bn"
        )
        self.output_conv = sn_conv(3, 3, eps, "output_conv")

    def call(
        self, inputs, training=False, truncation=1.0, batch_statistics=None
    ):
        z, y = inputs
        check_input_widths(self.config, y, z=z)
        norm_kwargs = dict(
            training=training,
            truncation=truncation,
            batch_statistics=batch_statistics,
        )

        # Hierarchical latent: one chunk for the 4x4 map, one per block.
        chunks = tf.split(z, self.config.num_chunks, axis=-1)
        embedding = self.shared_embedding(y)
        hidden = self.linear(chunks[0], training=training)
        # [B, 16 C0] -> [B, 4, 4, C0]
        hidden = tf.reshape(hidden, [-1, 4, 4, self.base_channels])

        # Residual up-blocks conditioned on [chunk, E y].
        for index, block in enumerate(self.blocks):
            condition = tf.concat([chunks[index + 1], embedding], axis=-1)
            hidden = block((hidden, condition), **norm_kwargs)
            if index == self.attention_index:
                hidden = self.attention(hidden, training=training)

        # Output: BN, ReLU, conv to RGB, tanh.
        hidden = tf.nn.relu(self.output_norm(hidden, **norm_kwargs))
        hidden = self.output_conv(hidden, training=training)
        return tf.tanh(hidden)

    def batch_norm_layers(self):
        """All BN layers whose standing statistics must be collected."""
        layers = []
        for block in self.blocks:
            layers.extend([block.norm_1, block.norm_2])
        layers.append(self.output_norm)
        return layers

    def orthogonal_regularization_variables(self):
        """The kernels BigGAN's orthogonal regularization (§3.1) applies to.

        Every trainable weight of rank >= 2 except the shared class
        embedding, as in the authors' code: the linear map, every
        convolution (3x3, 1x1 skip, attention) and the conditional BNs'
        gain and bias projections. Biases, BN gains and γ are rank < 2.

        Returns:
          A list of variables; empty until the model has been called.
        """
        exempt = {id(v) for v in self.shared_embedding.trainable_weights}
        return [
            variable
            for variable in self.trainable_variables
            if variable.shape.rank >= 2 and id(variable) not in exempt
        ]

    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name}


@tf_keras.utils.register_keras_serializable(package="tfcv")
class BigGANDiscriminator(tf_keras.Model):
    """Projection discriminator `D(x, y)` returning logits `[B]`.

    Args:
      config: a `BigGANConfig` (or its dict form).

    Call arguments:
      inputs: `(images [B, R, R, 3], y [B, K])`.
      training: Python bool: SN vector updates.

    Example:
      >>> discriminator = BigGANDiscriminator(BigGANConfig(ch=8))
      >>> x, y = tf.zeros([2, 32, 32, 3]), tf.one_hot([3, 7], 10)
      >>> discriminator((x, y)).shape
      TensorShape([2])
    """

    # Subclasses for other papers' discriminators of the same design (SAGAN)
    # change the config class and the two static hooks below.
    config_class = BigGANConfig

    def __init__(self, config=BigGANConfig(), **kwargs):
        super().__init__(**kwargs)
        self.config = config = self.config_class.coerce(config)
        ch, eps = config.ch, self.spectral_epsilon(config)
        count = len(config.d_multipliers)
        self.blocks = [
            DiscriminatorBlock(
                ch * multiplier,
                downsample=index < count - 1,
                preactivation=index > 0,
                epsilon=eps,
                name=f"block_{index}",
            )
            for index, multiplier in enumerate(config.d_multipliers)
        ]
        self.attention_index = self.attention_block_index(config)
        self.attention = SelfAttention(epsilon=eps, name="attention")
        self.linear = sn_dense(1, eps, "linear")
        self.embedding = sn_dense(
            ch * config.d_multipliers[-1], eps, "embedding", use_bias=False
        )

    @staticmethod
    def spectral_epsilon(config):
        """ε of D's spectral normalization."""
        return config.epsilon

    @staticmethod
    def attention_block_index(config):
        """Index of the block after which self-attention runs: the first
        block whose output has the configured side."""
        return config.discriminator_sides.index(
            config.discriminator_attention_resolution
        )

    def call(self, inputs, training=False):
        images, y = inputs
        check_input_widths(self.config, y, images=images)
        hidden = images
        for index, block in enumerate(self.blocks):
            hidden = block(hidden, training=training)
            if index == self.attention_index:
                hidden = self.attention(hidden, training=training)

        # Projection head: w·h + b + <E y, h> on sum-pooled ReLU features.
        return projection_logits(
            hidden, y, self.linear, self.embedding, training
        )

    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name}


def biggan_digits_32(ch=32, num_classes=10, **overrides):
    """The 32x32 preset the main job trains on the digits.

    Args:
      ch: channel multiplier (default 32).
      num_classes: `K` (default 10, the digits).
      **overrides: any other `BigGANConfig` field.

    Returns:
      `(generator, discriminator, config)`.
    """
    config = BigGANConfig(ch=ch, num_classes=num_classes, **overrides)
    return BigGANGenerator(config), BigGANDiscriminator(config), config


def _paper_models(resolution, ch, num_classes, overrides):
    """`(generator, discriminator, config)` of the paper's `resolution`."""
    requested = overrides.pop("resolution", resolution)
    if requested != resolution:
        raise ValueError(
            f"`resolution`={requested!r} does not match the "
            f"biggan_{resolution} preset, which is Appendix B's "
            f"{resolution}x{resolution} architecture. Drop the override or "
            f"use one of biggan_128, biggan_256, biggan_512."
        )
    config = paper_config(resolution, ch, num_classes, **overrides)
    return BigGANGenerator(config), BigGANDiscriminator(config), config


def biggan_128(ch=96, num_classes=1000, **overrides):
    """BigGAN at 128x128 (Appendix B, Table 4): z 120, G 70.4M, D 88.0M.

    Args:
      ch: channel multiplier (default 96, the paper's).
      num_classes: `K` (default 1,000, ImageNet's).
      **overrides: any other `BigGANConfig` field (`resolution` must stay
        128).

    Returns:
      `(generator, discriminator, config)`.

    Example:
      >>> generator, discriminator, config = biggan_128(ch=8, num_classes=10)
      >>> config.dim_z, config.g_multipliers
      (120, (16, 16, 8, 4, 2, 1))
    """
    return _paper_models(128, ch, num_classes, overrides)


def biggan_256(ch=96, num_classes=1000, **overrides):
    """BigGAN at 256x256 (Appendix B, Table 5): z 140, G 82.1M, D 98.6M.

    G's non-local block is at 128x128, D's at 64x64. Arguments and result
    as `biggan_128` (`resolution` must stay 256).
    """
    return _paper_models(256, ch, num_classes, overrides)


def biggan_512(ch=96, num_classes=1000, **overrides):
    """BigGAN at 512x512 (Appendix B, Table 6): z 160, G 82.5M, D 98.8M.

    Both non-local blocks are at 64x64. Arguments and result as
    `biggan_128` (`resolution` must stay 512).
    """
    return _paper_models(512, ch, num_classes, overrides)


PRESETS = {
    "biggan_digits_32": biggan_digits_32,
    "biggan_128": biggan_128,
    "biggan_256": biggan_256,
    "biggan_512": biggan_512,
}
MODELS = PRESETS
