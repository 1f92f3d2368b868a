"""Bottleneck residual blocks of BigGAN-deep's generator and discriminator.

Reference: Brock, Donahue, Simonyan (2019), "Large Scale GAN Training for
High Fidelity Natural Image Synthesis", arXiv:1809.11096, Appendix B,
Figure 16 (b) and (c).

Generator block (Figure 16 b), with `c` the conditioning vector:
CBN(c) -> ReLU -> 1x1 conv to `C_in / 4` -> CBN(c) -> ReLU -> (upsample x2)
-> 3x3 conv -> CBN(c) -> ReLU -> 3x3 conv -> CBN(c) -> ReLU -> 1x1 conv to
`C_out`. The skip keeps the first `C_out` input channels (G only ever
narrows) and is upsampled with the residual branch.

Discriminator block (Figure 16 c): ReLU -> 1x1 conv to `C_out / 4` -> ReLU
-> 3x3 conv -> ReLU -> 3x3 conv -> ReLU -> (average-pool x2) -> 1x1 conv to
`C_out`. The skip is pooled with the branch and, when D widens, the input
channels are passed unchanged and concatenated with `C_out - C_in` channels
from a 1x1 convolution of the (pooled) input.

Every convolution is spectrally normalized, orthogonally initialized and
carries a bias.

Shapes: `B` batch; G block `[B, H, W, C_in]` -> `[B, 2H, 2W, C_out]` (or
`[B, H, W, C_out]` without upsampling), `C_out <= C_in`; D block
`[B, H, W, C_in]` -> `[B, H/2, W/2, C_out]` (or `[B, H, W, C_out]`),
`C_out >= C_in`.

Deviations from the paper: the width of the bottleneck is not stated for
blocks whose width changes; as in the authors' code it is `C_in / 4` in G
and `C_out / 4` in D (the wider side in both).
"""

import tensorflow as tf
import tf_keras

from tfcv.layers.conditional_batch_normalization import (
    ConditionalBatchNormalization,
)
from tfcv.models import biggan_blocks
from tfcv.models.biggan_blocks import sn_conv


def _check_ratio(bottleneck_ratio):
    if not isinstance(bottleneck_ratio, int) or bottleneck_ratio < 1:
        raise ValueError(
            "`bottleneck_ratio` must be an integer >= 1, got "
            f"{bottleneck_ratio!r}; the paper uses 4."
        )


def _hidden_filters(channels, bottleneck_ratio, name):
    hidden = channels // bottleneck_ratio
    if hidden < 1:
        raise ValueError(
            f"Block {name!r}: {channels} channels // bottleneck_ratio="
            f"{bottleneck_ratio} leaves no bottleneck channels; use more "
            "channels or a smaller ratio."
        )
    return hidden


@tf_keras.utils.register_keras_serializable(package="tfcv")
class BigGANDeepGeneratorBlock(tf_keras.layers.Layer):
    """BigGAN-deep generator bottleneck block with conditional BN.

    Args:
      filters: `int`, output channels `C_out`, at most the input's `C_in`.
      upsample: `bool`, double H and W (default True; the second block of
        each resolution in the paper).
      bottleneck_ratio: `int >= 1`, the bottleneck has `C_in // ratio`
        channels (default 4, Appendix B).
      epsilon: `float > 0`, BN and SN epsilon (default 1e-4).
      standing_levels: truncation levels of the BN standing statistics.

    Call arguments:
      inputs: `(features [B, H, W, C_in], condition [B, D])`.
      training, truncation, batch_statistics: passed to the batch norms
        (see `CrossReplicaBatchNormalization`); `training` also updates
        the spectral-norm vectors.

    Example:
      >>> block = BigGANDeepGeneratorBlock(8)
      >>> x, c = tf.random.normal([2, 4, 4, 16]), tf.random.normal([2, 6])
      >>> block((x, c), training=True).shape
      TensorShape([2, 8, 8, 8])
    """

    def __init__(
        self,
        filters,
        upsample=True,
        bottleneck_ratio=4,
        epsilon=1e-4,
        standing_levels=(1.0,),
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_ratio(bottleneck_ratio)
        self.filters = filters
        self.upsample = upsample
        self.bottleneck_ratio = bottleneck_ratio
        self.epsilon = epsilon
        self.standing_levels = tuple(standing_levels)

    def build(self, input_shape):
        feature_shape, _ = input_shape
        channels = int(feature_shape[-1])
        if self.filters > channels:
            raise ValueError(
                f"Block {self.name!r}: `filters`={self.filters} exceeds the "
                f"input's {channels} channels; BigGAN-deep's G skip can only "
                "drop channels. Use filters <= input channels."
            )
        hidden = _hidden_filters(channels, self.bottleneck_ratio, self.name)
        self.norms = [
            ConditionalBatchNormalization(
                epsilon=self.epsilon,
                standing_levels=self.standing_levels,
                name=f"cbn_{index}",
            )
            for index in range(1, 5)
        ]
        self.convs = [
            sn_conv(hidden, 1, self.epsilon, "conv_1"),
            sn_conv(hidden, 3, self.epsilon, "conv_2"),
            sn_conv(hidden, 3, self.epsilon, "conv_3"),
            sn_conv(self.filters, 1, self.epsilon, "conv_4"),
        ]
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

        # Residual branch: CBN -> ReLU -> conv, four times; the upsampling
        # sits between the first 1x1 and the first 3x3 convolution.
        hidden = features
        for index, (norm, conv) in enumerate(zip(self.norms, self.convs)):
            hidden = tf.nn.relu(norm((hidden, condition), **norm_kwargs))
            if index == 1 and self.upsample:
                hidden = biggan_blocks.upsample(hidden)
            hidden = conv(hidden, training=training)

        # Skip: keep the first C_out channels, then upsample.
        skip = features[..., : self.filters]
        if self.upsample:
            skip = biggan_blocks.upsample(skip)
        return hidden + skip

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape[0]
        if self.upsample:
            height = None if height is None else 2 * height
            width = None if width is None else 2 * width
        return tf.TensorShape([batch, height, width, self.filters])

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            upsample=self.upsample,
            bottleneck_ratio=self.bottleneck_ratio,
            epsilon=self.epsilon,
            standing_levels=list(self.standing_levels),
        )
        return config


