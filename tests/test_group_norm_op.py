"""Tests for the fused group-normalization kernels and their dispatch.

`TfcvGroupNorm` / `TfcvGroupNormGrad` (tfcv_ops/cc/group_norm.cc) against
the pure-TensorFlow twin `group_norm_reference` and a NumPy reference of
Wu & He (2018), Eqs. 1, 2, 6 and 7: outputs, first and second gradients,
finite differences, the InvalidArgument messages, and the dispatch (XLA
and export use the twin, a library without the op warns once). Run against
a development build with `TFCV_OPS_LIBRARY=/path/to/_tfcv_ops.so`.
"""

import types

import numpy as np
import pytest
import tensorflow as tf

import tfcv_ops
from tfcv_ops import _loader

_LIBRARY = _loader.load_library()
_HAS_KERNEL = _LIBRARY is not None and hasattr(_LIBRARY, "tfcv_group_norm")
requires_kernel = pytest.mark.skipif(
    not _HAS_KERNEL,
    reason="custom-op library without tfcv_group_norm: rebuild it "
    "(pip install --no-build-isolation -e .) or set TFCV_OPS_LIBRARY",
)

DTYPES = [
    pytest.param(np.float32, 1e-5, id="float32"),
    pytest.param(np.float64, 1e-12, id="float64"),
]
# (B, N, C, G): B = 1, N = 1, G = 1 (layer norm), G = C (instance norm),
# C not a multiple of the vector width, several units per example, and
# units of several cache blocks (C = 1024: 32-row blocks of 35-row units).
SHAPES = [
    (2, 10, 12, 3),
    (1, 7, 8, 2),
    (3, 1, 12, 4),
    (2, 9, 16, 1),
    (2, 9, 16, 16),
    (3, 7, 13, 1),
    (2, 5, 6, 3),
    (2, 300, 64, 32),
    (1, 1100, 1024, 32),
]
EPSILON = 1e-5


def _relative_error(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    return np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-30)


