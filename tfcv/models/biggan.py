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

import dataclasses
from typing import Optional
from typing import Tuple

import tensorflow as tf
import tf_keras

from tfcv.layers.cross_replica_batch_normalization import (
    CrossReplicaBatchNormalization,
)
from tfcv.layers.self_attention import SelfAttention
from tfcv.models.biggan_blocks import DiscriminatorBlock
from tfcv.models.biggan_blocks import GeneratorBlock
from tfcv.models.biggan_blocks import projection_logits
from tfcv.models.biggan_blocks import sn_conv
from tfcv.models.biggan_blocks import sn_dense


@dataclasses.dataclass(frozen=True)
class BigGANConfig:
    """Architecture of a BigGAN generator / discriminator pair.

    The defaults are the 32x32 digits model; `paper_config` gives the
    paper's 128, 256 and 512 architectures.

    Attributes:
      resolution: output side `R` (Appendix B: 128, 256, 512).
      ch: channel multiplier (Table 1 and Appendix B: 96 for BigGAN).
      num_classes: `K` (1,000 for ImageNet; 10 for the digits).
      dim_z: latent size, a multiple of `num_blocks + 1` (Appendix B: 20-d
        chunks, so 120, 140, 160 at 128, 256, 512).
      shared_dim: shared class embedding size (Appendix B: 128).
      g_multipliers: channels of G's 4x4 input map then of each up-block,
        as multiples of `ch` (Table 4 at 128: 16, 16, 8, 4, 2, 1).
      d_multipliers: channels of each of D's blocks as multiples of `ch`
        (at 128: 1, 2, 4, 8, 16, 16); all but the last downsample, so D
        ends at 4x4.
      attention_resolution: side at which G's self-attention block sits
        (Tables 4-6: 64, 128, 64).
      epsilon: BN and SN epsilon (Appendix C: 1e-4).
      standing_levels: truncations at which standing BN statistics are kept.
      d_attention_resolution: side of D's self-attention block (Tables 4-6:
        64); None means `attention_resolution`.
    """

    resolution: int = 32
    ch: int = 32
    num_classes: int = 10
    dim_z: int = 80
    shared_dim: int = 128
    g_multipliers: Tuple[int, ...] = (4, 4, 2, 1)
    d_multipliers: Tuple[int, ...] = (1, 2, 4, 4)
    attention_resolution: int = 16
    epsilon: float = 1e-4
    standing_levels: Tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
    d_attention_resolution: Optional[int] = None

    def __post_init__(self):
        for name in ("ch", "num_classes", "shared_dim"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"`{name}` must be >= 1, got {getattr(self, name)}."
                )
        for name in ("g_multipliers", "d_multipliers"):
            multipliers = getattr(self, name)
            if len(multipliers) < 2 or min(multipliers) < 1:
                raise ValueError(
                    f"`{name}` must hold >= 2 multipliers, each >= 1, got "
                    f"{multipliers}."
                )
        if not self.epsilon > 0:
            raise ValueError(f"`epsilon` must be > 0, got {self.epsilon}.")
        self._check_sides()
        if self.dim_z < self.num_chunks or self.dim_z % self.num_chunks:
            raise ValueError(
                f"`dim_z`={self.dim_z} must be a positive multiple of the "
                f"number of latent chunks ({self.num_chunks} = up-blocks + "
                f"1); the paper uses 20 per chunk, "
                f"{20 * self.num_chunks} here."
            )

    def _check_sides(self):
        """Checks that both networks' sides fit `resolution`."""
        num_blocks = len(self.g_multipliers) - 1
        if self.resolution != 4 * 2**num_blocks:
            raise ValueError(
                f"`resolution`={self.resolution} does not match "
                f"g_multipliers={self.g_multipliers}: {num_blocks} up-blocks "
                f"from 4x4 give {4 * 2**num_blocks}. Add or remove entries."
            )
        num_downsamples = len(self.d_multipliers) - 1
        if self.resolution != 4 * 2**num_downsamples:
            raise ValueError(
                f"`d_multipliers`={self.d_multipliers} does not match "
                f"resolution={self.resolution}: all blocks but the last "
                f"halve the side, so D would end at "
                f"{self.resolution / 2**num_downsamples:g}x"
                f"{self.resolution / 2**num_downsamples:g}, not 4x4. Use "
                f"{num_blocks + 1} entries."
            )
        g_sides = self.generator_sides
        if self.attention_resolution not in g_sides:
            raise ValueError(
                f"`attention_resolution`={self.attention_resolution} is not "
                f"a side G's up-blocks reach at resolution "
                f"{self.resolution}; pick one of {g_sides}."
            )
        d_sides = self.discriminator_sides
        if self.discriminator_attention_resolution not in d_sides:
            raise ValueError(
                f"`d_attention_resolution`={self.d_attention_resolution} "
                f"(None takes attention_resolution="
                f"{self.attention_resolution}) is not a side D's blocks "
                f"reach at resolution {self.resolution}; pick one of "
                f"{d_sides}."
            )

    @property
    def num_chunks(self):
        """Latent chunks: one for the 4x4 map, one per up-block."""
        return len(self.g_multipliers)

    @property
    def generator_sides(self):
        """Side after each of G's up-blocks: `(8, 16, ..., R)`."""
        return tuple(8 * 2**i for i in range(len(self.g_multipliers) - 1))

    @property
    def discriminator_sides(self):
        """Side after each of D's blocks: `(R/2, ..., 4, 4)`."""
        count = len(self.d_multipliers)
        return tuple(
            max(self.resolution // 2 ** (i + 1), 4) for i in range(count)
        )

    @property
    def discriminator_attention_resolution(self):
        """The side of D's self-attention block."""
        if self.d_attention_resolution is None:
            return self.attention_resolution
        return self.d_attention_resolution

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def coerce(cls, config):
        """Returns `config` as a `BigGANConfig` (it may be its dict form)."""
        if isinstance(config, dict):
            return cls.from_dict(config)
        if not isinstance(config, cls):
            raise ValueError(
                f"`config` must be a BigGANConfig or a dict, got "
                f"{type(config).__name__}."
            )
        return config

    @classmethod
    def from_dict(cls, values):
        """Inverse of `to_dict`; fields added later take their defaults."""
        values = dict(values)
        for key in ("g_multipliers", "d_multipliers", "standing_levels"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


# Appendix B, Tables 4-6: G's channel multipliers (4x4 map, then each
# up-block), D's (each block, RGB in), and the non-local blocks' sides.
PAPER_ARCHITECTURES = {
    128: dict(
        g_multipliers=(16, 16, 8, 4, 2, 1),
        d_multipliers=(1, 2, 4, 8, 16, 16),
        attention_resolution=64,
        d_attention_resolution=64,
    ),
    256: dict(
        g_multipliers=(16, 16, 8, 8, 4, 2, 1),
        d_multipliers=(1, 2, 4, 8, 8, 16, 16),
        attention_resolution=128,
        d_attention_resolution=64,
    ),
    512: dict(
        g_multipliers=(16, 16, 8, 8, 4, 2, 1, 1),
        d_multipliers=(1, 1, 2, 4, 8, 8, 16, 16),
        attention_resolution=64,
        d_attention_resolution=64,
    ),
}

# Appendix B: z is split into 20-d chunks, one per G block plus one.
LATENT_CHUNK_SIZE = 20


def paper_config(resolution, ch=96, num_classes=1000, **overrides):
    """The `BigGANConfig` of Appendix B's BigGAN at `resolution`.

    Args:
      resolution: 128 (Table 4), 256 (Table 5) or 512 (Table 6).
      ch: channel multiplier (default 96, the paper's).
      num_classes: `K` (default 1,000, ImageNet's).
      **overrides: any other `BigGANConfig` field.

    Returns:
      A `BigGANConfig` with `dim_z` = 20 per chunk (120, 140, 160), a
      128-d shared embedding and epsilon 1e-4 unless overridden.

    Raises:
      ValueError: if the paper has no table for `resolution`, or a field
        is invalid (see `BigGANConfig`).

    Example:
      >>> paper_config(256).dim_z
      140
    """
    if resolution not in PAPER_ARCHITECTURES:
        raise ValueError(
            f"`resolution`={resolution!r} has no architecture table in the "
            f"paper; Appendix B gives {sorted(PAPER_ARCHITECTURES)} "
            "(Tables 4-6). Pass one of them, or build a BigGANConfig with "
            "your own multipliers."
        )
    architecture = PAPER_ARCHITECTURES[resolution]
    values = dict(
        architecture,
        resolution=resolution,
        ch=ch,
        num_classes=num_classes,
        dim_z=LATENT_CHUNK_SIZE * len(architecture["g_multipliers"]),
        shared_dim=128,
        epsilon=1e-4,
    )
    values.update(overrides)
    return BigGANConfig(**values)


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

    def __init__(self, config=BigGANConfig(), **kwargs):
        super().__init__(**kwargs)
        self.config = config = BigGANConfig.coerce(config)
        ch, eps = config.ch, config.epsilon
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
        # Attention follows the first block whose output has the side.
        self.attention_index = config.discriminator_sides.index(
            config.discriminator_attention_resolution
        )
        self.attention = SelfAttention(epsilon=eps, name="attention")
        self.linear = sn_dense(1, eps, "linear")
        self.embedding = sn_dense(
            ch * config.d_multipliers[-1], eps, "embedding", use_bias=False
        )

    def call(self, inputs, training=False):
        images, y = inputs
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
