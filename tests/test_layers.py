"""Numerics of the GAN layers against short NumPy references."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfcv.layers import ConditionalBatchNormalization
from tfcv.layers import CrossReplicaBatchNormalization
from tfcv.layers import SelfAttention
from tfcv.layers import SpectralNormalization


def _largest_singular_value(matrix):
    return np.linalg.svd(matrix, compute_uv=False)[0]


@pytest.mark.parametrize(
    "layer, inputs",
    [
        (lambda: tf_keras.layers.Dense(6), np.ones([2, 5])),
        (lambda: tf_keras.layers.Conv2D(4, 3), np.ones([1, 6, 6, 3])),
        (lambda: tf_keras.layers.Conv2DTranspose(4, 3), np.ones([1, 5, 5, 3])),
        (
            lambda: tf_keras.layers.Conv3DTranspose(6, 2),
            np.ones([1, 3, 3, 3, 3]),
        ),
        (lambda: tf_keras.layers.Embedding(7, 5), np.array([1, 3])),
    ],
)
def test_spectral_normalization_divides_by_largest_singular_value(
    layer, inputs
):
    # Power iteration converges like (sigma_2 / sigma_1)^(2n): an unseeded
    # kernel whose top two singular values nearly tie (1 draw in ~100 for the
    # Conv3DTranspose case) misses rtol=1e-4 after 200 steps. Seeded, the
    # gaps are 0.79-0.97 and the error ~1e-7.
    tf_keras.utils.set_random_seed(0)
    wrapped = SpectralNormalization(layer(), epsilon=1e-12)

    for _ in range(200):
        wrapped(inputs, training=True)
    normalized = wrapped.normalized_kernel().numpy()
    raw = wrapped.kernel.numpy()

    matrix = wrapped._as_matrix(raw).numpy()
    sigma = _largest_singular_value(matrix)
    estimated = (raw.ravel() / normalized.ravel()).mean()
    np.testing.assert_allclose(estimated, sigma, rtol=1e-4)
    normalized_matrix = wrapped._as_matrix(normalized).numpy()
    np.testing.assert_allclose(
        _largest_singular_value(normalized_matrix), 1.0, rtol=1e-3
    )


def test_spectral_normalization_with_default_epsilon_has_unit_norm():
    wrapped = SpectralNormalization(tf_keras.layers.Conv2D(8, 3))
    inputs = np.ones([1, 6, 6, 4], np.float32)

    for _ in range(50):
        wrapped(inputs, training=True)

    matrix = wrapped._as_matrix(wrapped.normalized_kernel()).numpy()
    np.testing.assert_allclose(_largest_singular_value(matrix), 1.0, rtol=1e-3)


def test_spectral_normalization_updates_u_only_in_training():
    wrapped = SpectralNormalization(tf_keras.layers.Dense(3))
    wrapped(np.ones([1, 4]), training=False)
    before = wrapped.u.numpy().copy()

    wrapped(np.ones([1, 4]), training=False)
    unchanged = wrapped.u.numpy().copy()
    wrapped(np.ones([1, 4]), training=True)

    np.testing.assert_array_equal(before, unchanged)
    assert not np.allclose(before, wrapped.u.numpy())


def test_spectral_normalization_accepts_a_tensor_training_flag():
    wrapped = SpectralNormalization(tf_keras.layers.Dense(3))
    call = tf.function(lambda x, flag: wrapped(x, training=flag))
    inputs = np.ones([1, 4], np.float32)
    call(inputs, tf.constant(False))
    before = wrapped.u.numpy().copy()

    call(inputs, tf.constant(False))
    unchanged = wrapped.u.numpy().copy()
    call(inputs, tf.constant(True))

    np.testing.assert_array_equal(before, unchanged)
    assert not np.allclose(before, wrapped.u.numpy())


def test_spectral_normalization_gradient_flows_through_sigma():
    # d/dW of <W/σ(W), A> with u, v fixed: A/σ - <W, A> v u^T / σ².
    wrapped = SpectralNormalization(tf_keras.layers.Dense(3, use_bias=False))
    inputs = np.random.RandomState(0).randn(4, 5).astype(np.float32)
    wrapped(inputs, training=True)
    target = np.random.RandomState(1).randn(5, 3).astype(np.float32)

    with tf.GradientTape() as tape:
        kernel = wrapped.normalized_kernel(training=False)
        objective = tf.reduce_sum(kernel * target)
    gradient = tape.gradient(objective, wrapped.kernel).numpy()

    weights = wrapped.kernel.numpy()
    u = wrapped.u.numpy()
    v = u @ weights.T
    v /= np.linalg.norm(v)
    sigma = (v @ weights @ u.T).item()
    expected = target / sigma - (weights * target).sum() * (v.T @ u) / sigma**2
    np.testing.assert_allclose(gradient, expected, rtol=1e-3, atol=1e-5)


def test_spectral_normalization_gradient_matches_finite_differences():
    # With u fixed, σ(W) = |W u| exactly, so v's stop-gradient is lossless.
    layer = tf_keras.layers.Conv2D(3, 2, use_bias=False, dtype="float64")
    wrapped = SpectralNormalization(layer, dtype="float64")
    inputs = np.random.RandomState(0).randn(1, 3, 3, 2)
    wrapped(inputs, training=True)
    target = np.random.RandomState(1).randn(*wrapped.kernel.shape)

    def objective():
        kernel = wrapped.normalized_kernel(training=False)
        return tf.reduce_sum(tf.sin(kernel * 3.0) * target)

    with tf.GradientTape() as tape:
        value = objective()
    gradient = tape.gradient(value, wrapped.kernel).numpy()

    raw = wrapped.kernel.numpy()
    numeric = np.zeros_like(raw)
    step = 1e-6
    for index in np.ndindex(*raw.shape):
        for sign in (1.0, -1.0):
            shifted = raw.copy()
            shifted[index] += sign * step
            wrapped.kernel.assign(shifted)
            numeric[index] += sign * objective().numpy() / (2 * step)
    wrapped.kernel.assign(raw)
    np.testing.assert_allclose(gradient, numeric, rtol=1e-6, atol=1e-8)


def test_spectral_normalization_keeps_sigma_in_float32_under_mixed_precision():
    tf_keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        wrapped = SpectralNormalization(tf_keras.layers.Dense(3))
        outputs = wrapped(np.ones([2, 4], np.float32), training=True)
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")

    assert outputs.dtype == tf.float16
    assert wrapped.u.dtype == tf.float32
    assert wrapped.kernel.dtype == tf.float32


def test_spectral_normalization_rejects_bad_arguments():
    with pytest.raises(ValueError, match="tf_keras layer"):
        SpectralNormalization("dense")
    with pytest.raises(ValueError, match="power_iterations"):
        SpectralNormalization(tf_keras.layers.Dense(2), power_iterations=0)
    with pytest.raises(ValueError, match="epsilon"):
        SpectralNormalization(tf_keras.layers.Dense(2), epsilon=0.0)
    with pytest.raises(ValueError, match="has no `kernel`"):
        SpectralNormalization(tf_keras.layers.ReLU())(np.ones([1, 2]))


def _numpy_batch_norm(x, epsilon, axis=(0, 1, 2)):
    mean = x.mean(axis=axis)
    variance = x.var(axis=axis)
    return (x - mean) / np.sqrt(variance + epsilon)


def test_conditional_batch_norm_matches_numpy():
    rng = np.random.RandomState(0)
    features = rng.randn(6, 4, 4, 3).astype(np.float32) * 2 + 1
    condition = rng.randn(6, 5).astype(np.float32)
    layer = ConditionalBatchNormalization(spectral_norm=False)

    outputs = layer((features, condition), training=True).numpy()

    gain = 1.0 + condition @ layer.gain_projection.kernel.numpy()
    bias = condition @ layer.bias_projection.kernel.numpy()
    expected = (
        _numpy_batch_norm(features, 1e-4) * gain[:, None, None]
        + (bias[:, None, None])
    )
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)


def _run_on_replica_slices(strategy, layer, slices):
    """Feeds replica i `slices[i]`; returns the concatenated outputs."""
    values = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(slices[context.replica_id_in_sync_group])
    )
    results = strategy.run(
        tf.function(lambda x: layer(x, training=True)), args=(values,)
    )
    return np.concatenate(
        [t.numpy() for t in strategy.experimental_local_results(results)]
    )


@pytest.mark.parametrize("sizes", [(4, 4), (5, 2)])
def test_batch_statistics_are_global_across_replicas(mirrored_strategy, sizes):
    rng = np.random.RandomState(0)
    # Replica slices with very different statistics, even and uneven.
    slices = [
        (index * 5 + (1 + 2 * index) * rng.randn(size, 2, 2, 3)).astype(
            np.float32
        )
        for index, size in enumerate(sizes)
    ]
    with mirrored_strategy.scope():
        layer = CrossReplicaBatchNormalization(center=False, scale=False)
        layer.build(slices[0].shape)

    outputs = _run_on_replica_slices(mirrored_strategy, layer, slices)

    expected = _numpy_batch_norm(np.concatenate(slices), 1e-4)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)


_FOUR_REPLICAS = """
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 4
)
from tfcv.layers import CrossReplicaBatchNormalization
strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(4)])
assert strategy.num_replicas_in_sync == 4
rng = np.random.RandomState(0)
for sizes in [(2, 2, 2, 2), (3, 2, 1, 1)]:
    slices = [
        (i * 4 + (1 + i) * rng.randn(n, 3, 3, 5)).astype(np.float32)
        for i, n in enumerate(sizes)
    ]
    with strategy.scope():
        layer = CrossReplicaBatchNormalization(center=False, scale=False)
        layer.build(slices[0].shape)
    values = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(slices[context.replica_id_in_sync_group])
    )
    results = strategy.run(
        tf.function(lambda x: layer(x, training=True)), args=(values,)
    )
    outputs = np.concatenate(
        [t.numpy() for t in strategy.experimental_local_results(results)]
    )
    x = np.concatenate(slices)
    mean, variance = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    expected = (x - mean) / np.sqrt(variance + 1e-4)
    print("max_error", sizes, np.abs(outputs - expected).max())
