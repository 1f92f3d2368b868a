"""A class-conditional BigGAN generator and projection discriminator.

Reference: Brock, Donahue, Simonyan (2019), "Large Scale GAN Training for
High Fidelity Natural Image Synthesis", arXiv:1809.11096, §3, Appendix B
(architecture) and C (training); self-attention from Zhang et al. (2019),
arXiv:1805.08318; projection discriminator from Miyato & Koyama (2018),
arXiv:1802.05637.

Generator: z `[B, dim_z]` is split into `num_blocks + 1` equal chunks
(hierarchical latent). The first chunk is projected to a `[4, 4, C0]` map;
each later chunk is concatenated with the shared class embedding `E y` and
conditions both batch norms of one residual up-block. One self-attention
block follows the block that reaches `attention_resolution`. Then BN, ReLU,
3x3 conv to RGB and tanh. The class input `y` is one-hot (or any mixture of
classes) `[B, K]`, so the embedding is a linear map, as in the published
BigGAN modules.

Discriminator: residual down-blocks with self-attention at
`attention_resolution`, ReLU, global sum pooling to `h [B, C]`, and the
projection output `w·h + b + <E_D y, h>`.

Shapes: `B` batch, `K` classes, images `[B, R, R, 3]` in [-1, 1].

Deviations from the paper: the architecture tables of Appendix B stop at
128x128; the 32x32 presets follow the same pattern with fewer blocks (their
channel multipliers are listed in `BigGANConfig`).
"""

import dataclasses
from typing import Tuple

import tensorflow as tf
import tf_keras

from tfcv.layers.cross_replica_batch_normalization import (
    CrossReplicaBatchNormalization,
)
from tfcv.layers.self_attention import SelfAttention
from tfcv.layers.spectral_normalization import SpectralNormalization
from tfcv.models.biggan_blocks import DiscriminatorBlock
from tfcv.models.biggan_blocks import GeneratorBlock
from tfcv.models.biggan_blocks import sn_conv


@dataclasses.dataclass(frozen=True)
class BigGANConfig:
    """Architecture of a BigGAN generator / discriminator pair.

    Attributes:
      resolution: output side `R` (32 here; 128 in Appendix B Table 4).
      ch: channel multiplier (Appendix B: 96 for BigGAN).
      num_classes: `K` (1,000 for ImageNet; 10 for the digits).
      dim_z: latent size, divisible by `num_blocks + 1` (Appendix B: 120
        split into 20-d chunks).
      shared_dim: shared class embedding size (Appendix B: 128).
      g_multipliers: channels of G's 4x4 input map then of each up-block,
        as multiples of `ch` (Table 4 at 128: 16, 16, 8, 4, 2, 1).
      d_multipliers: channels of each of D's blocks as multiples of `ch`
        (Table 4 at 128: 1, 2, 4, 8, 16, 16); all but the last downsample.
      attention_resolution: side at which the self-attention block sits
        (Table 4: 64 at 128x128).
      epsilon: BN and SN epsilon (Appendix C: 1e-4).
      standing_levels: truncations at which standing BN statistics are kept.
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

    def __post_init__(self):
        num_blocks = len(self.g_multipliers) - 1
        if self.resolution != 4 * 2**num_blocks:
            raise ValueError(
                f"`resolution`={self.resolution} does not match "
                f"g_multipliers={self.g_multipliers}: {num_blocks} up-blocks "
                f"from 4x4 give {4 * 2**num_blocks}. Add or remove entries."
            )
        if self.dim_z % (num_blocks + 1):
            raise ValueError(
                f"`dim_z`={self.dim_z} must be divisible by the number of "
                f"latent chunks ({num_blocks + 1} = up-blocks + 1)."
            )
        for name in ("ch", "num_classes", "shared_dim"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"`{name}` must be >= 1, got {getattr(self, name)}."
                )

    @property
    def num_chunks(self):
        return len(self.g_multipliers)

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
        values = dict(values)
        for key in ("g_multipliers", "d_multipliers", "standing_levels"):
            values[key] = tuple(values[key])
        return cls(**values)


def _sn_dense(units, epsilon, name, use_bias=True):
    dense = tf_keras.layers.Dense(
        units, use_bias=use_bias, kernel_initializer="orthogonal", name=name
    )
    return SpectralNormalization(dense, epsilon=epsilon, name=f"sn_{name}")


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
        self.linear = _sn_dense(4 * 4 * self.base_channels, eps, "linear")
        self.blocks = []
        self.attention_index = None
        side = 4
        for index, multiplier in enumerate(config.g_multipliers[1:]):
            self.blocks.append(
                GeneratorBlock(
                    ch * multiplier,
                    epsilon=eps,
                    standing_levels=levels,
                    name=f"block_{index}",
                )
            )
            side *= 2
            if side == config.attention_resolution:
                self.attention_index = index
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
        self.blocks = []
        self.attention_index = None
        side = config.resolution
        count = len(config.d_multipliers)
        for index, multiplier in enumerate(config.d_multipliers):
            downsample = index < count - 1
            self.blocks.append(
                DiscriminatorBlock(
                    ch * multiplier,
                    downsample=downsample,
                    preactivation=index > 0,
                    epsilon=eps,
                    name=f"block_{index}",
                )
            )
            if downsample:
                side //= 2
            if (
                side == config.attention_resolution
                and self.attention_index is None
            ):
                self.attention_index = index
        self.attention = SelfAttention(epsilon=eps, name="attention")
        self.linear = _sn_dense(1, eps, "linear")
        self.embedding = _sn_dense(
            ch * config.d_multipliers[-1], eps, "embedding", use_bias=False
        )

    def call(self, inputs, training=False):
        images, y = inputs
        hidden = images
        for index, block in enumerate(self.blocks):
            hidden = block(hidden, training=training)
            if index == self.attention_index:
                hidden = self.attention(hidden, training=training)

        # Global sum pooling of ReLU features: [B, H, W, C] -> [B, C].
        features = tf.reduce_sum(tf.nn.relu(hidden), axis=[1, 2])

        # Projection: w·h + b + <E_D y, h>.
        # [B, C] -> [B]
        logits = tf.squeeze(self.linear(features, training=training), -1)
        class_embedding = self.embedding(y, training=training)
        return logits + tf.reduce_sum(class_embedding * features, axis=-1)

    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name}


def biggan_digits_32(ch=32, num_classes=10, **overrides):
    """The 32x32 preset the main job trains on the digits.

    Returns:
      `(generator, discriminator, config)`.
    """
    config = BigGANConfig(ch=ch, num_classes=num_classes, **overrides)
    return BigGANGenerator(config), BigGANDiscriminator(config), config


MODELS = {"biggan_digits_32": biggan_digits_32}
