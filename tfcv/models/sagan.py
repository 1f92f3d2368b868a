"""SAGAN: a class-conditional self-attention generator and discriminator.

Reference: Zhang, Goodfellow, Metaxas, Odena (2019), "Self-Attention
Generative Adversarial Networks", arXiv:1805.08318: §3 (self-attention,
Eqs. 1-3; hinge loss, Eq. 4), §4.1 (spectral normalization in G and D), §5
"Network structures and implementation details" (128x128 images, conditional
BN in G, projection discriminator) and Table 1 (where attention sits). The
paper gives no layer table; the layout is that of the authors' released
128x128 model (also BigGAN-PyTorch's SAGAN configuration).

Generator: the whole z `[B, dim_z]` goes through one spectrally normalized
linear layer to a `[4, 4, 16 ch]` map; five residual up-blocks (channels
16, 8, 4, 2, 1 times `ch`) double the side to 128, each with two
class-conditional batch norms whose gain and bias are looked up per class;
one self-attention block follows the block that reaches
`attention_resolution` (32). Then BN, ReLU, 3x3 conv to RGB and tanh.

Discriminator: six residual down-blocks (1, 2, 4, 8, 16, 16 times `ch`; all
but the last halve the side), self-attention after the block that reaches
`attention_resolution`, ReLU, global sum pooling to `h [B, 16 ch]` and the
projection output `w·h + b + <E y, h>`.

Every convolution and linear map is spectrally normalized, except the
per-class BN gains and biases (as in the authors' code). The class input
`y` is one-hot (or a class mixture) `[B, K]`, so each lookup is a linear
map of `y` without bias.

Shapes: `B` batch, `K` classes, `C` channels, images `[B, R, R, 3]` in
[-1, 1], logits `[B]`.

Deviations from the paper:
  * The value projection h has C/2 channels (the paper's Eq. 2 text: C/8),
    and keys and values are max-pooled 2x2 before attention, as in the
    authors' code. The C/2 width is what the reference parameter counts
    require (G 42,078,852 and D 39,463,618 at ch=64, K=1000).
  * Weights are orthogonally initialized (our shared blocks and layers,
    BigGAN's choice); the authors' code uses Xavier-uniform. Spectral
    normalization removes the scale, so only the starting direction
    differs.
  * Conditional BN is parameterized as γ = 1 + W_γ y, β = W_β y with
    `W [K, C]` (our `ConditionalBatchNormalization`); for one-hot `y` this
    is the authors' per-class γ and β table, with the same parameter count,
    but it starts near γ = 1, β = 0 instead of exactly there.
  * At inference BN uses standing statistics (BigGAN's, one set per level
    of `standing_levels`) instead of moving averages.
"""

import dataclasses
from typing import Tuple

import tensorflow as tf
import tf_keras

from tfcv.layers.conditional_batch_normalization import (
    ConditionalBatchNormalization,
)
from tfcv.layers.cross_replica_batch_normalization import (
    CrossReplicaBatchNormalization,
)
from tfcv.layers.self_attention import SelfAttention
from tfcv.models.biggan import BigGANDiscriminator
from tfcv.models.biggan_blocks import GeneratorBlock
from tfcv.models.biggan_blocks import check_input_widths
from tfcv.models.biggan_blocks import sn_conv
from tfcv.models.biggan_blocks import sn_dense
from tfcv.models.config_base import ConfigDict