"""


def test_batch_statistics_are_global_across_four_replicas(tmp_path):
    # Four virtual CPUs need a process of their own (conftest makes two).
    script = tmp_path / "four_replicas.py"
    script.write_text(_FOUR_REPLICAS)

    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )

    assert result.returncode == 0, result.stderr[-2000:]
    errors = [
        float(line.split()[-1])
        for line in result.stdout.splitlines()
        if line.startswith("max_error")
    ]
    assert len(errors) == 2, result.stdout
    assert max(errors) < 1e-5, result.stdout


def test_standing_statistics_are_exact_averages_of_the_passes():
    rng = np.random.RandomState(0)
    passes = [
        (1 + index + (index + 1) * rng.randn(4, 3, 3, 2)).astype(np.float32)
        for index in range(5)
    ]
    layer = CrossReplicaBatchNormalization(standing_levels=(0.5, 1.0))
    layer.build(passes[0].shape)

    layer.start_standing_statistics()
    accumulate = tf.function(lambda x: layer(x, batch_statistics=True))
    for batch in passes:
        accumulate(batch)
    layer.finish_standing_statistics(1)

    means = [batch.mean(axis=(0, 1, 2)) for batch in passes]
    variances = [batch.var(axis=(0, 1, 2)) for batch in passes]
    np.testing.assert_allclose(
        layer.standing_mean.numpy()[1], np.mean(means, 0), rtol=1e-5
    )
    np.testing.assert_allclose(
        layer.standing_variance.numpy()[1], np.mean(variances, 0), rtol=1e-5
    )
    np.testing.assert_array_equal(layer.standing_mean.numpy()[0], 0.0)
    assert not layer.accumulating


def test_batch_norm_accepts_a_tensor_training_flag():
    layer = CrossReplicaBatchNormalization(center=False, scale=False)
    inputs = 3 + 2 * np.random.RandomState(0).randn(6, 4).astype(np.float32)
    call = tf.function(lambda x, flag: layer(x, training=flag))

    batch = call(inputs, tf.constant(True)).numpy()
    standing = call(inputs, tf.constant(False)).numpy()

    np.testing.assert_allclose(
        batch, _numpy_batch_norm(inputs, 1e-4, 0), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(standing, inputs / np.sqrt(1 + 1e-4), rtol=1e-6)


def test_standing_statistics_reject_bad_use():
    layer = CrossReplicaBatchNormalization()
    layer.build((None, 3))

    layer.start_standing_statistics()
    with pytest.raises(ValueError, match="no batch-statistics pass"):
        layer.finish_standing_statistics(0)
    with pytest.raises(ValueError, match="level_index"):
        layer.finish_standing_statistics(1)


def test_standing_statistics_interpolate_in_truncation():
    layer = CrossReplicaBatchNormalization(
        center=False, scale=False, standing_levels=(0.5, 1.0)
    )
    layer.build((None, 2))
    layer.standing_mean.assign([[0.0, 0.0], [2.0, 4.0]])
    layer.standing_variance.assign([[1.0, 1.0], [1.0, 1.0]])
    inputs = np.array([[4.0, 4.0]], np.float32)

    halfway = layer(inputs, truncation=0.75).numpy()
    clamped = layer(inputs, truncation=0.1).numpy()

    scale = 1 / np.sqrt(1 + 1e-4)
    np.testing.assert_allclose(halfway, [[3 * scale, 2 * scale]], rtol=1e-5)
    np.testing.assert_allclose(clamped, [[4 * scale, 4 * scale]], rtol=1e-5)


def test_inference_output_does_not_depend_on_batch():
    layer = CrossReplicaBatchNormalization()
    inputs = np.random.RandomState(0).randn(8, 3).astype(np.float32)

    alone = layer(inputs[:1], training=False).numpy()
    batched = layer(inputs, training=False).numpy()[:1]

    np.testing.assert_allclose(alone, batched)


def test_batch_norm_rejects_bad_arguments():
    with pytest.raises(ValueError, match="epsilon"):
        CrossReplicaBatchNormalization(epsilon=0)
    with pytest.raises(ValueError, match="standing_levels"):
        CrossReplicaBatchNormalization(standing_levels=(1.0, 0.5))
    with pytest.raises(ValueError, match="channel axis"):
        CrossReplicaBatchNormalization().build(tf.TensorShape([2, None]))
    with pytest.raises(ValueError, match="pair"):
        ConditionalBatchNormalization().build(tf.TensorShape([2, 3]))


def _numpy_self_attention(x, layer):
    def conv(values, wrapper):
        kernel = wrapper.normalized_kernel().numpy()[0, 0]
        return values @ kernel

    def pool(values):
        if not layer.pool_keys:
            return values
        b, h, w, c = values.shape
        return values.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))

    b, h, w, c = x.shape
    queries = conv(x, layer.query_conv).reshape(b, h * w, -1)
    keys = pool(conv(x, layer.key_conv)).reshape(b, -1, c // layer.key_divisor)
    values = pool(conv(x, layer.value_conv)).reshape(
        b, -1, c // layer.value_divisor
    )
    scores = queries @ keys.transpose(0, 2, 1)
    attention = np.exp(scores - scores.max(-1, keepdims=True))
    attention /= attention.sum(-1, keepdims=True)
    attended = (attention @ values).reshape(b, h, w, -1)
    return x + layer.gamma.numpy() * conv(attended, layer.output_conv)


def test_self_attention_matches_numpy_equations():
    x = np.random.RandomState(0).randn(2, 4, 4, 16).astype(np.float32)
    layer = SelfAttention()
    layer(x)
    layer.gamma.assign(0.7)

    outputs, attention = layer(x, return_attention=True)

    np.testing.assert_allclose(
        outputs.numpy(), _numpy_self_attention(x, layer), rtol=1e-4, atol=1e-5
    )
    assert attention.shape == (2, 16, 4)


def test_self_attention_starts_as_identity():
    x = np.random.RandomState(0).randn(1, 4, 4, 16).astype(np.float32)

    outputs = SelfAttention()(x)

    np.testing.assert_allclose(outputs.numpy(), x)


def test_self_attention_rejects_bad_arguments():
    with pytest.raises(ValueError, match="key_divisor"):
        SelfAttention(key_divisor=0)
    with pytest.raises(ValueError, match="must each be <="):
        SelfAttention()(np.ones([1, 4, 4, 4], np.float32))
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        SelfAttention()(np.ones([1, 4, 4], np.float32))
    with pytest.raises(ValueError, match="even H and W"):
        SelfAttention()(np.ones([1, 5, 4, 16], np.float32))
    with pytest.raises(ValueError, match="epsilon"):
        SelfAttention(epsilon=0.0)


def test_self_attention_without_pooling_matches_numpy():
    x = np.random.RandomState(0).randn(2, 3, 5, 16).astype(np.float32)
    layer = SelfAttention(key_divisor=4, value_divisor=1, pool_keys=False)
    layer(x)
    layer.gamma.assign(-0.4)

    outputs, attention = layer(x, return_attention=True)

    expected = _numpy_self_attention(x, layer)
    np.testing.assert_allclose(outputs.numpy(), expected, rtol=1e-4, atol=1e-5)
    assert attention.shape == (2, 15, 15)
    np.testing.assert_allclose(attention.numpy().sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    "make_layer",
    [
        lambda: SpectralNormalization(tf_keras.layers.Dense(3), epsilon=1e-3),
        lambda: CrossReplicaBatchNormalization(standing_levels=(0.5, 1.0)),
        lambda: ConditionalBatchNormalization(spectral_norm=False),
        lambda: SelfAttention(key_divisor=4, pool_keys=False),
    ],
)
def test_get_config_round_trips(make_layer):
    layer = make_layer()

    config = layer.get_config()
    restored = type(layer).from_config(config)

    assert restored.get_config() == config


def test_self_attention_builds_in_a_functional_model():
    inputs = tf_keras.Input((4, 4, 16))
    model = tf_keras.Model(inputs, SelfAttention()(inputs))
    x = np.random.RandomState(0).randn(2, 4, 4, 16).astype(np.float32)

    outputs = model(x)

    assert model.output_shape == (None, 4, 4, 16)
    np.testing.assert_allclose(outputs.numpy(), x)


@pytest.mark.parametrize("stddev", [0.0, 1e-6])
def test_spectral_normalization_is_finite_for_tiny_kernels(stddev):
    initializer = tf_keras.initializers.RandomNormal(stddev=stddev, seed=0)
    wrapped = SpectralNormalization(
        tf_keras.layers.Dense(3, kernel_initializer=initializer)
    )
    inputs = np.ones([1, 4], np.float32)

    for _ in range(30):
        outputs = wrapped(inputs, training=True)

    matrix = wrapped.normalized_kernel().numpy()
    assert np.isfinite(outputs.numpy()).all()
    assert _largest_singular_value(matrix) <= 1.0 + 1e-3
    np.testing.assert_allclose(np.linalg.norm(wrapped.u.numpy()), 1.0, 1e-5)


def test_spectral_normalization_starts_from_a_unit_vector():
    wrapped = SpectralNormalization(tf_keras.layers.Dense(64))

    wrapped.build((None, 8))

    np.testing.assert_allclose(np.linalg.norm(wrapped.u.numpy()), 1.0, 1e-5)


def test_batch_norm_is_precise_for_a_large_mean():
    rng = np.random.RandomState(0)
    inputs = (1e4 + rng.randn(64, 4)).astype(np.float32)
    layer = CrossReplicaBatchNormalization(center=False, scale=False)

    outputs = layer(inputs, training=True).numpy()

    np.testing.assert_allclose(outputs.std(axis=0), 1.0, rtol=1e-3)


def test_batch_norm_rejects_inputs_of_other_channels():
    layer = CrossReplicaBatchNormalization()
    layer(np.ones([2, 5], np.float32))

    with pytest.raises(ValueError, match="built for 5 channels"):
        layer(np.ones([2, 1], np.float32))


@pytest.mark.parametrize(
    "make_layer",
    [
        lambda eps: SpectralNormalization(
            tf_keras.layers.Dense(2), epsilon=eps
        ),
        lambda eps: SelfAttention(epsilon=eps),
        lambda eps: CrossReplicaBatchNormalization(epsilon=eps),
    ],
)
def test_epsilon_must_be_a_finite_positive_number(make_layer):
    with pytest.raises(TypeError, match="`epsilon` must be a real number"):
        make_layer("1e-4")
    with pytest.raises(TypeError, match="`epsilon` must be a real number"):
        make_layer(None)
    with pytest.raises(ValueError, match="`epsilon` must be a finite number"):
        make_layer(float("inf"))


def test_standing_levels_must_be_finite_numbers():
    for levels in (1.0, None, ("a",), "12", (0.5, float("nan"))):
        with pytest.raises(ValueError, match="standing_levels"):
            CrossReplicaBatchNormalization(standing_levels=levels)


def test_self_attention_refuses_odd_sizes_known_only_at_run_time():
    layer = SelfAttention()
    call = tf.function(
        layer.__call__,
        input_signature=[tf.TensorSpec([1, None, None, 16], tf.float32)],
    )
    call(tf.zeros([1, 4, 4, 16]))

    with pytest.raises(tf.errors.InvalidArgumentError, match="even H, W"):
        call(tf.zeros([1, 5, 4, 16]))
