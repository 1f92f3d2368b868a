"""SAGAN-128: reference parameter counts, shapes, attention, config checks."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfcv.models.sagan import PRESETS
from tfcv.models.sagan import SAGANConfig
from tfcv.models.sagan import SAGANDiscriminator
from tfcv.models.sagan import SAGANGenerator
from tfcv.models.sagan import sagan_128

# Trainable parameters of the reference SAGAN-128 (ch 64, 1,000 classes).
REFERENCE_G_PARAMETERS = 42_078_852
REFERENCE_D_PARAMETERS = 39_463_618

SMALL = dict(ch=8, num_classes=10)


def _count(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def _build(generator, discriminator, config, batch):
    z = tf.random.normal([batch, config.dim_z], seed=1)
    y = tf.one_hot(np.arange(batch) % config.num_classes, config.num_classes)
    side = config.resolution
    generator((z, y))
    discriminator((tf.zeros([batch, side, side, 3]), y))
    return z, y


@pytest.fixture(scope="module")
def full_models():
    generator, discriminator, config = sagan_128()
    _build(generator, discriminator, config, batch=1)
    return generator, discriminator, config


@pytest.fixture(scope="module")
def small_models():
    generator, discriminator, config = sagan_128(**SMALL)
    z, y = _build(generator, discriminator, config, batch=2)
    return generator, discriminator, config, z, y


def _attention_input_shape(model):
    return tuple(model.attention.get_build_config()["input_shape"])


def test_sagan_128_parameter_counts_match_the_reference(full_models):
    generator, discriminator, _ = full_models

    g_count, d_count = _count(generator), _count(discriminator)

    assert g_count == REFERENCE_G_PARAMETERS
    assert d_count == REFERENCE_D_PARAMETERS
    assert _attention_input_shape(generator) == (1, 32, 32, 256)
    assert _attention_input_shape(discriminator) == (1, 32, 32, 128)


@pytest.mark.parametrize("training", [True, False], ids=["train", "infer"])
def test_forward_shapes_and_range(small_models, training):
    generator, discriminator, config, z, y = small_models

    images = generator((z, y), training=training)
    logits = discriminator((images, y), training=training)

    assert images.shape == (2, 128, 128, 3)
    assert np.abs(images.numpy()).max() <= 1.0
    assert logits.shape == (2,)
    assert np.all(np.isfinite(logits.numpy()))


def test_attention_sits_at_32x32_in_generator_and_discriminator(
    small_models,
):
    generator, discriminator, config, _, _ = small_models

    g_shape = _attention_input_shape(generator)
    d_shape = _attention_input_shape(discriminator)

    assert g_shape == (2, 32, 32, 4 * config.ch)
    assert d_shape == (2, 32, 32, 2 * config.ch)
    assert generator.attention_index == 2
    assert discriminator.attention_index == 1


def test_generator_and_discriminator_depend_on_the_class(small_models):
    generator, discriminator, config, z, _ = small_models
    tables = [
        norm.gain_projection.kernel
        for norm in generator.batch_norm_layers()[:-1]
    ] + [discriminator.embedding.layer.kernel]
    saved = [table.numpy() for table in tables]
    for table in tables:
        table.assign(tf.random.normal(table.shape, seed=2))
    first, second = tf.one_hot([0], 10), tf.one_hot([1], 10)

    images = generator((z[:1], first)).numpy()
    other_images = generator((z[:1], second)).numpy()
    logits = discriminator((images, first)).numpy()
    other_logits = discriminator((images, second)).numpy()
    for table, value in zip(tables, saved):
        table.assign(value)

    assert np.abs(images - other_images).max() > 1e-4
    assert abs(logits[0] - other_logits[0]) > 1e-5


def test_generator_interface_lists(small_models):
    generator, _, _, _, _ = small_models
    class_tables = {
        variable.ref()
        for norm in generator.batch_norm_layers()[:-1]
        for variable in norm.trainable_weights
    }

    norms = generator.batch_norm_layers()
    kernels = generator.orthogonal_regularization_variables()

    assert len(norms) == 2 * len(generator.blocks) + 1
    assert kernels and all(v.shape.rank >= 2 for v in kernels)
    assert not {v.ref() for v in kernels} & class_tables
    # linear + 3 convs per block + 4 attention convs + output conv.
    assert len(kernels) == 1 + 3 * len(generator.blocks) + 4 + 1


def test_config_and_models_round_trip_through_dicts():
    config = SAGANConfig(**SMALL)

    restored = SAGANConfig.from_dict(config.to_dict())
    generator = tf_keras.utils.deserialize_keras_object(
        tf_keras.utils.serialize_keras_object(SAGANGenerator(config))
    )
    discriminator = SAGANDiscriminator.from_config(
        SAGANDiscriminator(config.to_dict()).get_config()
    )

    assert restored == config
    assert generator.config == config
    assert discriminator.config == config
    assert PRESETS == {"sagan_128": sagan_128}


@pytest.mark.parametrize(
    "field, value",
    [
        ("ch", 0),
        ("num_classes", 0),
        ("dim_z", 0),
        ("g_multipliers", (16, 16, 0, 4, 2, 1)),
        ("d_multipliers", ()),
        ("resolution", 64),
        ("d_multipliers", (1, 2, 4, 8, 16)),
        ("attention_resolution", 128),
        ("epsilon", 0.0),
        ("sn_epsilon", -1e-12),
        ("standing_levels", (1.0, 0.5)),
    ],
    ids=[
        "ch",
        "num_classes",
        "dim_z",
        "g_multipliers",
        "d_multipliers_empty",
        "resolution",
        "d_multipliers_depth",
        "attention_resolution",
        "epsilon",
        "sn_epsilon",
        "standing_levels",
    ],
)
def test_config_rejects_bad_value(field, value):
    with pytest.raises(ValueError, match=f"`{field}`"):
        SAGANConfig(**{field: value})


def test_models_reject_a_config_of_the_wrong_type():
    with pytest.raises(ValueError, match="`config` must be a SAGANConfig"):
        SAGANGenerator(config=128)
