"""Tests for `tfcv_ops`: the Wigner-d custom op, its twin and the loader."""

import math

import numpy as np
import pytest
import scipy.special
import tensorflow as tf

import tfcv_ops
from tfcv_ops import _loader
from tfcv_ops import wigner

requires_custom_op = pytest.mark.skipif(
    not tfcv_ops.custom_ops_available(),
    reason="custom-op library not built: pip install --no-build-isolation -e .",
)
PATHS = [
    pytest.param(True, id="custom_op", marks=requires_custom_op),
    pytest.param(False, id="reference"),
]


def _random_angles(count: int, seed: int = 0) -> np.ndarray:
    """Angles in [0, π] plus the poles, where sin(β/2) or cos(β/2) is 0."""
    rng = np.random.default_rng(seed)
    return np.concatenate([[0.0, np.pi], rng.uniform(0.0, np.pi, count)])


def _wigner_sum_formula(l: int, beta: float) -> np.ndarray:
    """d^l_{mn}(β) from Wigner's explicit sum over k (small l only)."""
    f = math.factorial
    cosine, sine = math.cos(beta / 2), math.sin(beta / 2)
    d = np.zeros([2 * l + 1, 2 * l + 1])
    for m in range(-l, l + 1):
        for n in range(-l, l + 1):
            norm = math.sqrt(f(l + m) * f(l - m) * f(l + n) * f(l - n))
            for k in range(max(0, n - m), min(l + n, l - m) + 1):
                sign = (-1) ** (m - n + k)
                powers = cosine ** (2 * l + n - m - 2 * k) * sine ** (
                    m - n + 2 * k
                )
                denominator = f(l + n - k) * f(k) * f(m - n + k) * f(l - m - k)
                d[m + l, n + l] += sign * norm * powers / denominator
    return d


def _blocks(wigner_d, l_max: int):
    """Unpacks `[J, P]` into the list of `[J, 2l+1, 2l+1]`, l = 0..l_max."""
    return [
        tfcv_ops.wigner_d_block(wigner_d, l).numpy() for l in range(l_max + 1)
    ]


@requires_custom_op
@pytest.mark.parametrize("l_max", [0, 1, 2, 7, 32])
def test_custom_op_matches_reference(l_max):
    beta = _random_angles(16, seed=l_max)

    custom = tfcv_ops.wigner_d_matrix(l_max, beta, use_custom_op=True)
    reference = tfcv_ops.wigner_d_matrix_reference(l_max, beta)

    assert custom.dtype == tf.float64
    assert custom.shape == (18, tfcv_ops.wigner_d_offset(l_max + 1))
    np.testing.assert_allclose(custom, reference, rtol=0, atol=1e-10)