def _numpy_group_norm(x, gamma, beta, groups, epsilon):
    """Eqs. 1, 2, 6, 7 in float64: one set per example and group."""
    x = np.asarray(x, np.float64)
    batch, positions, channels = x.shape
    # [B, N, C] -> [B, N, G, C/G]; Eq. 2 over N and C/G.
    grouped = x.reshape(batch, positions, groups, channels // groups)
    mean = grouped.mean(axis=(1, 3), keepdims=True)
    variance = ((grouped - mean) ** 2).mean(axis=(1, 3), keepdims=True)
    normalized = (grouped - mean) / np.sqrt(variance + epsilon)
    return normalized.reshape(x.shape) * gamma + beta


def _inputs(shape, dtype, seed=0, offset=2.0, scale=3.0):
    """x, γ, β and an upstream gradient for a `(B, N, C, G)` case."""
    batch, positions, channels, _ = shape
    rng = np.random.RandomState(seed)
    x = rng.randn(batch, positions, channels) * scale + offset
    gamma = rng.uniform(0.5, 1.5, channels)
    beta = rng.randn(channels)
    upstream = rng.randn(batch, positions, channels).astype(dtype)
    tensors = [tf.constant(value.astype(dtype)) for value in (x, gamma, beta)]
    return tensors, upstream


def _forward_and_gradients(tensors, upstream, groups, use_custom_op):
    """`group_norm` and `d(Σ y · upstream)/d(x, γ, β)`."""
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        outputs = tfcv_ops.group_norm(
            *tensors, groups, EPSILON, use_custom_op=use_custom_op
        )
        loss = tf.reduce_sum(outputs * upstream)
    return [outputs] + tape.gradient(loss, tensors)


@requires_kernel
@pytest.mark.parametrize("dtype, tolerance", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_kernel_matches_twin(shape, dtype, tolerance):
    tensors, upstream = _inputs(shape, dtype)
    groups = shape[-1]

    kernel = _forward_and_gradients(tensors, upstream, groups, True)
    twin = _forward_and_gradients(tensors, upstream, groups, False)

    for name, actual, expected in zip(["y", "dx", "dγ", "dβ"], kernel, twin):
        assert actual.dtype == dtype, name
        assert _relative_error(actual, expected) <= tolerance, name


@requires_kernel
@pytest.mark.parametrize("shape", [(2, 2048, 1024, 32), (2, 2048, 1028, 4)])
def test_streamed_outputs_match_twin(shape):
    # Outputs of 16 MB and more are written with non-temporal stores; C =
    # 1028 also ends every row with a half vector.
    tensors, upstream = _inputs(shape, np.float32, seed=7)

    kernel = _forward_and_gradients(tensors, upstream, shape[-1], True)
    twin = _forward_and_gradients(tensors, upstream, shape[-1], False)

    for name, actual, expected in zip(["y", "dx", "dγ", "dβ"], kernel, twin):
        assert _relative_error(actual, expected) <= 1e-5, name


@requires_kernel
@pytest.mark.parametrize("dtype, tolerance", DTYPES)
def test_kernel_matches_numpy_reference(dtype, tolerance):
    shape = (2, 40, 24, 6)
    tensors, _ = _inputs(shape, dtype)

    outputs = tfcv_ops.group_norm(*tensors, 6, EPSILON, use_custom_op=True)

    expected = _numpy_group_norm(*[t.numpy() for t in tensors], 6, EPSILON)
    assert _relative_error(outputs, expected) <= tolerance


@requires_kernel
@pytest.mark.parametrize("shape", [(2, 50, 64, 4), (1, 600, 256, 32)], ids=str)
def test_large_mean_keeps_float32_precision(shape):
    # |μ| ≈ 1e4 σ: E[x²] - μ² would lose every digit in float32, and the
    # float32 twin's x·s + (β - μ s) loses about four; the kernel is
    # checked against the twin run in float64 on the same float32 values.
    tensors, upstream = _inputs(shape, np.float32, offset=1e4, scale=1.0)
    tensors64 = [tf.cast(tensor, tf.float64) for tensor in tensors]
    groups = shape[-1]

    kernel = _forward_and_gradients(tensors, upstream, groups, True)
    exact = _forward_and_gradients(
        tensors64, upstream.astype(np.float64), groups, False
    )

    for name, actual, expected in zip(["y", "dx", "dγ", "dβ"], kernel, exact):
        assert _relative_error(actual, expected) <= 1e-5, name


@requires_kernel
@pytest.mark.parametrize("dtype, tolerance", DTYPES)
def test_single_value_sets(dtype, tolerance):
    # N = 1 and G = C: every set is one value, σ² = 0, x̂ = 0, so y = β,
    # dγ = 0, dβ = Σ dy and dx = 0 up to rounding of terms ~ γ dy / √ε.
    # (The twin's y = x·s + (β - μ s) rounds there; the kernel is exact.)
    tensors, upstream = _inputs((2, 1, 8, 8), dtype)

    outputs, dx, dgamma, dbeta = _forward_and_gradients(
        tensors, upstream, 8, True
    )

    np.testing.assert_array_equal(
        outputs, np.broadcast_to(tensors[2], [2, 1, 8])
    )
    np.testing.assert_array_equal(dgamma, np.zeros([8]))
    np.testing.assert_allclose(dbeta, upstream.sum(axis=(0, 1)), rtol=tolerance)
    term = np.abs(upstream * tensors[1].numpy()).max() / np.sqrt(EPSILON)
    assert np.abs(dx).max() <= tolerance * term


@requires_kernel
def test_gradients_match_finite_differences():
    tensors, _ = _inputs((2, 3, 4, 2), np.float64, seed=4)

    def normalize(x, gamma, beta):
        outputs = tfcv_ops.group_norm(
            x, gamma, beta, 2, EPSILON, use_custom_op=True
        )
        return outputs * tf.sin(outputs)

    theoretical, numerical = tf.test.compute_gradient(
        normalize, tensors, delta=1e-5
    )

    for analytic, finite in zip(theoretical, numerical):
        np.testing.assert_allclose(analytic, finite, atol=1e-8)


@requires_kernel
@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-10)])
def test_second_order_gradients_match_twin(dtype, tolerance):
    # A gradient penalty differentiates dx again (through TfcvGroupNormGrad).
    tensors, upstream = _inputs((2, 6, 12, 3), dtype, seed=5)

    def penalty_gradients(use_custom_op):
        with tf.GradientTape() as outer:
            outer.watch(tensors)
            with tf.GradientTape() as inner:
                inner.watch(tensors[0])
                outputs = tfcv_ops.group_norm(
                    *tensors, 3, EPSILON, use_custom_op=use_custom_op
                )
                loss = tf.reduce_sum(outputs * upstream)
            input_gradient = inner.gradient(loss, tensors[0])
            penalty = tf.reduce_sum(tf.square(input_gradient) * upstream)
        return outer.gradient(penalty, tensors[:2])

    kernel = penalty_gradients(True)
    twin = penalty_gradients(False)

    for actual, expected in zip(kernel, twin):
        assert _relative_error(actual, expected) <= tolerance


@requires_kernel
def test_kernel_is_deterministic():
    tensors, _ = _inputs((2, 500, 64, 8), np.float32, seed=6)

    first = tfcv_ops.group_norm(*tensors, 8, EPSILON, use_custom_op=True)
    second = tfcv_ops.group_norm(*tensors, 8, EPSILON, use_custom_op=True)

    np.testing.assert_array_equal(first.numpy(), second.numpy())