@tf_keras.utils.register_keras_serializable(package="tfcv")
class BigGANDeepDiscriminatorBlock(tf_keras.layers.Layer):
    """BigGAN-deep discriminator bottleneck block.

    Args:
      filters: `int`, output channels `C_out`, at least the input's `C_in`.
      downsample: `bool`, halve H and W with 2x2 average pooling (default
        True; the first block of each resolution in the paper).
      bottleneck_ratio: `int >= 1`, the bottleneck has `C_out // ratio`
        channels (default 4, Appendix B).
      epsilon: `float > 0`, SN epsilon (default 1e-4).

    Call arguments:
      inputs: `[B, H, W, C_in]`.
      training: Python bool or boolean tensor; updates the spectral-norm
        vectors.

    Example:
      >>> block = BigGANDeepDiscriminatorBlock(16)
      >>> block(tf.random.normal([2, 8, 8, 8])).shape
      TensorShape([2, 4, 4, 16])
    """

    def __init__(
        self,
        filters,
        downsample=True,
        bottleneck_ratio=4,
        epsilon=1e-4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_ratio(bottleneck_ratio)
        self.filters = filters
        self.downsample = downsample
        self.bottleneck_ratio = bottleneck_ratio
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = int(input_shape[-1])
        if self.filters < channels:
            raise ValueError(
                f"Block {self.name!r}: `filters`={self.filters} is below the "
                f"input's {channels} channels; BigGAN-deep's D skip can only "
                "add channels. Use filters >= input channels."
            )
        hidden = _hidden_filters(self.filters, self.bottleneck_ratio, self.name)
        self.convs = [
            sn_conv(hidden, 1, self.epsilon, "conv_1"),
            sn_conv(hidden, 3, self.epsilon, "conv_2"),
            sn_conv(hidden, 3, self.epsilon, "conv_3"),
            sn_conv(self.filters, 1, self.epsilon, "conv_4"),
        ]
        self.conv_skip = None
        if self.filters > channels:
            self.conv_skip = sn_conv(
                self.filters - channels, 1, self.epsilon, "conv_skip"
            )
        super().build(input_shape)

    def call(self, inputs, training=False):
        # Residual branch: ReLU -> conv three times, ReLU, pool, 1x1 conv.
        hidden = inputs
        for conv in self.convs[:3]:
            hidden = conv(tf.nn.relu(hidden), training=training)
        hidden = tf.nn.relu(hidden)
        if self.downsample:
            hidden = biggan_blocks.downsample(hidden)
        hidden = self.convs[3](hidden, training=training)

        # Skip: pool, then [x, conv(x)] along channels when D widens.
        skip = inputs
        if self.downsample:
            skip = biggan_blocks.downsample(skip)
        if self.conv_skip is not None:
            extra = self.conv_skip(skip, training=training)
            # [B, H, W, C_in] ++ [B, H, W, C_out - C_in] -> [B, H, W, C_out]
            skip = tf.concat([skip, extra], axis=-1)
        return hidden + skip

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        if self.downsample:
            height = None if height is None else height // 2
            width = None if width is None else width // 2
        return tf.TensorShape([batch, height, width, self.filters])

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            downsample=self.downsample,
            bottleneck_ratio=self.bottleneck_ratio,
            epsilon=self.epsilon,
        )
        return config
