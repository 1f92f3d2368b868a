"""BigGAN-deep: parameter counts, forward passes, blocks, config checks."""

import re

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfcv.models.biggan_deep import BigGANDeepConfig
from tfcv.models.biggan_deep import BigGANDeepDiscriminator
from tfcv.models.biggan_deep import BigGANDeepGenerator
from tfcv.models.biggan_deep import PRESETS
from tfcv.models.biggan_deep import biggan_deep_128
from tfcv.models.biggan_deep_blocks import BigGANDeepDiscriminatorBlock
from tfcv.models.biggan_deep_blocks import BigGANDeepGeneratorBlock

# BigGAN-PyTorch's BigGANdeep.py at 128x128, ch 128, 1,000 classes, with
# Table 7's ch -> 3 output conv (the code's has 128 channels, keeps 3).
REFERENCE_G_PARAMETERS = 50_244_484
REFERENCE_D_PARAMETERS = 34_590_210


def _count(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def _small_inputs(config, batch=2, seed=0):
    z = tf.random.stateless_normal([batch, config.dim_z], [seed, 1])
    y = tf.one_hot(np.arange(batch) % config.num_classes, config.num_classes)
    return z, y


# NumPy oracles of Figure 16's blocks at inference (unit standing
# variance, zero standing mean), from the layers' normalized weights.
def _kernel(sn_layer):
    return sn_layer.normalized_kernel(training=False).numpy()


def _np_conv(x, conv):
    """'Same' convolution: [B, H, W, I] x [k, k, I, O] -> [B, H, W, O]."""
    kernel, bias = _kernel(conv), conv.layer.bias.numpy()
    size, height, width = kernel.shape[0], x.shape[1], x.shape[2]
    pad = size // 2
    padded = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    # Σ over taps of [B, H, W, I] x [I, O] -> [B, H, W, O]
    out = sum(
        padded[:, i : i + height, j : j + width] @ kernel[i, j]
        for i in range(size)
        for j in range(size)
    )
    return out + bias


def _np_upsample(x):
    return x.repeat(2, axis=1).repeat(2, axis=2)


def _np_pool(x):
    b, h, w, c = x.shape
    # [B, H, W, C] -> [B, H/2, 2, W/2, 2, C] -> [B, H/2, W/2, C]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _np_generator_block(block, x, c):
    hidden = x
    for index, (norm, conv) in enumerate(zip(block.norms, block.convs)):
        # [B, D] x [D, C] -> [B, C]: γ = 1 + W_γ c, β = W_β c
        gain = 1.0 + c @ _kernel(norm.gain_projection)
        bias = c @ _kernel(norm.bias_projection)
        hidden = hidden / np.sqrt(1.0 + norm.epsilon)
        hidden = hidden * gain[:, None, None] + bias[:, None, None]
        hidden = np.maximum(hidden, 0.0)
        if index == 1 and block.upsample:
            hidden = _np_upsample(hidden)
        hidden = _np_conv(hidden, conv)
    skip = x[..., : block.filters]  # keep the first C_out channels
    return hidden + (_np_upsample(skip) if block.upsample else skip)


def _np_discriminator_block(block, x):
    hidden = x
    for conv in block.convs[:3]:
        hidden = _np_conv(np.maximum(hidden, 0.0), conv)
    hidden = np.maximum(hidden, 0.0)
    skip = x
    if block.downsample:
        hidden, skip = _np_pool(hidden), _np_pool(skip)
    hidden = _np_conv(hidden, block.convs[3])
    if block.conv_skip is not None:  # [x, conv(x)] along channels
        skip = np.concatenate([skip, _np_conv(skip, block.conv_skip)], -1)
    return hidden + skip


def test_parameter_counts_match_the_reference_at_128(monkeypatch):
    # Counting needs shapes only; the QR decompositions of orthogonal
    # initialization would take most of this test's time, so skip them.
    monkeypatch.setattr(
        tf_keras.initializers.Orthogonal,
        "__call__",
        lambda self, shape, dtype=None, **kwargs: tf.random.normal(
            shape, dtype=dtype or tf.float32
        ),
    )
    generator, discriminator, config = biggan_deep_128()
    z, y = _small_inputs(config, batch=1)

    generator((z, y))
    discriminator((tf.zeros([1, 128, 128, 3]), y))

    assert _count(generator) == REFERENCE_G_PARAMETERS
    assert _count(discriminator) == REFERENCE_D_PARAMETERS
    projection = generator.blocks[0].norms[0].gain_projection.layer
    assert projection.kernel.shape == (256, 2048)
    assert projection.bias is None


@pytest.fixture(scope="module")
def small_models():
    """BigGAN-deep-128 at ch 8 and 10 classes, built once for this module."""
    generator, discriminator, config = biggan_deep_128(ch=8, num_classes=10)
    z, y = _small_inputs(config)
    discriminator((generator((z, y)), y))
    return generator, discriminator, config


@pytest.mark.parametrize("training", [False, True])
def test_forward_shapes_and_range(small_models, training):
    generator, discriminator, config = small_models
    z, y = _small_inputs(config)

    images = generator((z, y), training=training)
    logits = discriminator((images, y), training=training)

    assert images.shape == (2, 128, 128, 3)
    assert np.abs(images.numpy()).max() <= 1.0
    assert logits.shape == (2,)
    assert np.all(np.isfinite(logits.numpy()))


def _reset_spectral_vectors(model):
    for variable in model.non_trainable_variables:
        if variable.name.endswith("/u:0"):
            variable.assign(tf.ones(variable.shape))


def test_forward_under_mirrored_strategy(mirrored_strategy):
    with mirrored_strategy.scope():
        generator, discriminator, config = biggan_deep_128(ch=8, num_classes=10)
        z, y = _small_inputs(config)
        discriminator((generator((z, y)), y))  # variables made in scope
    _reset_spectral_vectors(generator)
    expected = generator((z, y), training=True).numpy()
    _reset_spectral_vectors(generator)

    def split(tensor):  # one example per replica
        return mirrored_strategy.experimental_distribute_values_from_function(
            lambda context: tf.split(tensor, 2)[
                context.replica_id_in_sync_group
            ]
        )

    def forward(z, y):
        images = generator((z, y), training=True)
        return images, discriminator((images, y))

    # Eager on purpose: tracing this G for two replicas takes ~30 s here.
    images, logits = mirrored_strategy.run(forward, args=(split(z), split(y)))

    local_results = mirrored_strategy.experimental_local_results
    images = np.concatenate([t.numpy() for t in local_results(images)])
    logits = np.concatenate([t.numpy() for t in local_results(logits)])
    assert images.shape == (2, 128, 128, 3)
    assert logits.shape == (2,)
    # Cross-replica BN sees the global batch: as on one device, up to
    # float32 summation order through 40 BN layers (per-replica statistics
    # of one example each would differ by O(1)).
    np.testing.assert_allclose(images, expected, atol=1e-3)


@pytest.mark.parametrize(
    "channels, filters, upsample", [(16, 8, True), (16, 16, False)]
)
def test_generator_block_matches_numpy(channels, filters, upsample):
    block = BigGANDeepGeneratorBlock(filters, upsample=upsample)
    x = np.random.RandomState(0).randn(2, 4, 4, channels).astype(np.float32)
    c = np.random.RandomState(1).randn(2, 6).astype(np.float32)
    block((x, c))
    for norm in block.norms:  # non-zero conditional gains and biases
        for projection in (norm.gain_projection, norm.bias_projection):
            kernel = projection.layer.kernel
            kernel.assign(tf.random.stateless_normal(kernel.shape, [2, 3]))

    outputs = block((x, c)).numpy()

    expected = _np_generator_block(block, x, c)
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)
    side = 8 if upsample else 4
    assert outputs.shape == (2, side, side, filters)