@dataclasses.dataclass(frozen=True)
class SAGANConfig(ConfigDict):
    """Architecture of a SAGAN generator / discriminator pair.

    Defaults are the 128x128 ImageNet model. The paper states the
    resolution, the classes and the attention placement; the rest comes
    from the authors' released code, as the paper leaves it out.

    Attributes:
      resolution: output side `R` (§5: all models are 128x128).
      ch: channel multiplier (authors' code: gf_dim = df_dim = 64).
      num_classes: `K` (§5: ImageNet, 1,000 classes).
      dim_z: latent size; all of z feeds G's first linear layer (authors'
        code: 128).
      g_multipliers: channels of G's 4x4 input map, then of each up-block,
        as multiples of `ch` (authors' code: 16, 16, 8, 4, 2, 1).
      d_multipliers: channels of each of D's blocks as multiples of `ch`;
        all but the last halve the side (authors' code: 1, 2, 4, 8, 16,
        16).
      attention_resolution: feature-map side after which the
        self-attention block sits in both G and D (Table 1: feat_32 has
        the best FID, 18.28, and is the authors' released placement;
        Table 2's headline IS 52.52 / FID 18.65 is Table 1's feat_64, so
        pass 64 for that variant).
      epsilon: batch-norm ε (authors' code: 1e-5; the paper gives none).
      sn_epsilon: spectral-normalization ε of the power iteration
        (authors' code: 1e-12).
      standing_levels: truncations at which standing BN statistics are
        kept (SAGAN samples untruncated: 1.0).
    """

    _EXAMPLE = "sagan_128"

    resolution: int = 128
    ch: int = 64
    num_classes: int = 1000
    dim_z: int = 128
    g_multipliers: Tuple[int, ...] = (16, 16, 8, 4, 2, 1)
    d_multipliers: Tuple[int, ...] = (1, 2, 4, 8, 16, 16)
    attention_resolution: int = 32
    epsilon: float = 1e-5
    sn_epsilon: float = 1e-12
    standing_levels: Tuple[float, ...] = (1.0,)

    def __post_init__(self):
        for name in ("ch", "num_classes", "dim_z"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"`{name}` must be an integer >= 1, got {value!r}; "
                    "pass a positive integer."
                )
        for name in ("g_multipliers", "d_multipliers"):
            values = getattr(self, name)
            if not values or any(
                not isinstance(value, int) or value < 1 for value in values
            ):
                raise ValueError(
                    f"`{name}` must be a non-empty sequence of integers "
                    f">= 1, got {values!r}; e.g. pass "
                    f"{getattr(SAGANConfig, name)!r}."
                )
        for name, count in (
            ("g_multipliers", len(self.g_multipliers) - 1),
            ("d_multipliers", len(self.d_multipliers) - 1),
        ):
            if self.resolution != 4 * 2**count:
                raise ValueError(
                    f"`resolution`={self.resolution!r} does not match "
                    f"`{name}`={getattr(self, name)!r}: its {count} "
                    f"resolution-changing blocks link 4x4 to "
                    f"{4 * 2**count}x{4 * 2**count}. Add or remove "
                    f"entries of `{name}`."
                )
        sides = [4 * 2**index for index in range(1, len(self.g_multipliers))]
        if self.attention_resolution not in sides[:-1]:
            raise ValueError(
                f"`attention_resolution` must be a feature-map side both "
                f"G and D reach at resolution {self.resolution}, one of "
                f"{sides[:-1]}; got {self.attention_resolution!r}."
            )
        for name in ("epsilon", "sn_epsilon"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(
                    f"`{name}` must be a number > 0, got {value!r}."
                )
        levels = self.standing_levels
        if not levels or any(b <= a for a, b in zip(levels, levels[1:])):
            raise ValueError(
                "`standing_levels` must be a non-empty increasing sequence, "
                f"got {levels!r}; e.g. pass (1.0,)."
            )


@tf_keras.utils.register_keras_serializable(package="tfcv")
class SAGANGeneratorBlock(GeneratorBlock):
    """SAGAN's residual up-block with per-class conditional batch norm.

    CBN(y) -> ReLU -> upsample x2 -> conv3x3 -> CBN(y) -> ReLU -> conv3x3,
    plus an upsampled 1x1-conv skip. Unlike BigGAN's block, the per-class
    gains and biases are plain lookups of `y` (no spectral norm, as in the
    authors' code), and BN and SN have their own ε.

    Args:
      filters: output channels `C'`.
      epsilon: BN ε (default 1e-5).
      sn_epsilon: SN ε of the convolutions (default 1e-12).
      standing_levels: truncation levels of the standing BN statistics.

    Call arguments:
      inputs: `(features [B, H, W, C], y [B, K])`.
      training, truncation, batch_statistics: as in the generator.

    Example:
      >>> block = SAGANGeneratorBlock(8)
      >>> x, y = tf.zeros([2, 4, 4, 16]), tf.one_hot([0, 1], 10)
      >>> block((x, y)).shape
      TensorShape([2, 8, 8, 8])
    """

    def __init__(
        self,
        filters,
        epsilon=1e-5,
        sn_epsilon=1e-12,
        standing_levels=(1.0,),
        **kwargs,
    ):
        super().__init__(filters, epsilon, standing_levels, **kwargs)
        self.sn_epsilon = sn_epsilon

    def build(self, input_shape):
        # BigGAN's block with unnormalized class tables and a separate SN ε.
        self.norm_1, self.norm_2 = [
            ConditionalBatchNormalization(
                epsilon=self.epsilon,
                spectral_norm=False,
                standing_levels=self.standing_levels,
                name=name,
            )
            for name in ("cbn_1", "cbn_2")
        ]
        self.conv_1 = sn_conv(self.filters, 3, self.sn_epsilon, "conv_1")
        self.conv_2 = sn_conv(self.filters, 3, self.sn_epsilon, "conv_2")
        self.conv_skip = sn_conv(self.filters, 1, self.sn_epsilon, "conv_skip")
        tf_keras.layers.Layer.build(self, input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(sn_epsilon=self.sn_epsilon)
        return config


@tf_keras.utils.register_keras_serializable(package="tfcv")
class SAGANGenerator(tf_keras.Model):
    """Class-conditional SAGAN generator `G(z, y)`.

    Args:
      config: a `SAGANConfig` (or its dict form).

    Call arguments:
      inputs: `(z [B, dim_z], y [B, K])`, y one-hot (or a class mixture).
      training: Python bool: batch statistics and SN vector updates.
      truncation: scalar selecting standing BN statistics at inference.
      batch_statistics: use batch statistics without training (standing
        statistics collection).

    Example:
      >>> generator = SAGANGenerator(SAGANConfig(ch=8, num_classes=10))
      >>> z, y = tf.random.normal([2, 128]), tf.one_hot([3, 7], 10)
      >>> generator((z, y)).shape
      TensorShape([2, 128, 128, 3])
    """

    def __init__(self, config=SAGANConfig(), **kwargs):
        super().__init__(**kwargs)
        self.config = config = SAGANConfig.coerce(config)
        sn_eps, levels = config.sn_epsilon, config.standing_levels
        self.base_channels = config.ch * config.g_multipliers[0]
        self.linear = sn_dense(4 * 4 * self.base_channels, sn_eps, "linear")

        # One up-block per later multiplier; attention after the one that
        # reaches `attention_resolution`.
        self.blocks = []
        self.attention_index = None
        side = 4
        for index, multiplier in enumerate(config.g_multipliers[1:]):
            self.blocks.append(
                SAGANGeneratorBlock(
                    config.ch * multiplier,
                    epsilon=config.epsilon,
                    sn_epsilon=sn_eps,
                    standing_levels=levels,
                    name=f"block_{index}",
                )
            )
            side *= 2
            if side == config.attention_resolution:
                self.attention_index = index
        self.attention = SelfAttention(epsilon=sn_eps, name="attention")
        self.output_norm = CrossReplicaBatchNormalization(
            epsilon=config.epsilon, standing_levels=levels, name="output_bn"
        )
        self.output_conv = sn_conv(3, 3, sn_eps, "output_conv")

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

        # The whole z to the 4x4 map (no hierarchical chunks).
        hidden = self.linear(z, training=training)
        # [B, 16 C0] -> [B, 4, 4, C0]
        hidden = tf.reshape(hidden, [-1, 4, 4, self.base_channels])

        # Residual up-blocks, each conditioned on the class y.
        for index, block in enumerate(self.blocks):
            hidden = block((hidden, y), **norm_kwargs)
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
        """Kernels of rank >= 2 other than the per-class BN lookups.

        SAGAN trains without orthogonal regularization; this exists for the
        common generator interface. Call it once the model is built.
        """
        class_tables = {
            variable.ref()
            for norm in self.batch_norm_layers()
            for variable in norm.trainable_weights
        }
        return [
            variable
            for variable in self.trainable_weights
            if variable.shape.rank >= 2 and variable.ref() not in class_tables
        ]

    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name}


@tf_keras.utils.register_keras_serializable(package="tfcv")
class SAGANDiscriminator(BigGANDiscriminator):
    """Projection discriminator `D(x, y)` with self-attention; logits `[B]`.

    BigGAN's discriminator (same blocks, attention and projection head) on
    a `SAGANConfig`: spectral norm with `sn_epsilon`, attention after the
    block whose output side is `attention_resolution`.

    Args:
      config: a `SAGANConfig` (or its dict form).

    Call arguments:
      inputs: `(images [B, R, R, 3], y [B, K])`.
      training: Python bool: SN vector updates.

    Example:
      >>> discriminator = SAGANDiscriminator(
      ...     SAGANConfig(ch=8, num_classes=10))
      >>> x, y = tf.zeros([2, 128, 128, 3]), tf.one_hot([3, 7], 10)
      >>> discriminator((x, y)).shape
      TensorShape([2])
    """

    config_class = SAGANConfig

    def __init__(self, config=SAGANConfig(), **kwargs):
        super().__init__(config, **kwargs)

    @staticmethod
    def spectral_epsilon(config):
        return config.sn_epsilon

    @staticmethod
    def attention_block_index(config):
        # Every block but the last halves the side.
        count = len(config.d_multipliers)
        sides = [config.resolution // 2 ** (i + 1) for i in range(count - 1)]
        return sides.index(config.attention_resolution)


def sagan_128(ch=64, num_classes=1000, **overrides):
    """SAGAN at 128x128 (§5), attention at 32x32 in G and D (Table 1).

    Args:
      ch: channel multiplier (default 64).
      num_classes: `K` (default 1,000, ImageNet).
      **overrides: any other `SAGANConfig` field.

    Returns:
      `(generator, discriminator, config)`.

    Example:
      >>> generator, discriminator, config = sagan_128(ch=8, num_classes=10)
      >>> config.attention_resolution
      32
    """
    config = SAGANConfig(ch=ch, num_classes=num_classes, **overrides)
    return SAGANGenerator(config), SAGANDiscriminator(config), config


PRESETS = {"sagan_128": sagan_128}