@pytest.mark.parametrize("use_custom_op", PATHS)
def test_degree_one_matches_closed_form(use_custom_op):
    beta = _random_angles(8)
    cosine, sine = np.cos(beta), np.sin(beta) / np.sqrt(2.0)
    expected = np.stack(
        [
            np.stack([(1 + cosine) / 2, sine, (1 - cosine) / 2], -1),
            np.stack([-sine, cosine, sine], -1),
            np.stack([(1 - cosine) / 2, -sine, (1 + cosine) / 2], -1),
        ],
        axis=1,
    )  # [J, m, n], rows and columns m, n = -1, 0, 1

    wigner_d = tfcv_ops.wigner_d_matrix(1, beta, use_custom_op=use_custom_op)

    np.testing.assert_allclose(wigner_d[:, 0], 1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(
        tfcv_ops.wigner_d_block(wigner_d, 1), expected, rtol=0, atol=1e-14
    )


@pytest.mark.parametrize("use_custom_op", PATHS)
def test_matches_wigner_sum_formula(use_custom_op):
    beta = _random_angles(3, seed=1)
    l_max = 8

    blocks = _blocks(
        tfcv_ops.wigner_d_matrix(l_max, beta, use_custom_op=use_custom_op),
        l_max,
    )

    for l in range(l_max + 1):
        for j, angle in enumerate(beta):
            np.testing.assert_allclose(
                blocks[l][j], _wigner_sum_formula(l, angle), rtol=0, atol=1e-12
            )


@pytest.mark.parametrize("use_custom_op", PATHS)
def test_column_zero_matches_associated_legendre(use_custom_op):
    # d^l_{m0}(β) = √((l-m)!/(l+m)!) P_l^m(cos β), Condon-Shortley phase.
    beta = _random_angles(6, seed=2)
    l_max = 20

    blocks = _blocks(
        tfcv_ops.wigner_d_matrix(l_max, beta, use_custom_op=use_custom_op),
        l_max,
    )

    for l in range(l_max + 1):
        for m in range(l + 1):
            scale = math.sqrt(math.factorial(l - m) / math.factorial(l + m))
            expected = scale * scipy.special.lpmv(m, l, np.cos(beta))
            np.testing.assert_allclose(
                blocks[l][:, m + l, l], expected, rtol=0, atol=1e-11
            )


@pytest.fixture(scope="module", params=PATHS)
def degree_64(request):
    """`(beta [J], wigner_d [J, P])` for `l_max = 64`, once per path."""
    beta = _random_angles(4, seed=3)
    return (
        beta,
        tfcv_ops.wigner_d_matrix(64, beta, use_custom_op=request.param).numpy(),
    )


def test_centre_matches_legendre_up_to_degree_64(degree_64):
    # d^l_{00}(β) = P_l(cos β).
    beta, wigner_d = degree_64

    for l in range(65):
        centre = tfcv_ops.wigner_d_offset(l) + l * (2 * l + 1) + l
        expected = scipy.special.eval_legendre(l, np.cos(beta))
        np.testing.assert_allclose(
            wigner_d[:, centre], expected, rtol=0, atol=1e-12
        )


def test_orthogonal_up_to_degree_64(degree_64):
    _, wigner_d = degree_64

    blocks = _blocks(tf.constant(wigner_d), 64)

    for l, block in enumerate(blocks):
        # [J, 2l+1, 2l+1] x [J, 2l+1, 2l+1] -> [J, 2l+1, 2l+1]
        gram = np.einsum("jmk,jnk->jmn", block, block)
        np.testing.assert_allclose(
            gram, np.broadcast_to(np.eye(2 * l + 1), gram.shape), atol=1e-12
        )


@pytest.mark.parametrize("use_custom_op", PATHS)
def test_symmetries(use_custom_op):
    beta = _random_angles(5, seed=5)
    l_max = 10

    blocks = _blocks(
        tfcv_ops.wigner_d_matrix(l_max, beta, use_custom_op=use_custom_op),
        l_max,
    )
    negated = _blocks(
        tfcv_ops.wigner_d_matrix(l_max, -beta, use_custom_op=use_custom_op),
        l_max,
    )

    for l, block in enumerate(blocks):
        m = np.arange(-l, l + 1)
        sign = (-1.0) ** (m[:, None] - m[None, :])
        transposed = np.swapaxes(block, 1, 2)
        # d_{mn} = (-1)^(m-n) d_{nm} = d_{-n,-m}, and d(-β) = d(β)^T.
        np.testing.assert_allclose(block, sign * transposed, atol=1e-13)
        np.testing.assert_allclose(block, transposed[:, ::-1, ::-1], atol=1e-13)
        np.testing.assert_allclose(negated[l], transposed, atol=1e-13)


def test_layout_offsets():
    offsets = [tfcv_ops.wigner_d_offset(l) for l in range(5)]

    assert offsets == [0, 1, 10, 35, 84]
    assert tfcv_ops.wigner_d_matrix_reference(3, [0.5]).shape == (1, 84)


def test_block_reads_row_major_m_n():
    wigner_d = tf.range(35, dtype=tf.float64)[tf.newaxis, :]

    block = tfcv_ops.wigner_d_block(wigner_d, 2)

    assert block.shape == (1, 5, 5)
    np.testing.assert_array_equal(block[0, 0], [10, 11, 12, 13, 14])
    np.testing.assert_array_equal(block[0, :, 0], [10, 15, 20, 25, 30])


@pytest.mark.parametrize("use_custom_op", PATHS)
def test_empty_beta(use_custom_op):
    beta = np.zeros([0])

    wigner_d = tfcv_ops.wigner_d_matrix(3, beta, use_custom_op=use_custom_op)

    assert wigner_d.shape == (0, 84)


@pytest.mark.parametrize("use_custom_op", PATHS)
def test_accepts_python_sequences_and_variables(use_custom_op):
    expected = tfcv_ops.wigner_d_matrix_reference(2, np.array([0.1, 2.0]))

    from_list = tfcv_ops.wigner_d_matrix(
        2, [0.1, 2], use_custom_op=use_custom_op
    )
    from_variable = tfcv_ops.wigner_d_matrix(
        2,
        tf.Variable([0.1, 2.0], dtype=tf.float64),
        use_custom_op=use_custom_op,
    )

    np.testing.assert_allclose(from_list, expected, atol=1e-14)
    np.testing.assert_allclose(from_variable, expected, atol=1e-14)


@requires_custom_op
def test_custom_op_gradient_matches_reference_autodiff():
    beta = tf.constant(_random_angles(6, seed=6))
    l_max = 9
    rng = np.random.default_rng(7)
    weights = tf.constant(
        rng.normal(size=(8, tfcv_ops.wigner_d_offset(l_max + 1)))
    )

    with tf.GradientTape(persistent=True) as tape:
        tape.watch(beta)
        custom = tfcv_ops.wigner_d_matrix(l_max, beta, use_custom_op=True)
        reference = tfcv_ops.wigner_d_matrix_reference(l_max, beta)
        custom_loss = tf.reduce_sum(custom * weights)
        reference_loss = tf.reduce_sum(reference * weights)
    custom_gradient = tape.gradient(custom_loss, beta)
    reference_gradient = tape.gradient(reference_loss, beta)

    np.testing.assert_allclose(
        custom_gradient, reference_gradient, rtol=1e-10, atol=1e-10
    )


def test_reference_gradient_matches_finite_differences():
    beta = _random_angles(4, seed=8)[2:]
    l_max = 4
    step = 1e-6

    with tf.GradientTape() as tape:
        beta_tensor = tf.constant(beta)
        tape.watch(beta_tensor)
        total = tf.reduce_sum(
            tfcv_ops.wigner_d_matrix_reference(l_max, beta_tensor)
        )
    gradient = tape.gradient(total, beta_tensor)
    plus = tfcv_ops.wigner_d_matrix_reference(l_max, beta + step)
    minus = tfcv_ops.wigner_d_matrix_reference(l_max, beta - step)
    finite_difference = tf.reduce_sum(plus - minus, axis=1) / (2 * step)

    np.testing.assert_allclose(gradient, finite_difference, atol=1e-6)


def _op_types(function, *args):
    """Op types in the graph that `function` traces for `args`."""
    graph = function.get_concrete_function(*args).graph
    return {op.type for op in graph.get_operations()}


@requires_custom_op
def test_dispatch_in_graphs():
    beta = tf.constant(_random_angles(3))

    default = tf.function(lambda b: tfcv_ops.wigner_d_matrix(3, b))
    pure = tf.function(
        lambda b: tfcv_ops.wigner_d_matrix(3, b, use_custom_op=False)
    )

    assert "TfcvWignerDMatrix" in _op_types(default, beta)
    assert "TfcvWignerDMatrix" not in _op_types(pure, beta)
    np.testing.assert_allclose(default(beta), pure(beta), atol=1e-13)


def test_xla_uses_reference():
    beta = tf.constant(_random_angles(3))
    compiled = tf.function(
        lambda b: tfcv_ops.wigner_d_matrix(2, b), jit_compile=True
    )

    result = compiled(beta)

    assert "TfcvWignerDMatrix" not in _op_types(compiled, beta)
    np.testing.assert_allclose(
        result, tfcv_ops.wigner_d_matrix_reference(2, beta), atol=1e-13
    )


@requires_custom_op
def test_custom_op_inside_xla_raises():
    compiled = tf.function(
        lambda b: tfcv_ops.wigner_d_matrix(2, b, use_custom_op=True),
        jit_compile=True,
    )

    with pytest.raises(ValueError, match="no XLA kernel"):
        compiled(tf.constant([0.5], dtype=tf.float64))


@pytest.mark.parametrize("l_max", [-1, 2.0, True, "3", None])
@pytest.mark.parametrize(
    "function",
    [tfcv_ops.wigner_d_matrix, tfcv_ops.wigner_d_matrix_reference],
)
def test_bad_l_max_raises(function, l_max):
    with pytest.raises(ValueError, match="`l_max` must be a non-negative"):
        function(l_max, [0.5])


# Tensors are made inside the tests (factories here): TensorFlow must not run
# ops at collection time, before conftest configures the devices.
@pytest.mark.parametrize(
    "make_beta",
    [
        lambda: 0.5,
        lambda: np.zeros([2, 3]),
        lambda: tf.zeros([1, 1, 1], tf.float64),
    ],
    ids=["scalar", "array_2d", "tensor_3d"],
)
@pytest.mark.parametrize(
    "function",
    [tfcv_ops.wigner_d_matrix, tfcv_ops.wigner_d_matrix_reference],
)
def test_beta_not_1d_raises(function, make_beta):
    beta = make_beta()

    with pytest.raises(ValueError, match=r"`beta` must be 1-D \[J\]"):
        function(2, beta)


@pytest.mark.parametrize(
    "make_beta",
    [
        lambda: tf.constant([0.5], tf.float32),
        lambda: np.array([0.5], np.float32),
        lambda: np.array([1], np.int64),
        lambda: tf.Variable([0.5], dtype=tf.float32),
    ],
    ids=["tensor_float32", "array_float32", "array_int64", "variable"],
)
@pytest.mark.parametrize(
    "function",
    [tfcv_ops.wigner_d_matrix, tfcv_ops.wigner_d_matrix_reference],
)
def test_beta_wrong_dtype_raises(function, make_beta):
    beta = make_beta()

    with pytest.raises(ValueError, match="`beta` must be float64"):
        function(2, beta)


def test_bad_use_custom_op_raises():
    with pytest.raises(ValueError, match="`use_custom_op` must be None"):
        tfcv_ops.wigner_d_matrix(2, [0.5], use_custom_op="yes")


def test_offset_bad_degree_raises():
    with pytest.raises(ValueError, match="`l` must be a non-negative"):
        tfcv_ops.wigner_d_offset(-1)


def test_block_degree_too_large_raises():
    wigner_d = tfcv_ops.wigner_d_matrix_reference(2, [0.5])

    with pytest.raises(ValueError, match=r"degrees up to 2\)"):
        tfcv_ops.wigner_d_block(wigner_d, 3)


@requires_custom_op
def test_raw_op_rejects_bad_input():
    library = _loader.load_library()

    with pytest.raises(tf.errors.InvalidArgumentError, match="must be 1-D"):
        library.tfcv_wigner_d_matrix(beta=np.zeros([2, 2]), l_max=1)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
        library.tfcv_wigner_d_matrix(beta=np.zeros([2]), l_max=-1)


@requires_custom_op
def test_raw_op_shape_function():
    library = _loader.load_library()
    traced = tf.function(
        lambda b: library.tfcv_wigner_d_matrix(beta=b, l_max=3)
    )

    concrete = traced.get_concrete_function(tf.TensorSpec([None], tf.float64))

    assert concrete.output_shapes.as_list() == [None, 84]
    with pytest.raises(ValueError, match="must be rank 1"):
        traced.get_concrete_function(tf.TensorSpec([2, 2], tf.float64))


@pytest.fixture
def fresh_loader(monkeypatch):
    """Forgets any earlier load attempt; restores it after the test."""
    for key in ("attempted", "library", "error"):
        monkeypatch.setitem(_loader._state, key, _loader._state[key])
    monkeypatch.setitem(_loader._state, "attempted", False)
    warnings = []
    monkeypatch.setattr(
        _loader.logging,
        "warning",
        lambda message, *args: warnings.append(message % args),
    )
    return warnings


def test_fallback_when_library_missing(fresh_loader, monkeypatch, tmp_path):
    monkeypatch.setattr(_loader, "LIBRARY_PATH", str(tmp_path / "absent.so"))
    beta = _random_angles(4)

    first = tfcv_ops.wigner_d_matrix(3, beta)
    second = tfcv_ops.wigner_d_matrix(3, beta)
    available = tfcv_ops.custom_ops_available()

    assert not available
    assert len(fresh_loader) == 1
    assert "absent.so does not exist" in fresh_loader[0]
    expected = tfcv_ops.wigner_d_matrix_reference(3, beta)
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, expected)