@pytest.mark.parametrize(
    "channels, filters, downsample", [(8, 16, True), (8, 8, False)]
)
def test_discriminator_block_matches_numpy(channels, filters, downsample):
    block = BigGANDeepDiscriminatorBlock(filters, downsample=downsample)
    x = np.random.RandomState(0).randn(2, 8, 8, channels).astype(np.float32)

    outputs = block(x).numpy()

    expected = _np_discriminator_block(block, x)
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)
    assert (block.conv_skip is None) == (channels == filters)
    if block.conv_skip is not None:
        assert block.conv_skip.layer.kernel.shape == (1, 1, 8, 8)


def test_orthogonal_regularization_excludes_the_shared_embedding(
    small_models,
):
    generator = small_models[0]

    variables = generator.orthogonal_regularization_variables()

    references = {variable.ref() for variable in variables}
    kernels = [v for v in generator.trainable_variables if v.shape.rank >= 2]
    assert generator.shared_embedding.kernel.ref() not in references
    assert len(variables) == len(kernels) - 1
    assert all(variable.shape.rank >= 2 for variable in variables)


def test_batch_norm_layers_cover_every_block(small_models):
    generator, _, config = small_models

    layers = generator.batch_norm_layers()

    assert len(layers) == 4 * len(generator.blocks) + 1
    assert len(generator.blocks) == 2 * config.num_stages