@requires_kernel
def test_jit_compile_uses_twin_and_matches():
    tensors, upstream = _inputs((2, 16, 12, 4), np.float32)

    def step(x, gamma, beta):
        return _forward_and_gradients([x, gamma, beta], upstream, 4, None)

    compiled = tf.function(step, jit_compile=True)
    graph_ops = {
        op.type
        for op in compiled.get_concrete_function(
            *tensors
        ).graph.get_operations()
    }
    actual = compiled(*tensors)
    expected = step(*tensors)

    assert not any(name.startswith("TfcvGroupNorm") for name in graph_ops)
    for value, reference in zip(actual, expected):
        assert _relative_error(value, reference) <= 1e-5


@requires_kernel
def test_graph_mode_uses_kernel():
    tensors, upstream = _inputs((2, 16, 12, 4), np.float32)

    traced = tf.function(
        lambda x, gamma, beta: _forward_and_gradients(
            [x, gamma, beta], upstream, 4, None
        )
    )
    graph = traced.get_concrete_function(*tensors).graph

    types_in_graph = {op.type for op in graph.get_operations()}
    assert {"TfcvGroupNorm", "TfcvGroupNormGrad"} <= types_in_graph


@requires_kernel
def test_custom_op_true_inside_xla_raises():
    tensors, _ = _inputs((1, 4, 4, 2), np.float32)

    compiled = tf.function(
        lambda x, gamma, beta: tfcv_ops.group_norm(
            x, gamma, beta, 2, EPSILON, use_custom_op=True
        ),
        jit_compile=True,
    )

    with pytest.raises(ValueError, match="inside an XLA-compiled function"):
        compiled(*tensors)


def test_saved_model_holds_only_stock_ops(tmp_path):
    tensors, _ = _inputs((2, 8, 12, 4), np.float32)
    module = tf.Module()
    module.normalize = tf.function(
        lambda x: tfcv_ops.group_norm(x, tensors[1], tensors[2], 4, EPSILON),
        input_signature=[tf.TensorSpec([None, None, 12], tf.float32)],
    )
    module.normalize(tensors[0])  # traced here with the kernel, if any

    tf.saved_model.save(module, str(tmp_path))
    saved = (tmp_path / "saved_model.pb").read_bytes()
    restored = tf.saved_model.load(str(tmp_path))

    assert b"TfcvGroupNorm" not in saved
    expected = tfcv_ops.group_norm_reference(*tensors, 4, EPSILON)
    actual = restored.normalize(tensors[0])
    assert _relative_error(actual, expected) <= 1e-5


def test_library_without_the_op_warns_once_and_uses_twin(monkeypatch):
    tensors, _ = _inputs((2, 8, 12, 4), np.float32)
    warnings = []
    monkeypatch.setattr(_loader, "load_library", types.SimpleNamespace)
    monkeypatch.setattr(_loader, "_missing_ops_warned", set())
    monkeypatch.setattr(
        _loader.logging,
        "warning",
        lambda message, *args: warnings.append(message % args),
    )

    first = tfcv_ops.group_norm(*tensors, 4, EPSILON)
    second = tfcv_ops.group_norm(*tensors, 4, EPSILON)

    assert len(warnings) == 1 and "tfcv_group_norm" in warnings[0]
    expected = tfcv_ops.group_norm_reference(*tensors, 4, EPSILON)
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, expected)
    with pytest.raises(ValueError, match="provides no `tfcv_group_norm`"):
        tfcv_ops.group_norm(*tensors, 4, EPSILON, use_custom_op=True)


# Bad inputs: the wrapper's ValueErrors and the kernels' InvalidArguments.


@pytest.mark.parametrize(
    "x, gamma, groups, match",
    [
        (tf.zeros([2, 4, 6], tf.int32), tf.ones([6]), 3, "float32 or float64"),
        (tf.zeros([2, 4, 6], tf.float16), tf.ones([6]), 3, "float32 or"),
        (tf.zeros([2, 2, 2, 6]), tf.ones([6]), 3, r"rank 3 \[B, N, C\]"),
        (tf.zeros([2, 4, 6]), tf.ones([6]), 4, "divides C = 6"),
        (tf.zeros([2, 4, 6]), tf.ones([6]), 0, "divides C = 6"),
        (tf.zeros([2, 4, 6]), tf.ones([6]), True, "divides C = 6"),
        (tf.zeros([2, 4, 6]), tf.ones([5]), 3, r"`gamma` must be .* \(6,\)"),
        (tf.zeros([2, 4, 6]), tf.ones([6], tf.float64), 3, "`gamma`"),
    ],
)
def test_wrapper_rejects_bad_input(x, gamma, groups, match):
    with pytest.raises(ValueError, match=match):
        tfcv_ops.group_norm(x, gamma, tf.zeros_like(gamma), groups, EPSILON)


