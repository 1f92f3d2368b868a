"""Numerics of the GAN layers against short NumPy references."""

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
        (lambda: tf_keras.layers.Embedding(7, 5), np.array([1, 3])),
    ],
)
def test_spectral_normalization_divides_by_largest_singular_value(
    layer, inputs
):
    wrapped = SpectralNormalization(layer(), epsilon=1e-9)

    for _ in range(60):
        wrapped(inputs, training=True)
    normalized = wrapped.normalized_kernel().numpy()
    raw = wrapped.kernel.numpy()

    matrix = wrapped._as_matrix(raw).numpy()
    sigma = _largest_singular_value(matrix)
    np.testing.assert_allclose(normalized, raw / sigma, rtol=2e-3)


def test_spectral_normalization_updates_u_only_in_training():
    wrapped = SpectralNormalization(tf_keras.layers.Dense(3))
    wrapped(np.ones([1, 4]), training=False)
    before = wrapped.u.numpy().copy()

    wrapped(np.ones([1, 4]), training=False)
    unchanged = wrapped.u.numpy().copy()
    wrapped(np.ones([1, 4]), training=True)

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
    v /= np.linalg.norm(v) + 1e-4
    sigma = (v @ weights @ u.T).item()
    expected = target / sigma - (weights * target).sum() * (v.T @ u) / sigma**2
    np.testing.assert_allclose(gradient, expected, rtol=1e-3, atol=1e-5)


def test_spectral_normalization_rejects_bad_arguments():
    with pytest.raises(ValueError, match="tf_keras layer"):
        SpectralNormalization("dense")
    with pytest.raises(ValueError, match="power_iterations"):
        SpectralNormalization(tf_keras.layers.Dense(2), power_iterations=0)
    with pytest.raises(ValueError, match="epsilon"):
        SpectralNormalization(tf_keras.layers.Dense(2), epsilon=0.0)
    with pytest.raises(ValueError, match="Python bool"):
        SpectralNormalization(tf_keras.layers.Dense(2))(
            np.ones([1, 2]), training=tf.constant(True)
        )
    with pytest.raises(ValueError, match="has no `kernel`"):
        SpectralNormalization(tf_keras.layers.ReLU())(np.ones([1, 2]))


def _numpy_batch_norm(x, epsilon):
    mean = x.mean(axis=(0, 1, 2))
    variance = x.var(axis=(0, 1, 2))
    return (x - mean) / np.sqrt(variance + epsilon)


def test_conditional_batch_norm_matches_numpy():
    rng = np.random.RandomState(0)
    features = rng.randn(6, 4, 4, 3).astype(np.float32) * 2 + 1
    condition = rng.randn(6, 5).astype(np.float32)
    layer = ConditionalBatchNormalization(spectral_norm=False)

    outputs = layer((features, condition), training=True).numpy()

    gain = 1.0 + condition @ layer.gain_projection.kernel.numpy()
    bias = condition @ layer.bias_projection.kernel.numpy()
    expected = _numpy_batch_norm(features, 1e-4) * gain[:, None, None] + (
        bias[:, None, None]
    )
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)


def test_batch_statistics_are_global_across_replicas(mirrored_strategy):
    rng = np.random.RandomState(0)
    # Replica halves with very different statistics.
    features = np.concatenate(
        [rng.randn(4, 2, 2, 3), 5 + 3 * rng.randn(4, 2, 2, 3)]
    ).astype(np.float32)
    with mirrored_strategy.scope():
        layer = CrossReplicaBatchNormalization(center=False, scale=False)
        layer.build(features.shape)

    dataset = tf.data.Dataset.from_tensors(features)
    distributed = next(
        iter(mirrored_strategy.experimental_distribute_dataset(dataset))
    )
    results = mirrored_strategy.run(
        lambda x: layer(x, training=True), args=(distributed,)
    )
    outputs = np.concatenate(
        [
            t.numpy()
            for t in mirrored_strategy.experimental_local_results(results)
        ]
    )

    expected = _numpy_batch_norm(features, 1e-4)
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)


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
        b, h, w, c = values.shape
        return values.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))

    b, h, w, c = x.shape
    queries = conv(x, layer.query_conv).reshape(b, h * w, -1)
    keys = pool(conv(x, layer.key_conv)).reshape(b, -1, c // 8)
    values = pool(conv(x, layer.value_conv)).reshape(b, -1, c // 2)
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
    with pytest.raises(ValueError, match="too few"):
        SelfAttention()(np.ones([1, 4, 4, 4], np.float32))
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        SelfAttention()(np.ones([1, 4, 4], np.float32))


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