def test_config_round_trips_and_presets_follow_the_tables():
    config = BigGANDeepConfig(ch=8, num_classes=3)

    restored = BigGANDeepConfig.from_dict(config.to_dict())

    assert restored == config
    assert BigGANDeepGenerator(config.to_dict()).config == config
    assert BigGANDeepDiscriminator(config.to_dict()).config == config
    assert config.channel_multipliers == (16, 16, 8, 4, 2, 1)
    assert set(PRESETS) == {
        "biggan_deep_128",
        "biggan_deep_256",
        "biggan_deep_512",
    }
    assert BigGANDeepConfig(resolution=512).channels_at(64) == 4 * 128


@pytest.mark.parametrize(
    "field, overrides",
    [
        ("resolution", {"resolution": 64}),
        ("resolution", {"resolution": 64, "channel_multipliers": (4, 2, 1)}),
        ("ch", {"ch": 0}),
        ("ch", {"ch": 2.5}),
        ("num_classes", {"num_classes": 0}),
        ("dim_z", {"dim_z": -1}),
        ("shared_dim", {"shared_dim": 0}),
        ("blocks_per_resolution", {"blocks_per_resolution": 0}),
        ("bottleneck_ratio", {"bottleneck_ratio": 0}),
        ("epsilon", {"epsilon": 0.0}),
        ("standing_levels", {"standing_levels": (1.0, 0.5)}),
        ("standing_levels", {"standing_levels": ()}),
        ("channel_multipliers", {"channel_multipliers": (1, 2, 4, 8, 8, 16)}),
        ("channel_multipliers", {"channel_multipliers": (16,)}),
        ("attention_resolution", {"attention_resolution": 128}),
        ("attention_resolution", {"attention_resolution": 48}),
        ("ch", {"ch": 3}),  # no bottleneck channels at 1 x ch
        ("ch", {"ch": 3, "bottleneck_ratio": 1}),  # 6 < 8 attention channels
    ],
)
def test_config_rejects_bad_values(field, overrides):
    with pytest.raises(ValueError, match=re.escape(f"`{field}`=")):
        BigGANDeepConfig(**overrides)


def test_models_reject_a_config_of_the_wrong_type():
    with pytest.raises(ValueError, match="BigGANDeepConfig or its dict"):
        BigGANDeepGenerator(config=32)


@pytest.mark.parametrize(
    "block_class, filters, channels, message",
    [
        (BigGANDeepGeneratorBlock, 32, 16, "can only drop channels"),
        (BigGANDeepGeneratorBlock, 2, 2, "no bottleneck channels"),
        (BigGANDeepDiscriminatorBlock, 8, 16, "can only add channels"),
    ],
)
def test_blocks_reject_bad_widths(block_class, filters, channels, message):
    block = block_class(filters)
    features = tf.zeros([1, 4, 4, channels])
    inputs = features
    if block_class is BigGANDeepGeneratorBlock:
        inputs = (features, tf.zeros([1, 4]))

    with pytest.raises(ValueError, match=message):
        block(inputs)


@pytest.mark.parametrize(
    "block_class", [BigGANDeepGeneratorBlock, BigGANDeepDiscriminatorBlock]
)
def test_blocks_reject_a_bad_bottleneck_ratio(block_class):
    with pytest.raises(ValueError, match="`bottleneck_ratio` must be"):
        block_class(8, bottleneck_ratio=0)
