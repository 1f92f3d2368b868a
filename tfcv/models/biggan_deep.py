"""BigGAN-deep: a class-conditional generator and projection discriminator.

Reference: Brock, Donahue, Simonyan (2019), "Large Scale GAN Training for
High Fidelity Natural Image Synthesis", arXiv:1809.11096, Appendix B
(Figure 16, Tables 7-9) and Appendix C (ε, orthogonal initialization,
spectral norm); self-attention from Zhang et al. (2019), arXiv:1805.08318;
projection discriminator from Miyato & Koyama (2018), arXiv:1802.05637.

Generator: the whole latent z `[B, dim_z]` is concatenated with the shared
class embedding `E y` into `c [B, dim_z + shared_dim]` (no chunks). A linear
layer maps `c` to a `[4, 4, 16 ch]` map; each resolution stage holds
`blocks_per_resolution` bottleneck blocks, all batch norms conditioned on
`c`, of which only the last upsamples and narrows; one self-attention block
follows the stage that reaches `attention_resolution`; then BN, ReLU, 3x3
conv to RGB and tanh. The class input `y` is one-hot (or any mixture of
classes) `[B, K]`, so both class embeddings are linear maps of `y`.

Discriminator, the reflection of G: a 3x3 conv from RGB to `ch` channels,
stages of blocks whose first block pools and widens, self-attention at
`attention_resolution`, ReLU, global sum pooling to `h [B, C]`, and the
projection output `w·h + b + <E_D y, h>`.

Shapes: `B` batch, `K` classes, `R` resolution; images `[B, R, R, 3]` in
[-1, 1].

Deviations from the paper: None from Tables 7-9. Choices the paper leaves
open follow the authors' BigGAN-PyTorch code (`BigGANdeep.py`); with them
BigGAN-deep-128 at ch 128 has exactly 50,244,484 (G) and 34,590,210 (D)
trainable parameters:

- every convolution and the G and D linear layers carry a bias; the
  conditional-BN projections (input `dim_z + shared_dim`), the attention
  convolutions and the class embeddings do not;
- bottleneck width `C_in / 4` in G and `C_out / 4` in D;
- within a stage, G's non-upsampling block comes first and D's
  downsampling block comes first (as Tables 7-9 list them);
- the attention block uses keys and queries of `C/8`, values of `C/2`, 2x2
  pooled keys and values (as in SAGAN's and BigGAN's code);
- G's final BN has a learned gain and bias and no class conditioning.

One place where the authors' code departs from the paper we do not follow:
its G output conv has 128 channels of which the first 3 are kept; we use
the tables' `ch -> 3` conv. (The 128-channel conv adds 144,125 parameters,
50,388,609 in all: the paper's rounded "50.4M".)
"""

import tensorflow as tf
import tf_keras

from tfcv.layers.cross_replica_batch_normalization import (
    CrossReplicaBatchNormalization,
)
from tfcv.layers.self_attention import SelfAttention
from tfcv.models.biggan_blocks import check_input_widths
from tfcv.models.biggan_blocks import projection_logits
from tfcv.models.biggan_blocks import sn_conv
from tfcv.models.biggan_blocks import sn_dense
from tfcv.models.biggan_deep_blocks import BigGANDeepDiscriminatorBlock
from tfcv.models.biggan_deep_blocks import BigGANDeepGeneratorBlock
from tfcv.models.biggan_deep_config import BigGANDeepConfig


@tf_keras.utils.register_keras_serializable(package="tfcv")
class BigGANDeepGenerator(tf_keras.Model):
    """Class-conditional BigGAN-deep generator `G(z, y)` (Figure 16 a).

    Args:
      config: a `BigGANDeepConfig` (or its dict form).

    Call arguments:
      inputs: `(z [B, dim_z], y [B, K])`, y one-hot (or a class mixture).
      training: Python bool: batch statistics and SN vector updates.
      truncation: scalar selecting standing BN statistics at inference.
      batch_statistics: use batch statistics without training (standing
        statistics collection).

    Returns:
      Images `[B, R, R, 3]` in [-1, 1].

    Example:
      >>> config = BigGANDeepConfig(ch=8, num_classes=10)
      >>> generator = BigGANDeepGenerator(config)
      >>> z, y = tf.random.normal([2, 128]), tf.one_hot([3, 7], 10)
      >>> generator((z, y)).shape
      TensorShape([2, 128, 128, 3])
    """

    def __init__(self, config=BigGANDeepConfig(), **kwargs):
        super().__init__(**kwargs)
        self.config = config = BigGANDeepConfig.coerce(config)
        ch, eps = config.ch, config.epsilon
        multipliers = config.channel_multipliers

        self.shared_embedding = tf_keras.layers.Dense(
            config.shared_dim,
            use_bias=False,
            kernel_initializer="orthogonal",
            name="shared_embedding",
        )
        self.base_channels = ch * multipliers[0]
        self.linear = sn_dense(4 * 4 * self.base_channels, eps, "linear")

        # Each stage: blocks at the stage's input width, the last one
        # upsampling and narrowing to the stage's output width.
        self.blocks = []
        self.attention_index = None
        side = 4
        for wide, narrow in zip(multipliers[:-1], multipliers[1:]):
            for repeat in range(config.blocks_per_resolution):
                last = repeat == config.blocks_per_resolution - 1
                self.blocks.append(
                    BigGANDeepGeneratorBlock(
                        ch * (narrow if last else wide),
                        upsample=last,
                        bottleneck_ratio=config.bottleneck_ratio,
                        epsilon=eps,
                        standing_levels=config.standing_levels,
                        name=f"block_{len(self.blocks)}",
                    )
                )
            side *= 2
            if side == config.attention_resolution:
                self.attention_index = len(self.blocks) - 1
        self.attention = SelfAttention(epsilon=eps, name="attention")
        self.output_norm = CrossReplicaBatchNormalization(
            epsilon=eps,
            standing_levels=config.standing_levels,
            name="output_bn",
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

        # Skip-z: the whole z with E y conditions the linear and every BN.
        # [B, dim_z] ++ [B, shared_dim] -> [B, dim_z + shared_dim]
        condition = tf.concat([z, self.shared_embedding(y)], axis=-1)
        hidden = self.linear(condition, training=training)
        # [B, 16 C0] -> [B, 4, 4, C0]
        hidden = tf.reshape(hidden, [-1, 4, 4, self.base_channels])

        # Bottleneck blocks, self-attention after its stage.
        for index, block in enumerate(self.blocks):
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
            layers.extend(block.norms)
        layers.append(self.output_norm)
        return layers

    def orthogonal_regularization_variables(self):
        """Trainable kernels of rank >= 2 except the shared embedding."""
        exempt = self.shared_embedding.kernel.ref()
        return [
            variable
            for variable in self.trainable_variables
            if variable.shape.rank >= 2 and variable.ref() != exempt
        ]

    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name}


