"""Tests for the C++ β-stage and spectral-product kernels of Spherical CNNs.

Each op is checked against a short NumPy reference of its formula (see
`tfcv_ops/spherical_kernels.py`), contract against expand for adjointness,
the registered gradients against `tf.GradientTape` through an einsum twin and
against finite differences, and every InvalidArgument message. Run against
a development build with `TFCV_OPS_LIBRARY=/path/to/_tfcv_ops.so`.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfcv_ops import _loader
from tfcv_ops import spherical_kernels

_LIBRARY = _loader.load_library()
pytestmark = pytest.mark.skipif(
    _LIBRARY is None or not hasattr(_LIBRARY, "tfcv_so3_contract"),
    reason="custom-op library without the spherical ops: rebuild it "
    "(pip install --no-build-isolation -e .) or set TFCV_OPS_LIBRARY",
)

DTYPES = [
    pytest.param(np.complex64, np.float32, 2e-5, id="complex64"),
    pytest.param(np.complex128, np.float64, 1e-12, id="complex128"),
]
# (J, N, bandwidth): b = N/2, odd b < N/2, b = 1, J != N.
GRIDS = [(6, 6, 3), (10, 10, 3), (5, 8, 1), (7, 12, 5), (4, 8, 4)]
InvalidArgument = tf.errors.InvalidArgumentError


def _indices(bandwidth: int, so3: bool):
    """Packed order of `(l, m, n)` (SO(3)) or `(l, m, 0)` (S²) as arrays."""
    rows = [
        (l, m, n)
        for l in range(bandwidth)
        for m in range(-l, l + 1)
        for n in (range(-l, l + 1) if so3 else [0])
    ]
    return np.array(rows, dtype=np.int64).reshape(-1, 3).T


def _contract_reference(x, table, bandwidth, so3):
    """y[b, p] = Σ_j T[j, p] x[b, j, m mod N(, n mod N)]."""
    _, m, n = _indices(bandwidth, so3)
    size = x.shape[-1]
    gathered = x[:, :, m % size, n % size] if so3 else x[:, :, m % size]
    return np.einsum("jp,bjp->bp", table, gathered)


def _expand_reference(y, table, grid_size, so3):
    """x[b, j, m mod N(, n mod N)] += T[j, p] y[b, p]; zero elsewhere."""
    bandwidth = int(round(np.sqrt(y.shape[1]))) if not so3 else None
    if so3:
        bandwidth = next(
            b for b in range(65) if b * (4 * b * b - 1) // 3 == y.shape[1]
        )
    _, m, n = _indices(bandwidth, so3)
    grid = (grid_size, grid_size) if so3 else (grid_size,)
    x = np.zeros((y.shape[0], table.shape[0]) + grid, y.dtype)
    terms = np.einsum("jp,bp->pbj", table, y)
    where = (m % grid_size, n % grid_size) if so3 else (m % grid_size,)
    np.add.at(np.moveaxis(x, (0, 1), (-2, -1)), where, terms)
    return x


def _mm_reference(x, y, so3):
    """S²: Σ_c x[l,m] conj(y[l,n]); SO(3): Σ_{c,k} x[l,m,k] conj(y[l,n,k])."""
    blocks = []
    bandwidth = next(
        b
        for b in range(65)
        if (b * (4 * b * b - 1) // 3 if so3 else b * b) == x.shape[-1]
    )
    for l in range(bandwidth):
        side = 2 * l + 1
        if so3:
            start = l * (4 * l * l - 1) // 3
            x_l = x[..., start : start + side * side].reshape(
                x.shape[:2] + (side, side)
            )
            y_l = y[..., start : start + side * side].reshape(
                y.shape[:2] + (side, side)
            )
            z_l = np.einsum("bcmk,conk->bomn", x_l, np.conj(y_l))
        else:
            x_l, y_l = (
                x[..., l * l : (l + 1) ** 2],
                y[..., l * l : (l + 1) ** 2],
            )
            z_l = np.einsum("bcm,con->bomn", x_l, np.conj(y_l))
        blocks.append(z_l.reshape(z_l.shape[:2] + (side * side,)))
    return np.concatenate(blocks, axis=-1)


def _random_complex(rng, shape, dtype):
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(dtype)


def _packed_size(bandwidth, so3):
    return bandwidth * (4 * bandwidth**2 - 1) // 3 if so3 else bandwidth**2


def _grid_shape(batch, rows, grid_size, so3):
    return (
        (batch, rows, grid_size, grid_size) if so3 else (batch, rows, grid_size)
    )


def _contract(so3):
    return (
        spherical_kernels.so3_contract if so3 else spherical_kernels.s2_contract
    )


def _expand(so3):
    return spherical_kernels.so3_expand if so3 else spherical_kernels.s2_expand


@pytest.mark.parametrize("so3", [True, False], ids=["so3", "s2"])
@pytest.mark.parametrize("rows,grid_size,bandwidth", GRIDS)
@pytest.mark.parametrize("dtype,real_dtype,tolerance", DTYPES)
def test_contract_and_expand_match_numpy(
    so3, rows, grid_size, bandwidth, dtype, real_dtype, tolerance
):
    rng = np.random.default_rng(rows * 100 + grid_size + bandwidth)
    packed = _packed_size(bandwidth, so3)
    x = _random_complex(rng, _grid_shape(3, rows, grid_size, so3), dtype)
    y = _random_complex(rng, (3, packed), dtype)
    table = rng.normal(size=(rows, packed)).astype(real_dtype)

    contracted = _contract(so3)(x, table, bandwidth).numpy()
    expanded = _expand(so3)(y, table, grid_size).numpy()

    want_y = _contract_reference(x, table, bandwidth, so3)
    want_x = _expand_reference(y, table, grid_size, so3)
    assert contracted.dtype == dtype and expanded.dtype == dtype
    np.testing.assert_allclose(
        contracted, want_y, rtol=tolerance, atol=tolerance * 10
    )
    np.testing.assert_allclose(
        expanded, want_x, rtol=tolerance, atol=tolerance * 10
    )


@pytest.mark.parametrize("so3", [True, False], ids=["so3", "s2"])
def test_large_batch_uses_several_tiles(so3):
    rng = np.random.default_rng(7)
    rows, grid_size, bandwidth = 4, 6, 3
    packed = _packed_size(bandwidth, so3)
    x = _random_complex(
        rng, _grid_shape(150, rows, grid_size, so3), np.complex128
    )
    table = rng.normal(size=(rows, packed))

    contracted = _contract(so3)(x, table, bandwidth).numpy()

    np.testing.assert_allclose(
        contracted, _contract_reference(x, table, bandwidth, so3), atol=1e-12
    )


@pytest.mark.parametrize("so3", [True, False], ids=["so3", "s2"])
@pytest.mark.parametrize("dtype,real_dtype,tolerance", DTYPES)
def test_expand_is_adjoint_of_contract(so3, dtype, real_dtype, tolerance):
    rng = np.random.default_rng(3)
    rows, grid_size, bandwidth = 9, 10, 4
    packed = _packed_size(bandwidth, so3)
    x = _random_complex(rng, _grid_shape(2, rows, grid_size, so3), dtype)
    y = _random_complex(rng, (2, packed), dtype)
    table = rng.normal(size=(rows, packed)).astype(real_dtype)

    contract_x = _contract(so3)(x, table, bandwidth).numpy()
    expand_y = _expand(so3)(y, table, grid_size).numpy()

    # <contract x, y> = <x, expand y> (np.vdot conjugates its first argument).
    left = np.vdot(contract_x, y)
    right = np.vdot(x, expand_y)
    assert abs(left - right) <= tolerance * 10 * abs(left)


def _selection_matrix(bandwidth, grid_size, so3):
    """S[q, p] = 1 where packed p sits at flattened grid frequency q."""
    _, m, n = _indices(bandwidth, so3)
    flat = (m % grid_size) * grid_size + n % grid_size if so3 else m % grid_size
    selection = np.zeros((grid_size ** (2 if so3 else 1), len(m)))
    selection[flat, np.arange(len(m))] = 1.0
    return tf.constant(selection, tf.complex128)


def _twin_contract(x, table, bandwidth, so3):
    """Einsum twin: y[b, p] = Σ_{j,q} x[b, j, q] S[q, p] T[j, p]."""
    grid_size = x.shape[-1]
    x_flat = tf.reshape(x, [x.shape[0], x.shape[1], -1])  # [B, J, N^k]
    selection = _selection_matrix(bandwidth, grid_size, so3)
    table = tf.cast(table, tf.complex128)
    return tf.einsum("bjq,qp,jp->bp", x_flat, selection, table)


def _twin_expand(y, table, grid_size, so3):
    """Einsum twin: x[b, j, q] = Σ_p S[q, p] T[j, p] y[b, p]."""
    bandwidth = int(round(np.sqrt(y.shape[1])))
    if so3:
        bandwidth = next(
            b for b in range(65) if _packed_size(b, True) == y.shape[1]
        )
    selection = _selection_matrix(bandwidth, grid_size, so3)
    x_flat = tf.einsum(
        "bp,qp,jp->bjq", y, selection, tf.cast(table, tf.complex128)
    )
    return tf.reshape(
        x_flat, _grid_shape(y.shape[0], table.shape[0], grid_size, so3)
    )


@pytest.mark.parametrize("so3", [True, False], ids=["so3", "s2"])
def test_gradients_match_einsum_twin(so3):
    rng = np.random.default_rng(11)
    rows, grid_size, bandwidth = 8, 8, 4
    packed = _packed_size(bandwidth, so3)
    x = tf.constant(
        _random_complex(
            rng, _grid_shape(2, rows, grid_size, so3), np.complex128
        )
    )
    y = tf.constant(_random_complex(rng, (2, packed), np.complex128))
    table = tf.constant(rng.normal(size=(rows, packed)))
    weights_y = tf.constant(_random_complex(rng, (2, packed), np.complex128))
    weights_x = tf.constant(_random_complex(rng, x.shape, np.complex128))

    def losses(contract, expand):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([x, y, table])
            loss_c = tf.reduce_sum(tf.abs(contract(x) * weights_y) ** 2)
            loss_e = tf.reduce_sum(tf.math.real(expand(y) * weights_x))
        grads = tape.gradient(loss_c, [x, table]) + tape.gradient(
            loss_e, [y, table]
        )
        return grads

    got = losses(
        lambda x: _contract(so3)(x, table, bandwidth),
        lambda y: _expand(so3)(y, table, grid_size),
    )
    want = losses(
        lambda x: _twin_contract(x, table, bandwidth, so3),
        lambda y: _twin_expand(y, table, grid_size, so3),
    )

    np.testing.assert_allclose(got[0].numpy(), want[0].numpy(), atol=1e-10)
    np.testing.assert_allclose(got[2].numpy(), want[2].numpy(), atol=1e-10)
    assert got[1] is None and got[3] is None  # no gradient for the table


@pytest.mark.parametrize("so3", [True, False], ids=["so3", "s2"])
def test_gradients_match_finite_differences(so3):
    rng = np.random.default_rng(5)
    rows, grid_size, bandwidth = 4, 8, 3
    packed = _packed_size(bandwidth, so3)
    x = tf.constant(
        _random_complex(
            rng, _grid_shape(1, rows, grid_size, so3), np.complex128
        )
    )
    y = tf.constant(_random_complex(rng, (1, packed), np.complex128))
    table = tf.constant(rng.normal(size=(rows, packed)))

    jacobians = [
        tf.test.compute_gradient(
            lambda x: _contract(so3)(x, table, bandwidth), [x]
        ),
        tf.test.compute_gradient(
            lambda y: _expand(so3)(y, table, grid_size), [y]
        ),
    ]

    for theoretical, numerical in jacobians:
        np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-7)


@pytest.mark.parametrize("so3", [True, False], ids=["so3", "s2"])
@pytest.mark.parametrize("bandwidth", [1, 2, 5])
@pytest.mark.parametrize("dtype,real_dtype,tolerance", DTYPES)
def test_mm_matches_numpy(so3, bandwidth, dtype, real_dtype, tolerance):
    rng = np.random.default_rng(bandwidth)
    packed = _packed_size(bandwidth, so3)
    x = _random_complex(rng, (3, 4, packed), dtype)
    y = _random_complex(rng, (4, 2, packed), dtype)

    function = spherical_kernels.so3_mm if so3 else spherical_kernels.s2_mm
    z = function(x, y).numpy()

    assert z.shape == (3, 2, _packed_size(bandwidth, True))
    np.testing.assert_allclose(
        z, _mm_reference(x, y, so3), rtol=tolerance, atol=tolerance * 10
    )


def _twin_mm(x, y, so3):
    """Einsum/conj twin of s2_mm / so3_mm, per degree."""
    bandwidth = next(
        b for b in range(65) if _packed_size(b, so3) == x.shape[-1]
    )
    blocks = []
    for l in range(bandwidth):
        side = 2 * l + 1
        if so3:
            start = _packed_size(l, True)
            x_l = tf.reshape(
                x[..., start : start + side**2], x.shape[:2] + (side, side)
            )
            y_l = tf.reshape(
                y[..., start : start + side**2], y.shape[:2] + (side, side)
            )
            z_l = tf.einsum("bcmk,conk->bomn", x_l, tf.math.conj(y_l))
        else:
            x_l, y_l = (
                x[..., l * l : (l + 1) ** 2],
                y[..., l * l : (l + 1) ** 2],
            )
            z_l = tf.einsum("bcm,con->bomn", x_l, tf.math.conj(y_l))
        blocks.append(tf.reshape(z_l, z_l.shape[:2] + (side * side,)))
    return tf.concat(blocks, axis=-1)


@pytest.mark.parametrize("so3", [True, False], ids=["so3", "s2"])
def test_mm_gradients_match_einsum_twin_and_finite_differences(so3):
    rng = np.random.default_rng(13)
    packed = _packed_size(4, so3)
    x = tf.constant(_random_complex(rng, (2, 3, packed), np.complex128))
    y = tf.constant(_random_complex(rng, (3, 2, packed), np.complex128))
    weights = tf.constant(
        _random_complex(rng, (2, 2, _packed_size(4, True)), np.complex128)
    )
    function = spherical_kernels.so3_mm if so3 else spherical_kernels.s2_mm

    def gradients(mm):
        with tf.GradientTape() as tape:
            tape.watch([x, y])
            loss = tf.reduce_sum(tf.abs(mm(x, y) * weights) ** 2)
        return tape.gradient(loss, [x, y])

    got = gradients(function)
    want = gradients(lambda x, y: _twin_mm(x, y, so3))
    small_x, small_y = (
        x[:1, :2, : _packed_size(2, so3)],
        y[:2, :1, : _packed_size(2, so3)],
    )
    theoretical, numerical = tf.test.compute_gradient(
        function, [small_x, small_y]
    )

    for got_grad, want_grad in zip(got, want):
        np.testing.assert_allclose(
            got_grad.numpy(), want_grad.numpy(), atol=1e-9
        )
    for theory, number in zip(theoretical, numerical):
        np.testing.assert_allclose(theory, number, atol=1e-7)


def _call(op_name, *inputs, **attrs):
    """Calls a raw op of the library eagerly."""
    return getattr(_LIBRARY, op_name)(*inputs, **attrs)


C64, F32 = np.complex64, np.float32
BAD_INPUTS = [
    # SO(3) contract: x [B, J, N, N], table [J, P(b)].
    (
        "tfcv_so3_contract",
        (np.zeros((1, 4, 4), C64), np.zeros((4, 10), F32)),
        {"bandwidth": 2},
        "x must be 4-D",
    ),
    (
        "tfcv_so3_contract",
        (np.zeros((1, 4, 4, 6), C64), np.zeros((4, 10), F32)),
        {"bandwidth": 2},
        "square",
    ),
    (
        "tfcv_so3_contract",
        (np.zeros((1, 4, 5, 5), C64), np.zeros((4, 10), F32)),
        {"bandwidth": 2},
        "must be even",
    ),
    (
        "tfcv_so3_contract",
        (np.zeros((1, 4, 4, 4), C64), np.zeros((4, 35), F32)),
        {"bandwidth": 3},
        r"at most N/2 = 2",
    ),
    (
        "tfcv_so3_contract",
        (np.zeros((1, 4, 4, 4), C64), np.zeros((40,), F32)),
        {"bandwidth": 2},
        "table must be 2-D",
    ),
    (
        "tfcv_so3_contract",
        (np.zeros((1, 4, 4, 4), C64), np.zeros((3, 10), F32)),
        {"bandwidth": 2},
        "table has J = 3 rows but the signal has J = 4",
    ),
    (
        "tfcv_so3_contract",
        (np.zeros((1, 4, 4, 4), C64), np.zeros((4, 9), F32)),
        {"bandwidth": 2},
        r"table must have P\(bandwidth\).* = 10 columns",
    ),
    # SO(3) expand: y [B, P], table [J, P], grid_size N.
    (
        "tfcv_so3_expand",
        (np.zeros((10,), C64), np.zeros((4, 10), F32)),
        {"grid_size": 4},
        "y must be 2-D",
    ),
    (
        "tfcv_so3_expand",
        (np.zeros((1, 11), C64), np.zeros((4, 11), F32)),
        {"grid_size": 4},
        r"packed SO\(3\) size",
    ),
    (
        "tfcv_so3_expand",
        (np.zeros((1, 10), C64), np.zeros((4, 10), F32)),
        {"grid_size": 5},
        "must be even",
    ),
    (
        "tfcv_so3_expand",
        (np.zeros((1, 35), C64), np.zeros((4, 35), F32)),
        {"grid_size": 4},
        "at most N/2 = 2",
    ),
    (
        "tfcv_so3_expand",
        (np.zeros((1, 10), C64), np.zeros((40,), F32)),
        {"grid_size": 4},
        "table must be 2-D",
    ),
    (
        "tfcv_so3_expand",
        (np.zeros((1, 10), C64), np.zeros((4, 35), F32)),
        {"grid_size": 4},
        r"table must have P = y.shape\[1\] = 10",
    ),
    # S² contract: x [B, J, N], table [J, b²].
    (
        "tfcv_s2_contract",
        (np.zeros((1, 4), C64), np.zeros((4, 4), F32)),
        {"bandwidth": 2},
        "x must be 3-D",
    ),
    (
        "tfcv_s2_contract",
        (np.zeros((1, 4, 5), C64), np.zeros((4, 4), F32)),
        {"bandwidth": 2},
        "must be even",
    ),
    (
        "tfcv_s2_contract",
        (np.zeros((1, 4, 4), C64), np.zeros((4, 9), F32)),
        {"bandwidth": 3},
        "at most N/2 = 2",
    ),
    (
        "tfcv_s2_contract",
        (np.zeros((1, 4, 4), C64), np.zeros((16,), F32)),
        {"bandwidth": 2},
        "table must be 2-D",
    ),
    (
        "tfcv_s2_contract",
        (np.zeros((1, 4, 4), C64), np.zeros((5, 4), F32)),
        {"bandwidth": 2},
        "table has J = 5",
    ),
    (
        "tfcv_s2_contract",
        (np.zeros((1, 4, 4), C64), np.zeros((4, 5), F32)),
        {"bandwidth": 2},
        r"bandwidth\^2 for bandwidth 2 = 4",
    ),
    # S² expand: y [B, b²], table [J, b²], grid_size N.
    (
        "tfcv_s2_expand",
        (np.zeros((4,), C64), np.zeros((4, 4), F32)),
        {"grid_size": 4},
        "y must be 2-D",
    ),
    (
        "tfcv_s2_expand",
        (np.zeros((1, 5), C64), np.zeros((4, 5), F32)),
        {"grid_size": 4},
        "perfect square",
    ),
    (
        "tfcv_s2_expand",
        (np.zeros((1, 4), C64), np.zeros((4, 4), F32)),
        {"grid_size": 3},
        "must be even",
    ),
    (
        "tfcv_s2_expand",
        (np.zeros((1, 9), C64), np.zeros((4, 9), F32)),
        {"grid_size": 4},
        "at most N/2 = 2",
    ),
    (
        "tfcv_s2_expand",
        (np.zeros((1, 4), C64), np.zeros((16,), F32)),
        {"grid_size": 4},
        "table must be 2-D",
    ),
    (
        "tfcv_s2_expand",
        (np.zeros((1, 4), C64), np.zeros((4, 9), F32)),
        {"grid_size": 4},
        r"b\^2 = y.shape\[1\] = 4",
    ),
    # Spectral products: x [B, C, S], y [C, C', S].
    (
        "tfcv_s2_mm",
        (np.zeros((2, 4), C64), np.zeros((2, 3, 4), C64)),
        {},
        "x must be 3-D",
    ),
    (
        "tfcv_s2_mm",
        (np.zeros((1, 2, 4), C64), np.zeros((2, 4), C64)),
        {},
        "y must be 3-D",
    ),
    (
        "tfcv_s2_mm",
        (np.zeros((1, 2, 4), C64), np.zeros((3, 1, 4), C64)),
        {},
        "input channels",
    ),
    (
        "tfcv_s2_mm",
        (np.zeros((1, 2, 4), C64), np.zeros((2, 1, 9), C64)),
        {},
        "same spectrum size",
    ),
    (
        "tfcv_s2_mm",
        (np.zeros((1, 2, 5), C64), np.zeros((2, 1, 5), C64)),
        {},
        "perfect square",
    ),
    (
        "tfcv_so3_mm",
        (np.zeros((1, 2, 11), C64), np.zeros((2, 1, 11), C64)),
        {},
        r"packed SO\(3\) size",
    ),
    (
        "tfcv_so3_mm",
        (np.zeros((1, 2, 10), C64), np.zeros((3, 1, 10), C64)),
        {},
        "input channels",
    ),
]


@pytest.mark.parametrize(
    "op_name,inputs,attrs,message",
    BAD_INPUTS,
    ids=[f"{case[0]}-{index}" for index, case in enumerate(BAD_INPUTS)],
)
def test_bad_input_raises_invalid_argument(op_name, inputs, attrs, message):
    with pytest.raises(InvalidArgument, match=message):
        _call(op_name, *inputs, **attrs)


def test_shape_function_rejects_bad_static_shapes_in_graphs():
    @tf.function
    def contract(x):
        return _call("tfcv_so3_contract", x, tf.zeros([4, 10]), bandwidth=2)

    @tf.function
    def mismatched_dtypes(x):
        return _LIBRARY.tfcv_so3_contract(
            x=x, table=tf.zeros([4, 10], tf.float64), bandwidth=2
        )

    @tf.function
    def expand(y):
        return _call("tfcv_s2_expand", y, tf.zeros([4, 5]), grid_size=4)

    with pytest.raises(ValueError, match="at most N/2 = 1"):
        contract.get_concrete_function(
            tf.TensorSpec([None, 4, 2, 2], tf.complex64)
        )
    with pytest.raises(ValueError, match="table must be float32 for complex64"):
        mismatched_dtypes.get_concrete_function(
            tf.TensorSpec([None, 4, 4, 4], tf.complex64)
        )

    @tf.function
    def narrow_table(x):
        return _call("tfcv_s2_contract", x, tf.zeros([4, 5]), bandwidth=2)

    with pytest.raises(ValueError, match="table must have 4 columns"):
        narrow_table.get_concrete_function(
            tf.TensorSpec([None, 4, 4], tf.complex64)
        )
    with pytest.raises(ValueError, match="not a packed S\\^2 size"):
        expand.get_concrete_function(tf.TensorSpec([None, 5], tf.complex64))


def test_shape_functions_give_static_shapes():
    @tf.function
    def stage(x, table):
        y = spherical_kernels.so3_contract(x, table, 2)
        return (
            y,
            spherical_kernels.so3_expand(y, table, 6),
            spherical_kernels.so3_mm(y[:, None], y[None]),
        )

    concrete = stage.get_concrete_function(
        tf.TensorSpec([None, 5, 6, 6], tf.complex64),
        tf.TensorSpec([5, 10], tf.float32),
    )

    shapes = [output.shape.as_list() for output in concrete.structured_outputs]
    assert shapes == [[None, 10], [None, 5, 6, 6], [None, None, 10]]


def test_wrappers_reject_mismatched_dtypes():
    with pytest.raises(
        ValueError, match="`table` must be float64 for a complex128"
    ):
        spherical_kernels.so3_contract(
            np.zeros((1, 2, 2, 2), np.complex128),
            np.zeros((2, 1), np.float32),
            1,
        )
    with pytest.raises(ValueError, match="`y` must be complex64 or complex128"):
        spherical_kernels.s2_expand(
            np.zeros((1, 1), np.float32), np.zeros((2, 1), np.float32), 2
        )
    with pytest.raises(
        ValueError, match="must both be complex64 or both complex128"
    ):
        spherical_kernels.so3_mm(
            np.zeros((1, 1, 1), np.complex64),
            np.zeros((1, 1, 1), np.complex128),
        )


def test_missing_library_raises_value_error(monkeypatch):
    monkeypatch.setattr(_loader, "load_library", lambda: None)

    with pytest.raises(ValueError, match="rebuild the library"):
        spherical_kernels.s2_mm(
            np.zeros((1, 1, 1), np.complex64), np.zeros((1, 1, 1), np.complex64)
        )


def test_gradient_needs_static_grid_size():
    table = tf.zeros([4, 10])

    @tf.function(
        input_signature=[tf.TensorSpec([1, 4, None, None], tf.complex64)]
    )
    def gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(
                tf.abs(spherical_kernels.so3_contract(x, table, 2))
            )
        return tape.gradient(loss, x)

    with pytest.raises(ValueError, match="needs the static size N"):
        gradient.get_concrete_function()


def test_library_override_environment_variable(monkeypatch):
    monkeypatch.setenv("TFCV_OPS_LIBRARY", "/elsewhere/_tfcv_ops.so")

    overridden = _loader.library_path()
    monkeypatch.setattr(_loader, "LIBRARY_PATH", "/explicit/_tfcv_ops.so")
    explicit = _loader.library_path()

    assert overridden == "/elsewhere/_tfcv_ops.so"
    assert explicit == "/explicit/_tfcv_ops.so"


def test_so3_bandwidth_rejects_non_packed_size():
    with pytest.raises(ValueError, match="is not a packed SO\\(3\\) size"):
        spherical_kernels._so3_bandwidth(11)


def test_runs_in_tf_function_and_mirrored_strategy(mirrored_strategy):
    rng = np.random.default_rng(17)
    rows, grid_size, bandwidth = 6, 6, 3
    packed = _packed_size(bandwidth, True)
    x = tf.constant(
        _random_complex(rng, (2, rows, grid_size, grid_size), np.complex64)
    )
    table = tf.constant(rng.normal(size=(rows, packed)).astype(np.float32))

    @tf.function
    def step():
        def replica_fn():
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = spherical_kernels.so3_contract(x, table, bandwidth)
                z = spherical_kernels.so3_mm(y[:, None], y[None])
                round_trip = spherical_kernels.so3_expand(y, table, grid_size)
                loss = tf.reduce_sum(tf.abs(z)) + tf.reduce_sum(
                    tf.abs(round_trip)
                )
            return y, tape.gradient(loss, x)

        return mirrored_strategy.run(replica_fn)

    y_replicas, grad_replicas = step()

    want = _contract_reference(x.numpy(), table.numpy(), bandwidth, True)
    for y, grad in zip(
        mirrored_strategy.experimental_local_results(y_replicas),
        mirrored_strategy.experimental_local_results(grad_replicas),
    ):
        np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=1e-4)
        assert grad.shape == x.shape and np.all(np.isfinite(grad.numpy()))