def test_fallback_when_library_broken(fresh_loader, monkeypatch, tmp_path):
    # A library that does not load, like one built for another TensorFlow.
    broken = tmp_path / "_tfcv_ops.so"
    broken.write_bytes(b"\x7fELF not really a shared object")
    monkeypatch.setattr(_loader, "LIBRARY_PATH", str(broken))

    result = tfcv_ops.wigner_d_matrix(2, [0.5])
    tfcv_ops.wigner_d_matrix(2, [0.5])

    assert len(fresh_loader) == 1
    assert "failed to load" in fresh_loader[0]
    np.testing.assert_array_equal(
        result, tfcv_ops.wigner_d_matrix_reference(2, [0.5])
    )


def test_use_custom_op_true_without_library_raises(
    fresh_loader, monkeypatch, tmp_path
):
    monkeypatch.setattr(_loader, "LIBRARY_PATH", str(tmp_path / "absent.so"))

    with pytest.raises(ValueError, match="library is not available"):
        tfcv_ops.wigner_d_matrix(2, [0.5], use_custom_op=True)


def test_use_custom_op_false_does_not_load(fresh_loader):
    tfcv_ops.wigner_d_matrix(2, [0.5], use_custom_op=False)

    assert not _loader._state["attempted"]
    assert not fresh_loader


