"""ResNets with pluggable normalization (Group Normalization §4)."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfcv.layers import BatchNormalization
from tfcv.layers import FrozenBatchNormalization
from tfcv.layers import GroupNormalization
from tfcv.models import resnet


def _trainable(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def test_resnet50_has_the_same_trainable_parameters_with_gn_and_bn():
    gn = resnet.resnet50("gn")
    bn = resnet.resnet50("bn")
    # torchvision's and fb.resnet.torch's ResNet-50: 25,557,032.
    assert _trainable(gn) == _trainable(bn) == 25_557_032
    # BN's moving averages are state, not parameters.
    assert not gn.non_trainable_variables
    assert sum(np.prod(v.shape) for v in bn.non_trainable_variables) == 53_120


def test_resnet101_parameter_count():
    assert _trainable(resnet.resnet101("gn")) == 44_549_160


@pytest.mark.parametrize("norm", resnet.NORMALIZATIONS)
def test_every_normalization_builds_and_runs(norm):
    model = resnet.resnet_reduced(norm, input_shape=(8, 8, 1))
    logits = model(tf.random.normal([2, 8, 8, 1]), training=True)
    assert logits.shape == (2, 10)
    assert np.all(np.isfinite(logits.numpy()))


def test_unknown_normalization_is_named():
    with pytest.raises(ValueError, match=r"Unknown normalization 'batch'.*gn"):
        resnet.ResNetConfig(norm="batch")


def test_groups_that_do_not_divide_a_layer_name_it():
    with pytest.raises(
        ValueError, match=r"'stem_norm' has 32 channels.*groups=24"
    ):
        resnet.reduced_config("gn", groups=24)
    with pytest.raises(ValueError, match=r"'stem_norm' has 32 channels"):
        resnet.reduced_config("gn", channels_per_group=64)
    # The same numbers are fine when the widths allow them.
    resnet.reduced_config("gn", groups=64, width=64, stem_width=64)


def test_last_normalization_of_each_block_starts_at_zero_gamma():
    model = resnet.resnet_reduced("gn", input_shape=(8, 8, 1))
    norms = [l for l in model.layers if isinstance(l, GroupNormalization)]
    for layer in norms:
        expected = 0.0 if layer.name.endswith("_norm3") else 1.0
        np.testing.assert_array_equal(layer.gamma.numpy(), expected)
    assert sum(l.name.endswith("_norm3") for l in norms) == 4


def test_blocks_start_as_the_identity_up_to_the_shortcut():
    # γ = 0 in norm3: a block without projection outputs relu(input).
    config = resnet.ResNetConfig(norm="gn", groups=8)
    inputs = tf_keras.Input((4, 4, 64))
    outputs = resnet.bottleneck_block(inputs, 16, 1, config, "block")
    block = tf_keras.Model(inputs, outputs)
    x = tf.random.normal([2, 4, 4, 64])
    np.testing.assert_allclose(block(x), tf.nn.relu(x), atol=1e-6)


def _decay_terms(model):
    return len(model.losses)


def test_weight_decay_on_gamma_and_beta_is_a_switch():
    with_norm = resnet.resnet_reduced("gn", input_shape=(8, 8, 1))
    without = resnet.resnet_reduced(
        "gn", input_shape=(8, 8, 1), decay_normalization=False
    )
    no_decay = resnet.resnet_reduced(
        "gn", input_shape=(8, 8, 1), weight_decay=0.0
    )
    norms = sum(isinstance(l, GroupNormalization) for l in with_norm.layers)
    # Convolutions + dense kernel and bias, plus γ and β of each norm.
    assert _decay_terms(with_norm) == _decay_terms(without) + 2 * norms
    assert _decay_terms(no_decay) == 0
    # λ/2 Σw² (the gradient is SGD's λw) over every trainable weight.
    decay = 1e-4
    expected = sum(
        decay / 2 * float(tf.reduce_sum(tf.square(v)))
        for v in with_norm.trainable_variables
    )
    np.testing.assert_allclose(
        float(tf.add_n(with_norm.losses)), expected, rtol=1e-5
    )


def test_frozen_bn_is_the_linear_layer_of_stored_statistics():
    layer = FrozenBatchNormalization()
    x = tf.random.normal([1, 3, 3, 4])
    layer(x)
    mean, variance = np.arange(4.0), np.arange(1.0, 5.0)
    gamma, beta = np.full(4, 2.0), np.full(4, -1.0)
    layer.set_weights([gamma, beta, mean, variance])
    expected = gamma * (x.numpy() - mean) / np.sqrt(variance + 1e-5) + beta
    np.testing.assert_allclose(layer(x, training=True), expected, rtol=1e-5)
    assert not layer.trainable_weights
    layer.trainable = True
    assert not layer.trainable_weights


def test_frozen_bn_model_loads_the_weights_of_a_bn_model():
    bn = resnet.resnet_reduced("bn", input_shape=(8, 8, 1))
    frozen = resnet.resnet_reduced("frozen_bn", input_shape=(8, 8, 1))
    frozen.set_weights(bn.get_weights())
    x = tf.random.normal([3, 8, 8, 1])
    np.testing.assert_allclose(
        frozen(x, training=True), bn(x, training=False), atol=1e-5
    )


def test_bn_refuses_one_image_per_replica_in_training():
    layer = BatchNormalization(name="bn_test")
    with pytest.raises(ValueError, match="batch of 1.*group normalization"):
        layer(tf.ones([1, 4, 4, 8]), training=True)
    # Inference on one image is fine.
    assert layer(tf.ones([1, 4, 4, 8]), training=False).shape == (1, 4, 4, 8)


def test_backbone_returns_named_stage_outputs():
    backbone = resnet.resnet_backbone(resnet.ResNetConfig(depths=(1, 1, 1, 1)))
    outputs = backbone(tf.zeros([1, 64, 64, 3]))
    shapes = {name: tuple(value.shape) for name, value in outputs.items()}
    assert shapes == {
        "stem": (1, 16, 16, 64),
        "conv2": (1, 16, 16, 256),
        "conv3": (1, 8, 8, 512),
        "conv4": (1, 4, 4, 1024),
        "conv5": (1, 2, 2, 2048),
    }


def test_stage_outputs_share_the_classifier_weights():
    model = resnet.resnet_reduced("gn", input_shape=(8, 8, 1))
    stages = resnet.stage_outputs(model)
    x = tf.random.normal([2, 8, 8, 1])
    features = stages(x)
    pooled = tf.reduce_mean(features["conv5"], axis=[1, 2])
    np.testing.assert_allclose(
        model.get_layer("logits")(pooled), model(x), atol=1e-5
    )


def test_3d_block_normalizes_over_time_and_space():
    config = resnet.ResNetConfig(norm="gn", groups=4, zero_init_residual=False)
    inputs = tf_keras.Input((4, 6, 6, 16))
    outputs = resnet.bottleneck_block_3d(inputs, 8, strides=2, config=config)
    block = tf_keras.Model(inputs, outputs)
    video = tf.random.normal([2, 4, 6, 6, 16])
    assert block(video).shape == (2, 4, 3, 3, 32)
    assert block.get_layer("block3d_conv1").kernel.shape == (3, 1, 1, 16, 8)
    # norm1's output: per example and group, mean 0 and variance 1 over
    # (T, H, W) and the group's channels.
    probe = tf_keras.Model(inputs, block.get_layer("block3d_norm1").output)
    normalized = probe(video).numpy().reshape(2, -1, 4, 2)
    np.testing.assert_allclose(normalized.mean(axis=(1, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(normalized.var(axis=(1, 3)), 1, atol=1e-3)


def test_3d_block_with_bn_and_bad_arguments():
    config = resnet.ResNetConfig(norm="bn")
    video = tf_keras.Input((2, 4, 4, 8))
    outputs = resnet.bottleneck_block_3d(video, 8, config=config, name="v")
    assert outputs.shape[1:] == (2, 4, 4, 32)
    with pytest.raises(ValueError, match="odd integer"):
        resnet.bottleneck_block_3d(video, 8, config=config, temporal_kernel=2)
    with pytest.raises(ValueError, match=r"'b_norm1' has 8 channels"):
        resnet.bottleneck_block_3d(video, 8, name="b")
    with pytest.raises(ValueError, match="expects video"):
        resnet.bottleneck_block_3d(tf_keras.Input((4, 4, 8)), 8, config=config)


def test_reduced_resnet_round_trips_through_config_and_savedmodel(tmp_path):
    model = resnet.resnet_reduced("gn", input_shape=(8, 8, 1))
    x = tf.random.normal([2, 8, 8, 1])
    clone = tf_keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(x), model(x), atol=1e-6)
    tf.saved_model.save(model, str(tmp_path / "saved"))
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(loaded(x, training=False), model(x), atol=1e-5)


def test_bn_statistics_are_per_replica_under_mirrored(mirrored_strategy):
    # Each replica's moving mean follows its own examples (not synced).
    with mirrored_strategy.scope():
        layer = BatchNormalization(momentum=0.0)
        layer.build([None, 2, 2, 1])
    data = np.concatenate(
        [np.zeros([2, 2, 2, 1]), np.full([2, 2, 2, 1], 4.0)]
    ).astype(np.float32)
    dataset = tf.data.Dataset.from_tensors(data)
    batch = next(
        iter(mirrored_strategy.experimental_distribute_dataset(dataset))
    )

    @tf.function
    def step(x):
        return mirrored_strategy.run(lambda v: layer(v, training=True), (x,))

    step(batch)
    replicas = [
        float(v.numpy()[0])
        for v in mirrored_strategy.experimental_local_results(layer.moving_mean)
    ]
    assert replicas == [0.0, 4.0]


def test_config_takes_numpy_numbers_and_refuses_conflicts():
    config = resnet.reduced_config(
        "gn", groups=np.int64(16), weight_decay=np.float32(1e-4)
    )
    assert config.groups == 16 and isinstance(config.weight_decay, float)
    with pytest.raises(ValueError, match="conflicts with"):
        resnet.reduced_config("gn", groups=16, channels_per_group=16)
    with pytest.raises(ValueError, match="True or False"):
        resnet.reduced_config("gn", decay_normalization="no")
    with pytest.raises(ValueError, match="integers >= 1"):
        resnet.bottleneck_block_3d(tf_keras.Input((2, 4, 4, 8)), 0)
    # A dict config works for the 3D block as for `resnet`.
    outputs = resnet.bottleneck_block_3d(
        tf_keras.Input((2, 4, 4, 8)), 8, config={"norm": "bn"}
    )
    assert outputs.shape[-1] == 32


def test_bn_arguments_are_checked():
    with pytest.raises(ValueError, match="momentum"):
        BatchNormalization(momentum=2.0)
    with pytest.raises((ValueError, TypeError), match="epsilon"):
        BatchNormalization(epsilon=float("nan"))


def test_synchronized_bn_accepts_one_image_per_replica_on_two(
    mirrored_strategy,
):
    with mirrored_strategy.scope():
        layer = BatchNormalization(synchronized=True)
        layer.build([None, 2, 2, 1])
    data = np.arange(8, dtype=np.float32).reshape([2, 2, 2, 1])
    dataset = tf.data.Dataset.from_tensors(data)
    batch = next(
        iter(mirrored_strategy.experimental_distribute_dataset(dataset))
    )

    @tf.function
    def step(x):
        return mirrored_strategy.run(lambda v: layer(v, training=True), (x,))

    outputs = mirrored_strategy.experimental_local_results(step(batch))
    # Global statistics over both replicas' images: mean 0 overall.
    total = np.concatenate([o.numpy() for o in outputs])
    np.testing.assert_allclose(total.mean(), 0.0, atol=1e-5)
