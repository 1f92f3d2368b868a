"""BigGAN generator / discriminator: shapes, conditioning, config checks."""

import numpy as np
import pytest
import tensorflow as tf

from tfcv.models import BigGANConfig
from tfcv.models import BigGANDiscriminator
from tfcv.models import BigGANGenerator
from tfcv.models import biggan_digits_32


def test_generator_and_discriminator_shapes():
    generator, discriminator, config = biggan_digits_32(ch=8)
    z = tf.random.normal([3, config.dim_z])
    y = tf.one_hot([0, 4, 9], config.num_classes)

    images = generator((z, y), training=True)
    logits = discriminator((images, y), training=True)

    assert images.shape == (3, 32, 32, 3)
    assert np.abs(images.numpy()).max() <= 1.0
    assert logits.shape == (3,)


def test_generator_latent_is_hierarchical_and_class_conditioned():
    generator, _, config = biggan_digits_32(ch=8)
    z = tf.random.normal([1, config.dim_z])
    generator((z, tf.one_hot([0], 10)))
    for block in generator.blocks:
        block.norm_1.gain_projection.layer.kernel.assign(
            tf.random.normal(block.norm_1.gain_projection.layer.kernel.shape)
        )

    chunk = config.dim_z // config.num_chunks
    later_chunk = np.array(z)
    later_chunk[0, -chunk:] += 1.0
    base = generator((z, tf.one_hot([0], 10))).numpy()
    other_class = generator((z, tf.one_hot([1], 10))).numpy()
    other_chunk = generator((later_chunk, tf.one_hot([0], 10))).numpy()

    assert np.abs(base - other_class).max() > 1e-4
    assert np.abs(base - other_chunk).max() > 1e-4
    assert config.num_chunks == len(generator.blocks) + 1


def test_discriminator_projection_uses_the_class():
    discriminator = BigGANDiscriminator(BigGANConfig(ch=8))
    images = tf.random.normal([1, 32, 32, 3])
    discriminator((images, tf.one_hot([0], 10)))
    discriminator.embedding.layer.kernel.assign(
        tf.random.normal(discriminator.embedding.layer.kernel.shape)
    )

    first = discriminator((images, tf.one_hot([0], 10))).numpy()
    second = discriminator((images, tf.one_hot([5], 10))).numpy()

    assert abs(first[0] - second[0]) > 1e-5


def test_config_round_trips_through_dict():
    config = BigGANConfig(ch=8, num_classes=3)

    restored = BigGANConfig.from_dict(config.to_dict())

    assert restored == config
    assert BigGANGenerator(config.to_dict()).config == config


def test_config_rejects_inconsistent_values():
    with pytest.raises(ValueError, match="resolution"):
        BigGANConfig(resolution=64)
    with pytest.raises(ValueError, match="dim_z"):
        BigGANConfig(dim_z=81)
    with pytest.raises(ValueError, match="num_classes"):
        BigGANConfig(num_classes=0)
    with pytest.raises(ValueError, match="BigGANConfig or its dict form"):
        BigGANGenerator(config=32)
