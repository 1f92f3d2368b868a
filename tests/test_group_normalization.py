"""GroupNormalization and InstanceNormalization against NumPy references."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfcv.layers import GroupNormalization
from tfcv.layers import InstanceNormalization

# One shape per supported rank, all with C = 12 channels.
SHAPES = {
    3: (2, 10, 12),
    4: (2, 5, 6, 12),
    5: (2, 3, 4, 5, 12),
}


def _group_norm_reference(inputs, groups, gamma=1.0, beta=0.0, epsilon=1e-5):
    """Eqs. 1, 2, 6 and 7 of Wu & He (2018), in float64, one set at a time."""
    inputs = np.asarray(inputs, np.float64)
    channels = inputs.shape[-1]
    # Eq. 7: channel k belongs to group ⌊k / (C/G)⌋.
    group_of = np.arange(channels) // (channels // groups)
    normalized = np.empty_like(inputs)
    for example in range(inputs.shape[0]):
        for group in range(groups):
            members = inputs[example][..., group_of == group]
            normalized[example][..., group_of == group] = (
                members - members.mean()
            ) / np.sqrt(members.var() + epsilon)
    return normalized * gamma + beta


def _instance_norm_reference(inputs, epsilon=1e-5):
    """Ulyanov et al. (2016): per example and channel, over positions."""
    inputs = np.asarray(inputs, np.float64)
    spatial_axes = tuple(range(1, inputs.ndim - 1))
    mean = inputs.mean(axis=spatial_axes, keepdims=True)
    variance = inputs.var(axis=spatial_axes, keepdims=True)
    return (inputs - mean) / np.sqrt(variance + epsilon)


def _inputs(shape, seed=0, scale=3.0, offset=2.0):
    """Normal inputs with a non-zero mean, float32."""
    values = np.random.RandomState(seed).randn(*shape) * scale + offset
    return values.astype(np.float32)


def _set_random_affine(layer, seed=1):
    """Gives γ and β distinct per-channel values; returns them."""
    rng = np.random.RandomState(seed)
    gamma = rng.uniform(0.5, 1.5, layer.gamma.shape).astype(np.float32)
    beta = rng.randn(*layer.beta.shape).astype(np.float32)
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    return gamma, beta


def _float64_autodiff_group_norm(inputs, gamma, beta, groups, epsilon):
    """The paper's Fig. 3 code, channels last, differentiated by TF."""
    batch, channels = inputs.shape[0], inputs.shape[-1]
    # [B, ..., C] -> [B, N, G, C/G]
    grouped = tf.reshape(inputs, [batch, -1, groups, channels // groups])
    mean, variance = tf.nn.moments(grouped, axes=[1, 3], keepdims=True)
    normalized = (grouped - mean) / tf.sqrt(variance + epsilon)
    # [B, N, G, C/G] -> [B, ..., C]
    normalized = tf.reshape(normalized, inputs.shape)
    return normalized * gamma + beta


@pytest.fixture
def mixed_policy(request):
    """Sets the global dtype policy to `request.param`, then restores it."""
    previous = tf_keras.mixed_precision.global_policy()
    tf_keras.mixed_precision.set_global_policy(request.param)
    try:
        yield request.param
    finally:
        tf_keras.mixed_precision.set_global_policy(previous)


@pytest.mark.parametrize("rank", sorted(SHAPES))
@pytest.mark.parametrize("groups", [1, 3, 4, 12])
def test_group_normalization_matches_reference(rank, groups):
    inputs = _inputs(SHAPES[rank])
    layer = GroupNormalization(groups=groups)
    layer.build(inputs.shape)
    gamma, beta = _set_random_affine(layer)

    outputs = layer(inputs).numpy()

    expected = _group_norm_reference(inputs, groups, gamma, beta)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rank", sorted(SHAPES))
@pytest.mark.parametrize("channels_per_group", [1, 4, 12])
def test_channels_per_group_sets_the_number_of_groups(rank, channels_per_group):
    inputs = _inputs(SHAPES[rank])
    groups = 12 // channels_per_group
    layer = GroupNormalization(channels_per_group=channels_per_group)

    outputs = layer(inputs).numpy()

    assert layer.resolved_groups == groups
    expected = _group_norm_reference(inputs, groups)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)


def test_channels_per_group_accepts_a_consistent_groups():
    inputs = _inputs(SHAPES[4])
    layer = GroupNormalization(groups=3, channels_per_group=4)

    outputs = layer(inputs).numpy()

    assert layer.resolved_groups == 3
    expected = _group_norm_reference(inputs, 3)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "mixed_policy, tolerance",
    [("mixed_float16", 1e-2), ("mixed_bfloat16", 5e-2)],
    indirect=["mixed_policy"],
)
def test_mixed_precision_large_variance_matches_float32(
    mixed_policy, tolerance
):
    # Values ~1e3: x² overflows float16 (max 65504), so the moments must
    # not be computed in float16.
    layer = GroupNormalization(groups=4)
    compute_dtype = tf.as_dtype(layer.compute_dtype)
    inputs = tf.cast(
        _inputs((2, 8, 8, 16), scale=1e3, offset=0.0), compute_dtype
    )
    layer.build(inputs.shape)
    gamma, beta = _set_random_affine(layer)

    outputs = layer(inputs)

    assert outputs.dtype == compute_dtype
    assert layer.gamma.dtype == tf.float32
    quantized_inputs = tf.cast(inputs, tf.float64).numpy()
    expected = _group_norm_reference(quantized_inputs, 4, gamma, beta)
    values = tf.cast(outputs, tf.float64).numpy()
    assert np.all(np.isfinite(values))
    np.testing.assert_allclose(values, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize(
    "mixed_policy", ["mixed_float16", "mixed_bfloat16"], indirect=True
)
def test_mixed_precision_gradients_are_finite_float32(mixed_policy):
    layer = GroupNormalization(groups=4)
    compute_dtype = tf.as_dtype(layer.compute_dtype)
    inputs = tf.cast(_inputs((2, 8, 8, 16), scale=1e3), compute_dtype)
    upstream = _inputs((2, 8, 8, 16), seed=2, offset=0.0)

    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = layer(inputs)
        loss = tf.reduce_sum(tf.cast(outputs, tf.float32) * upstream)
    gradients = tape.gradient(loss, [inputs] + layer.trainable_variables)

    assert [gradient.dtype for gradient in gradients] == [
        compute_dtype,
        tf.float32,
        tf.float32,
    ]
    for gradient in gradients:
        values = tf.cast(gradient, tf.float32).numpy()
        assert np.all(np.isfinite(values)) and np.any(values != 0)


def test_zero_initialized_gamma_outputs_beta():
    inputs = _inputs(SHAPES[4])
    layer = GroupNormalization(
        groups=3,
        gamma_initializer="zeros",
        beta_initializer=tf_keras.initializers.RandomNormal(seed=0),
    )

    outputs = layer(inputs).numpy()

    expected = np.broadcast_to(layer.beta.numpy(), inputs.shape)
    np.testing.assert_array_equal(layer.gamma.numpy(), 0.0)
    np.testing.assert_allclose(outputs, expected, atol=1e-7)


def test_without_center_and_scale_has_no_weights():
    inputs = _inputs(SHAPES[3])
    layer = GroupNormalization(groups=4, center=False, scale=False)

    outputs = layer(inputs).numpy()

    assert layer.weights == []
    expected = _group_norm_reference(inputs, 4)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rank", sorted(SHAPES))
@pytest.mark.parametrize("groups", [1, 4, 12])
def test_gradients_match_autodiff_of_the_paper_code(rank, groups):
    inputs = _inputs(SHAPES[rank])
    upstream = _inputs(SHAPES[rank], seed=3, offset=0.0)
    layer = GroupNormalization(groups=groups)
    layer.build(inputs.shape)
    gamma, beta = _set_random_affine(layer)
    inputs = tf.constant(inputs)

    with tf.GradientTape() as tape:
        tape.watch(inputs)
        loss = tf.reduce_sum(layer(inputs) * upstream)
    gradients = tape.gradient(loss, [inputs, layer.gamma, layer.beta])
    reference_variables = [
        tf.Variable(tf.cast(value, tf.float64))
        for value in (inputs, gamma, beta)
    ]
    with tf.GradientTape() as tape:
        reference_outputs = _float64_autodiff_group_norm(
            *reference_variables, groups, 1e-5
        )
        reference_loss = tf.reduce_sum(reference_outputs * upstream)
    expected = tape.gradient(reference_loss, reference_variables)

    for gradient, reference in zip(gradients, expected):
        gradient, reference = gradient.numpy(), reference.numpy()
        assert np.any(gradient != 0)
        scale = np.abs(reference).max()
        np.testing.assert_allclose(gradient, reference, atol=1e-5 * scale)


def test_second_order_gradients_match_autodiff():
    # A gradient penalty differentiates the input gradient again.
    inputs = tf.constant(_inputs(SHAPES[4]))
    upstream = _inputs(SHAPES[4], seed=3, offset=0.0)
    layer = GroupNormalization(groups=3)
    layer.build(inputs.shape)
    gamma, beta = _set_random_affine(layer)

    def penalty_gradients(normalize, variables):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                inner.watch(variables[0])
                loss = tf.reduce_sum(normalize(*variables) * upstream)
            input_gradient = inner.gradient(loss, variables[0])
            penalty = tf.reduce_sum(tf.square(input_gradient))
        return outer.gradient(penalty, variables[:2])

    gradients = penalty_gradients(
        lambda x, *_: layer(x), [tf.Variable(inputs), layer.gamma]
    )
    expected = penalty_gradients(
        lambda x, g, b: _float64_autodiff_group_norm(x, g, b, 3, 1e-5),
        [
            tf.Variable(tf.cast(value, tf.float64))
            for value in (inputs, gamma, beta)
        ],
    )

    for gradient, reference in zip(gradients, expected):
        scale = np.abs(reference.numpy()).max()
        np.testing.assert_allclose(
            gradient.numpy(), reference.numpy(), atol=1e-4 * scale
        )


@pytest.mark.parametrize("rank", sorted(SHAPES))
def test_jit_compile_matches_graph(rank):
    inputs = tf.constant(_inputs(SHAPES[rank]))
    layer = GroupNormalization(groups=4)
    layer.build(inputs.shape)
    _set_random_affine(layer)

    def step(values):
        with tf.GradientTape() as tape:
            tape.watch(values)
            outputs = layer(values)
            loss = tf.reduce_sum(outputs * tf.cos(values))
        return [outputs] + tape.gradient(loss, [values, layer.gamma])

    graph = tf.function(step)(inputs)
    compiled = tf.function(step, jit_compile=True)(inputs)

    for expected, actual in zip(graph, compiled):
        np.testing.assert_allclose(
            actual.numpy(), expected.numpy(), rtol=1e-4, atol=1e-4
        )


def test_dynamic_batch_and_spatial_axes():
    shapes = [(1, 3, 7, 12), (3, 4, 4, 12)]
    layer = GroupNormalization(groups=4)
    normalize = tf.function(
        layer,
        input_signature=[tf.TensorSpec([None, None, None, 12], tf.float32)],
    )
    model_input = tf_keras.Input((None, None, 12))

    outputs = [normalize(_inputs(shape)) for shape in shapes]
    symbolic = layer(model_input)

    assert symbolic.shape.as_list() == [None, None, None, 12]
    for shape, output in zip(shapes, outputs):
        expected = _group_norm_reference(_inputs(shape), 4)
        np.testing.assert_allclose(
            output.numpy(), expected, rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize(
    "dtype, tolerance", [("float32", 1e-5), ("float64", 1e-12)]
)
def test_float_dtypes_are_kept(dtype, tolerance):
    inputs = _inputs(SHAPES[4]).astype(dtype)
    layer = GroupNormalization(groups=4, dtype=dtype)

    outputs = layer(inputs)

    assert outputs.dtype == dtype and layer.gamma.dtype == dtype
    expected = _group_norm_reference(inputs, 4)
    np.testing.assert_allclose(
        outputs.numpy(), expected, rtol=tolerance, atol=tolerance
    )


def test_mirrored_strategy_normalizes_each_example(mirrored_strategy):
    inputs = _inputs((4, 6, 6, 12))
    with mirrored_strategy.scope():
        layer = GroupNormalization(groups=3)
        layer.build(inputs.shape)
    dataset = tf.data.Dataset.from_tensor_slices(inputs).batch(4)
    batch = next(
        iter(mirrored_strategy.experimental_distribute_dataset(dataset))
    )

    @tf.function
    def replica_step(values):
        with tf.GradientTape() as tape:
            outputs = layer(values)
            loss = tf.reduce_sum(outputs * tf.sin(values))
        return outputs, tape.gradient(loss, layer.gamma)

    outputs, gradients = mirrored_strategy.run(replica_step, args=(batch,))

    local = mirrored_strategy.experimental_local_results(outputs)
    np.testing.assert_allclose(
        np.concatenate([value.numpy() for value in local]),
        _group_norm_reference(inputs, 3),
        rtol=1e-5,
        atol=1e-5,
    )
    for gradient in mirrored_strategy.experimental_local_results(gradients):
        assert np.all(np.isfinite(gradient.numpy()))


def test_regularizers_add_losses():
    layer = GroupNormalization(
        groups=4,
        gamma_regularizer=tf_keras.regularizers.L2(0.5),
        beta_regularizer=tf_keras.regularizers.L2(0.25),
        beta_initializer="ones",
    )

    layer(_inputs(SHAPES[4]))

    losses = sorted(float(loss) for loss in layer.losses)
    assert losses == pytest.approx([0.25 * 12, 0.5 * 12])


def test_get_config_round_trip():
    layer = GroupNormalization(
        groups=6,
        epsilon=1e-3,
        gamma_initializer="zeros",
        gamma_regularizer=tf_keras.regularizers.L2(1e-4),
        name="norm",
    )
    inputs = _inputs(SHAPES[5])
    layer.build(inputs.shape)
    _set_random_affine(layer)

    config = layer.get_config()
    restored = GroupNormalization.from_config(config)
    by_name = tf_keras.layers.deserialize(tf_keras.layers.serialize(layer))
    restored.build(inputs.shape)
    restored.set_weights(layer.get_weights())

    assert type(by_name) is GroupNormalization
    assert restored.get_config() == config
    assert by_name.get_config() == config
    np.testing.assert_array_equal(restored(inputs), layer(inputs))


def test_instance_normalization_matches_reference():
    inputs = _inputs(SHAPES[4])
    layer = InstanceNormalization()

    outputs = layer(inputs).numpy()

    assert layer.resolved_groups == 12
    expected = _instance_norm_reference(inputs)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)


def test_instance_normalization_get_config_round_trip():
    layer = InstanceNormalization(epsilon=1e-3, center=False)
    config = layer.get_config()

    restored = tf_keras.layers.deserialize(tf_keras.layers.serialize(layer))

    assert "groups" not in config and "channels_per_group" not in config
    assert type(restored) is InstanceNormalization
    assert restored.get_config() == config


# One test per raised error, each asserting what the message says.


def test_error_channels_not_divisible_by_groups():
    layer = GroupNormalization(groups=32)

    with pytest.raises(ValueError) as error:
        layer.build((None, 8, 8, 48))

    message = str(error.value)
    assert "number of channels (C=48) must be divisible by `groups`" in message
    assert "(G=32)" in message
    assert "(1, 2, 3, 4, 6, 8, 12, 16, 24, 48)" in message


def test_error_more_groups_than_channels():
    layer = GroupNormalization(groups=32)

    with pytest.raises(ValueError) as error:
        layer.build((None, 8, 8, 16))

    assert "`groups` (G=32) must not exceed the number of channels (C=16)" in (
        str(error.value)
    )


@pytest.mark.parametrize("groups", [0, -2, 2.5, True])
def test_error_groups_not_a_positive_integer(groups):
    with pytest.raises(ValueError) as error:
        GroupNormalization(groups=groups)

    assert f"`groups` must be an integer >= 1, got {groups!r}" in str(
        error.value
    )


def test_error_channels_not_divisible_by_channels_per_group():
    layer = GroupNormalization(channels_per_group=5)

    with pytest.raises(ValueError) as error:
        layer.build((None, 8, 8, 12))

    message = str(error.value)
    assert "number of channels (C=12) must be divisible" in message
    assert "`channels_per_group` (got 5)" in message


@pytest.mark.parametrize("channels_per_group", [0, 1.5])
def test_error_channels_per_group_not_a_positive_integer(channels_per_group):
    with pytest.raises(ValueError) as error:
        GroupNormalization(channels_per_group=channels_per_group)

    assert "`channels_per_group` must be None or an integer >= 1" in str(
        error.value
    )


def test_error_groups_conflicts_with_channels_per_group():
    layer = GroupNormalization(groups=8, channels_per_group=4)

    with pytest.raises(ValueError) as error:
        layer.build((None, 8, 8, 12))

    message = str(error.value)
    assert "`groups` (G=8) conflicts with `channels_per_group`=4" in message
    assert "G = 12 / 4 = 3" in message


def test_error_unknown_channel_dimension():
    layer = GroupNormalization(groups=4)

    with pytest.raises(ValueError) as error:
        layer.build((None, 8, 8, None))

    message = str(error.value)
    assert "channel axis (last) of the input must be known" in message
    assert "(None, 8, 8, None)" in message


@pytest.mark.parametrize("shape", [(4, 12), (1, 2, 2, 2, 2, 12)])
def test_error_unsupported_rank(shape):
    layer = GroupNormalization(groups=4)

    with pytest.raises(ValueError) as error:
        layer.build(shape)

    message = str(error.value)
    assert f"got rank {len(shape)} with shape {shape}" in message
    assert "rank 3 [B, L, C], 4 [B, H, W, C] or 5 [B, T, H, W, C]" in message


@pytest.mark.parametrize(
    "epsilon", [0.0, -1e-5, "small", True, float("inf"), float("nan")]
)
def test_error_epsilon_not_positive(epsilon):
    with pytest.raises(ValueError) as error:
        GroupNormalization(epsilon=epsilon)

    assert f"`epsilon` must be a number > 0, got {epsilon!r}" in str(
        error.value
    )