@tf_keras.utils.register_keras_serializable(package="tfcv")
class BigGANDeepDiscriminator(tf_keras.Model):
    """BigGAN-deep projection discriminator `D(x, y)` (Tables 7-9 b).

    Args:
      config: a `BigGANDeepConfig` (or its dict form).

    Call arguments:
      inputs: `(images [B, R, R, 3], y [B, K])`.
      training: Python bool: SN vector updates.

    Returns:
      Logits `[B]`.

    Example:
      >>> discriminator = BigGANDeepDiscriminator(
      ...     BigGANDeepConfig(ch=8, num_classes=10))
      >>> x, y = tf.zeros([2, 128, 128, 3]), tf.one_hot([3, 7], 10)
      >>> discriminator((x, y)).shape
      TensorShape([2])
    """

    def __init__(self, config=BigGANDeepConfig(), **kwargs):
        super().__init__(**kwargs)
        self.config = config = BigGANDeepConfig.coerce(config)
        ch, eps = config.ch, config.epsilon
        reflected = config.channel_multipliers[::-1]

        self.input_conv = sn_conv(ch * reflected[0], 3, eps, "input_conv")

        # Each stage: a pooling, widening block, then blocks at its width.
        self.blocks = []
        self.attention_index = None
        side = config.resolution
        for wide in reflected[1:]:
            for repeat in range(config.blocks_per_resolution):
                self.blocks.append(
                    BigGANDeepDiscriminatorBlock(
                        ch * wide,
                        downsample=repeat == 0,
                        bottleneck_ratio=config.bottleneck_ratio,
                        epsilon=eps,
                        name=f"block_{len(self.blocks)}",
                    )
                )
            side //= 2
            if side == config.attention_resolution:
                self.attention_index = len(self.blocks) - 1
        self.attention = SelfAttention(epsilon=eps, name="attention")
        self.linear = sn_dense(1, eps, "linear")
        self.embedding = sn_dense(
            ch * reflected[-1], eps, "embedding", use_bias=False
        )

    def call(self, inputs, training=False):
        images, y = inputs
        check_input_widths(self.config, y, images=images)
        hidden = self.input_conv(images, training=training)
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


def _preset(resolution, ch, num_classes, overrides):
    requested = overrides.pop("resolution", resolution)
    if requested != resolution:
        raise ValueError(
            f"`resolution`={requested!r} does not match the "
            f"biggan_deep_{resolution} preset (Tables 7-9); drop the "
            "override or use biggan_deep_128, _256 or _512."
        )
    config = BigGANDeepConfig(
        resolution=resolution, ch=ch, num_classes=num_classes, **overrides
    )
    return BigGANDeepGenerator(config), BigGANDeepDiscriminator(config), config


def biggan_deep_128(ch=128, num_classes=1000, **overrides):
    """BigGAN-deep at 128x128 (Table 7).

    Returns:
      `(generator, discriminator, config)`.
    """
    return _preset(128, ch, num_classes, overrides)


def biggan_deep_256(ch=128, num_classes=1000, **overrides):
    """BigGAN-deep at 256x256 (Table 8).

    Returns:
      `(generator, discriminator, config)`.
    """
    return _preset(256, ch, num_classes, overrides)


def biggan_deep_512(ch=128, num_classes=1000, **overrides):
    """BigGAN-deep at 512x512 (Table 9).

    Returns:
      `(generator, discriminator, config)`.
    """
    return _preset(512, ch, num_classes, overrides)


PRESETS = {
    "biggan_deep_128": biggan_deep_128,
    "biggan_deep_256": biggan_deep_256,
    "biggan_deep_512": biggan_deep_512,
}
