"""BigGAN at 128, 256 and 512 (Appendix B, Tables 4-6): counts, shapes.

The parameter counts are the published ones of Google's TensorFlow
re-implementation (compare_gan): trainable parameters only, so spectral-norm
vectors and batch-norm statistics are left out.
"""

import gc

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfcv.models.biggan import MODELS
from tfcv.models.biggan import PRESETS
from tfcv.models.biggan import BigGANConfig
from tfcv.models.biggan import biggan_128
from tfcv.models.biggan import biggan_256
from tfcv.models.biggan import biggan_512
from tfcv.models.biggan import biggan_digits_32
from tfcv.models.biggan import paper_config


def _count(model):
    """Trainable parameters of `model`."""
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def _build_in_graph(preset, **kwargs):
    """`preset(**kwargs)` with every variable created, nothing computed.

    The models are called once on zeros inside a fresh graph, so their
    variables exist (with initializers that never run) but no convolution
    or QR decomposition is executed; enough to count and inspect them.
    """
    with tf.Graph().as_default():
        generator, discriminator, config = preset(**kwargs)
        side, labels = config.resolution, tf.zeros([1, config.num_classes])
        generator((tf.zeros([1, config.dim_z]), labels))
        discriminator((tf.zeros([1, side, side, 3]), labels))
    return generator, discriminator, config


@pytest.fixture(scope="module")
def paper_models():
    """`paper_models(preset)`: the preset at full size, built in a graph.

    Built once per preset for the whole module; variables whose
    initializers never ran hold no memory.
    """
    cache = {}

    def get(preset):
        if preset not in cache:
            cache[preset] = _build_in_graph(preset)
        return cache[preset]

    return get


@pytest.fixture
def fast_init(monkeypatch):
    """Draws kernels from N(0, 0.02²) instead of orthogonalizing them.

    The QR decompositions behind orthogonal initialization of BigGAN-128's
    kernels take about a minute on two CPU cores, the forward pass a few
    seconds; what the pass checks does not depend on the initial values.
    """

    def normal(self, shape, dtype=None, **kwargs):
        return tf.random.normal(shape, stddev=0.02, dtype=dtype or tf.float32)

    monkeypatch.setattr(tf_keras.initializers.Orthogonal, "__call__", normal)


@pytest.mark.parametrize(
    "preset, generator_count, discriminator_count",
    [
        (biggan_128, 70_433_988, 87_982_370),
        (biggan_256, 82_097_604, 98_635_298),
        (biggan_512, 82_468_068, 98_801_378),
    ],
    ids=["128", "256", "512"],
)
def test_parameter_counts_match_the_published_models(
    paper_models, preset, generator_count, discriminator_count
):
    generator, discriminator, config = paper_models(preset)

    assert config.ch == 96 and config.num_classes == 1000
    assert _count(generator) == generator_count, "G"
    assert _count(discriminator) == discriminator_count, "D"


@pytest.mark.parametrize(
    "preset, dim_z, g_attention_block, d_attention_block",
    [(biggan_128, 120, 3, 0), (biggan_256, 140, 4, 1), (biggan_512, 160, 3, 2)],
    ids=["128", "256", "512"],
)
def test_presets_follow_the_tables(
    paper_models, preset, dim_z, g_attention_block, d_attention_block
):
    generator, discriminator, config = paper_models(preset)

    # 20-d chunks: one for the linear layer (z alone), one per G block
    # (with the 128-d shared embedding).
    assert config.dim_z == dim_z == 20 * (len(generator.blocks) + 1)
    assert generator.linear.layer.kernel.shape == (20, 16 * 16 * 96)
    assert generator.blocks[0].norm_1.gain_projection.layer.kernel.shape == (
        20 + 128,
        16 * 96,
    )
    assert generator.attention_index == g_attention_block
    assert discriminator.attention_index == d_attention_block
    # A 1x1 skip convolution only where D's channels change.
    channels = [3] + [96 * m for m in config.d_multipliers]
    assert [block.learnable_skip for block in discriminator.blocks] == [
        a != b for a, b in zip(channels, channels[1:])
    ]


def test_biggan_128_forward_pass_at_small_width():
    generator, discriminator, config = biggan_128(ch=8, num_classes=10)
    z = tf.random.normal([2, config.dim_z], seed=1)
    y = tf.one_hot([3, 7], 10)

    images = generator((z, y), training=True)
    logits = discriminator((images, y), training=True)

    assert images.shape == (2, 128, 128, 3)
    assert np.abs(images.numpy()).max() <= 1.0
    assert np.isfinite(images.numpy()).all()
    assert logits.shape == (2,)