def test_max_degree_of_packed_size():
    sizes = [tfcv_ops.wigner_d_offset(l + 1) for l in range(6)]

    assert [wigner._max_degree(size) for size in sizes] == list(range(6))


@pytest.mark.parametrize("use_custom_op", PATHS)
def test_wigner_tables_are_orthogonal_up_to_degree_127(use_custom_op):
    beta = np.array([0.3, 1.7, np.pi - 1e-3])

    wigner_d = tfcv_ops.wigner_d_matrix(127, beta, use_custom_op=use_custom_op)

    worst = 0.0
    for l in range(128):
        block = tfcv_ops.wigner_d_block(wigner_d, l).numpy()  # [3, 2l+1, 2l+1]
        # [3, 2l+1, 2l+1] x [3, 2l+1, 2l+1]^T -> [3, 2l+1, 2l+1]
        gram = block @ np.swapaxes(block, -1, -2)
        worst = max(worst, np.abs(gram - np.eye(2 * l + 1)).max())
    assert worst <= 1e-12


@pytest.mark.parametrize("device", ["/cpu:0", "/cpu:1", "/device:CPU:1"])
def test_spherical_ops_run_on_any_device_name(device):
    grid = np.random.default_rng(0).normal(size=(2, 8, 8, 8))
    expected = tfcv_ops.so3_fft(grid).numpy()

    with tf.device(device):
        spectrum = tfcv_ops.so3_fft(grid)
        product = tfcv_ops.so3_mm(spectrum[:, None], spectrum[None, :])
        back = tfcv_ops.so3_ifft(product, real_output=True)

    np.testing.assert_allclose(spectrum.numpy(), expected, atol=1e-12)
    assert back.shape == (2, 2, 8, 8, 8)