@pytest.mark.parametrize("epsilon", [0.0, -1e-5, float("nan"), 1e-50, True])
def test_wrapper_rejects_bad_epsilon(epsilon):
    with pytest.raises(ValueError, match="`epsilon` must be a number > 0"):
        tfcv_ops.group_norm(
            tf.zeros([1, 2, 4]), tf.ones([4]), tf.zeros([4]), 2, epsilon
        )


def test_wrapper_rejects_bad_use_custom_op():
    with pytest.raises(ValueError, match="must be None, True or False"):
        tfcv_ops.group_norm(
            tf.zeros([1, 2, 4]),
            tf.ones([4]),
            tf.zeros([4]),
            2,
            EPSILON,
            use_custom_op="yes",
        )


@requires_kernel
@pytest.mark.parametrize(
    "x, gamma, beta, groups, match",
    [
        (np.zeros([2, 6]), np.ones([6]), np.zeros([6]), 3, "must be 3-D"),
        (np.zeros([2, 4, 6]), np.ones([6]), np.zeros([6]), 4, "multiple of"),
        (np.zeros([2, 4, 2]), np.ones([2]), np.zeros([2]), 3, "multiple of"),
        (np.zeros([2, 4, 6]), np.ones([5]), np.zeros([5]), 3, "gamma must"),
        (np.zeros([2, 4, 6]), np.ones([6]), np.zeros([3]), 3, "beta must"),
    ],
)
def test_forward_kernel_rejects_bad_input(x, gamma, beta, groups, match):
    x, gamma, beta = [np.asarray(v, np.float32) for v in (x, gamma, beta)]

    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        _LIBRARY.tfcv_group_norm(
            x=x, gamma=gamma, beta=beta, groups=groups, epsilon=EPSILON
        )


@requires_kernel
@pytest.mark.parametrize(
    "dy_shape, x_shape, statistics_shape, match",
    [
        ([2, 4, 6], [2, 4], [2, 3], "must be 3-D"),
        ([2, 5, 6], [2, 4, 6], [2, 3], "dy must have x's shape"),
        ([2, 4, 6], [2, 4, 6], [2, 2], r"mean and inv_std must be \[B, G\]"),
        ([2, 4, 6], [2, 4, 6], [1, 3], r"mean and inv_std must be \[B, G\]"),
    ],
)
def test_gradient_kernel_rejects_bad_input(
    dy_shape, x_shape, statistics_shape, match
):
    statistics = np.ones(statistics_shape, np.float64)

    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        _LIBRARY.tfcv_group_norm_grad(
            dy=np.zeros(dy_shape, np.float32),
            x=np.zeros(x_shape, np.float32),
            gamma=np.ones([6], np.float32),
            mean=statistics,
            inv_std=statistics,
            groups=3,
            epsilon=EPSILON,
        )


@requires_kernel
def test_shape_functions():
    forward = tf.function(
        lambda x, gamma, beta: _LIBRARY.tfcv_group_norm(
            x=x, gamma=gamma, beta=beta, groups=4, epsilon=EPSILON
        )
    )
    specs = [
        tf.TensorSpec([None, None, 12]),
        tf.TensorSpec([None]),
        tf.TensorSpec([12]),
    ]

    outputs = forward.get_concrete_function(*specs).structured_outputs

    assert [o.shape.as_list() for o in outputs] == [
        [None, None, 12],
        [None, 4],
        [None, 4],
    ]
    with pytest.raises(ValueError, match="multiple of groups = 4"):
        forward.get_concrete_function(
            tf.TensorSpec([2, 3, 6]), tf.TensorSpec([6]), tf.TensorSpec([6])
        )


@requires_kernel
def test_empty_inputs():
    tensors, _ = _inputs((0, 4, 6, 3), np.float32)
    empty_positions, _ = _inputs((2, 0, 6, 3), np.float32)

    outputs = _forward_and_gradients(
        tensors, np.zeros([0, 4, 6], np.float32), 3, True
    )
    no_positions = _forward_and_gradients(
        empty_positions, np.zeros([2, 0, 6], np.float32), 3, True
    )

    assert outputs[0].shape == (0, 4, 6)
    assert no_positions[0].shape == (2, 0, 6)
    for gradient in outputs[2:] + no_positions[2:]:
        np.testing.assert_array_equal(gradient, np.zeros([6]))