def test_biggan_128_forward_pass_at_full_width(fast_init):
    generator, discriminator, config = biggan_128()
    z = tf.random.normal([1, config.dim_z], seed=2)
    y = tf.one_hot([417], 1000)

    images = generator((z, y))
    logits = discriminator((images, y))

    assert images.shape == (1, 128, 128, 3)
    assert np.abs(images.numpy()).max() <= 1.0
    assert logits.shape == (1,) and np.isfinite(logits.numpy()).all()
    del generator, discriminator
    gc.collect()


def test_orthogonal_regularization_skips_only_the_shared_embedding(
    paper_models,
):
    generator, _, _ = paper_models(biggan_128)
    kernels = {
        id(layer.kernel)
        for layer in generator.submodules
        if isinstance(layer, (tf_keras.layers.Dense, tf_keras.layers.Conv2D))
    }
    embedding = id(generator.shared_embedding.kernel)

    variables = generator.orthogonal_regularization_variables()

    assert embedding in kernels
    assert {id(v) for v in variables} == kernels - {embedding}
    # Linear, 5 blocks x (3 convs + 2 BNs x 2 projections), 4 attention
    # convs, the output conv.
    assert len(variables) == 1 + 5 * 7 + 4 + 1


def test_presets_are_registered():
    assert MODELS is PRESETS
    assert sorted(PRESETS) == [
        "biggan_128",
        "biggan_256",
        "biggan_512",
        "biggan_digits_32",
    ]


def test_digits_preset_keeps_its_architecture():
    generator, discriminator, config = _build_in_graph(biggan_digits_32)

    assert config == BigGANConfig()
    assert _count(generator) == 671_812
    assert _count(discriminator) == 595_426


def test_config_accepts_its_old_dict_form():
    old = BigGANConfig().to_dict()
    del old["d_attention_resolution"]
    config = paper_config(256, ch=8)

    assert BigGANConfig.from_dict(old) == BigGANConfig()
    assert BigGANConfig.from_dict(config.to_dict()) == config
    assert config.discriminator_attention_resolution == 64


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: biggan_128(dim_z=121), "dim_z"),
        (lambda: biggan_256(dim_z=6), "dim_z"),
        (lambda: biggan_128(resolution=256), "resolution"),
        (lambda: paper_config(64), "resolution"),
        (lambda: paper_config(128, g_multipliers=(16, 8)), "resolution"),
        (lambda: paper_config(128, d_multipliers=(1, 2, 4)), "d_multipliers"),
        (lambda: paper_config(128, g_multipliers=(16,)), "g_multipliers"),
        (lambda: paper_config(128, d_multipliers=(1, 0)), "d_multipliers"),
        (lambda: paper_config(128, attention_resolution=4), "attention"),
        (
            lambda: paper_config(512, d_attention_resolution=512),
            "d_attention_resolution",
        ),
        (lambda: paper_config(256, epsilon=0.0), "epsilon"),
        (lambda: biggan_512(ch=0), "ch"),
        (lambda: paper_config(128, shared_dim=0), "shared_dim"),
    ],
)
def test_bad_config_values_name_the_field(make, field):
    with pytest.raises(ValueError, match=f"`{field}"):
        make()


@pytest.mark.parametrize(
    "preset", ["biggan_128", "biggan_deep_128", "sagan_128"]
)
def test_first_call_with_wrong_sizes_is_refused_not_built(preset):
    from tfcv.models import MODELS as ALL_PRESETS

    builder = ALL_PRESETS[preset]
    generator, discriminator, config = builder(ch=8, num_classes=10)
    z = tf.zeros([2, config.dim_z])

    with pytest.raises(ValueError, match=r"`y` has size 1000 .* needs 10"):
        generator((z, tf.one_hot([1, 2], 1000)))
    with pytest.raises(ValueError, match=r"`z` has size"):
        generator((tf.zeros([2, config.dim_z + 1]), tf.one_hot([1, 2], 10)))
    with pytest.raises(ValueError, match=r"`images` has size 64 .* needs 128"):
        discriminator((tf.zeros([2, 64, 64, 3]), tf.one_hot([1, 2], 10)))

    # Still unbuilt: the right inputs work afterwards.
    assert generator((z, tf.one_hot([1, 2], 10))).shape == (2, 128, 128, 3)
