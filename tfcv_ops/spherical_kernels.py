"""C++ kernels of the S² / SO(3) Fourier β-stage and spectral products.

Spherical CNNs (Cohen, Geiger, Köhler & Welling, 2018, "Spherical CNNs",
arXiv:1801.10130), Eqs. 8–9 (generalized FFT), Eq. 23 and Appendix D
(Fourier theorems). Thin wrappers around the custom ops of
`tfcv_ops/cc/spherical_transform.cc` and `tfcv_ops/cc/spherical_mm.cc`, with
their gradients. The FFTs over α and γ stay in `tf.signal`; these kernels do
the part where the time goes, the contraction over β with a table of Wigner
small-d values, and the per-degree products.

Shape letters: `B` batch, `J` β rows of the grid, `N` grid side over α and γ
(even, `N = 2 b_grid`), `b` bandwidth (degrees `l < b`, `b <= N / 2`),
`C`/`C'` input/output channels, `P = P(b) = b (4b² - 1) / 3`.

Packed spectra (spectral axis last, complex):
  - S²: `(l, m)` at `l² + l + m`, `b²` entries.
  - SO(3): `(l, m, n)` at `p(l, m, n) = l (4l² - 1) / 3 + (m + l)(2l + 1)
    + (n + l)`, `P(b)` entries (degree `l` is a row-major `(2l+1)²` block,
    the layout of `wigner_d_matrix`).
  - Tables (real): `T2[j, l² + l + m]` `[J, b²]` and `T3[j, p(l, m, n)]`
    `[J, P(b)]`, typically `w_j d^l_{m0}(β_j)` and `w_j d^l_{mn}(β_j)`.

The β-stage (frequency `m` of the grid stored at index `m mod N`):

    so3_contract: y[b, p(l,m,n)] = Σ_j T[j, p(l,m,n)] x[b, j, m mod N, n mod N]
    so3_expand:   x[b, j, m mod N, n mod N] = Σ_{max(|m|,|n|) <= l < b}
                                              T[j, p(l,m,n)] y[b, p(l,m,n)]
                  (zero at every other frequency)
    s2_contract:  y[b, l² + l + m] = Σ_j T[j, l² + l + m] x[b, j, m mod N]
    s2_expand:    x[b, j, m mod N] = Σ_{|m| <= l < b} T[j, l² + l + m]
                                                     y[b, l² + l + m]

`expand(., T)` is the adjoint (transpose: `T` is real) of `contract(., T)`,
so the gradient of each is the other applied to the upstream gradient; the
table and the integer attributes get no gradient.

Spectral products (paper Fig. 2 and Eq. 23):

    s2_mm:  z[b, o, p(l,m,n)] = Σ_c x[b, c, (l,m)] conj(y[c, o, (l,n)])
    so3_mm: z[b, o, p(l,m,n)] = Σ_{c,k} x[b,c,p(l,m,k)] conj(y[c,o,p(l,n,k)])

Their gradients follow TensorFlow's complex convention (what
`tf.GradientTape` gives for the same formula written with `tf.einsum` and
`tf.math.conj`).

Dtypes: complex64 signals with float32 tables, complex128 with float64.

Deviations from the paper:
  - None in the mathematics. The paper's code runs these stages as CUDA
    kernels compiled at run time; these are CPU kernels built by `setup.py`.
"""

import numpy as np
import tensorflow as tf

from tfcv_ops import _loader

_TABLE_DTYPES = {tf.complex64: tf.float32, tf.complex128: tf.float64}


def so3_contract(x, table, bandwidth: int) -> tf.Tensor:
    """SO(3) β-contraction `[B, J, N, N] -> [B, P(b)]` (C++ kernel).

    Args:
      x: complex64 or complex128 `[B, J, N, N]`, the grid signal after the
        FFT over (α, γ), frequency `m` at index `m mod N`.
      table: real `[J, P(bandwidth)]` (float32 for complex64, float64 for
        complex128), `T[j, p(l, m, n)]`.
      bandwidth: `b`, an `int` with `1 <= b <= N / 2`.

    Returns:
      `[B, P(b)]`, `y[b, p(l,m,n)] = Σ_j T[j, p(l,m,n)] x[b, j, m, n]`.

    Raises:
      ValueError: if the library lacks the op or the dtypes do not pair.
      tf.errors.InvalidArgumentError: for shapes that break the rules.

    Example:
      >>> y = so3_contract(tf.ones([1, 2, 2, 2], tf.complex64),
      ...                  tf.ones([2, 1]), 1)  # doctest: +SKIP
    """
    x, table = _check_dtypes("so3_contract", "x", x, table)
    library = _library("tfcv_so3_contract")
    return library.tfcv_so3_contract(x=x, table=table, bandwidth=bandwidth)


def so3_expand(y, table, grid_size: int) -> tf.Tensor:
    """SO(3) β-expansion `[B, P(b)] -> [B, J, N, N]`, adjoint of contract.

    Args:
      y: complex64 or complex128 `[B, P(b)]`, packed SO(3) spectrum.
      table: real `[J, P(b)]` of the matching precision.
      grid_size: `N`, an even `int >= 2 b`.

    Returns:
      `[B, J, N, N]`: `Σ_l T[j, p(l,m,n)] y[b, p(l,m,n)]` at
      `(m mod N, n mod N)` for `|m|, |n| < b`, zero elsewhere.

    Raises:
      ValueError: if the library lacks the op or the dtypes do not pair.
      tf.errors.InvalidArgumentError: for shapes that break the rules.

    Example:
      >>> x = so3_expand(tf.ones([1, 1], tf.complex64), tf.ones([2, 1]),
      ...                2)  # doctest: +SKIP
    """
    y, table = _check_dtypes("so3_expand", "y", y, table)
    library = _library("tfcv_so3_expand")
    return library.tfcv_so3_expand(y=y, table=table, grid_size=grid_size)


def s2_contract(x, table, bandwidth: int) -> tf.Tensor:
    """S² β-contraction `[B, J, N] -> [B, b²]` (C++ kernel).

    Args:
      x: complex64 or complex128 `[B, J, N]`, after the FFT over α.
      table: real `[J, b²]` of the matching precision, `T[j, l² + l + m]`.
      bandwidth: `b`, an `int` with `1 <= b <= N / 2`.

    Returns:
      `[B, b²]`, `y[b, l² + l + m] = Σ_j T[j, l² + l + m] x[b, j, m mod N]`.

    Raises:
      ValueError: if the library lacks the op or the dtypes do not pair.
      tf.errors.InvalidArgumentError: for shapes that break the rules.

    Example:
      >>> y = s2_contract(tf.ones([1, 2, 2], tf.complex64), tf.ones([2, 1]),
      ...                 1)  # doctest: +SKIP
    """
    x, table = _check_dtypes("s2_contract", "x", x, table)
    library = _library("tfcv_s2_contract")
    return library.tfcv_s2_contract(x=x, table=table, bandwidth=bandwidth)


def s2_expand(y, table, grid_size: int) -> tf.Tensor:
    """S² β-expansion `[B, b²] -> [B, J, N]`, adjoint of `s2_contract`.

    Args:
      y: complex64 or complex128 `[B, b²]`, packed S² spectrum.
      table: real `[J, b²]` of the matching precision.
      grid_size: `N`, an even `int >= 2 b`.

    Returns:
      `[B, J, N]`, zero at frequencies `|m| >= b`.

    Raises:
      ValueError: if the library lacks the op or the dtypes do not pair.
      tf.errors.InvalidArgumentError: for shapes that break the rules.

    Example:
      >>> x = s2_expand(tf.ones([1, 1], tf.complex64), tf.ones([2, 1]),
      ...               2)  # doctest: +SKIP
    """
    y, table = _check_dtypes("s2_expand", "y", y, table)
    library = _library("tfcv_s2_expand")
    return library.tfcv_s2_expand(y=y, table=table, grid_size=grid_size)


def s2_mm(x, y) -> tf.Tensor:
    """Per-degree outer products of S² spectra, summed over channels.

    Args:
      x: complex `[B, C, b²]`.
      y: complex `[C, C', b²]`, same dtype.

    Returns:
      `[B, C', P(b)]`,
      `z[b, o, p(l,m,n)] = Σ_c x[b, c, (l,m)] conj(y[c, o, (l,n)])`.

    Raises:
      ValueError: if the library lacks the op or the dtypes differ.
      tf.errors.InvalidArgumentError: for shapes that break the rules.

    Example:
      >>> z = s2_mm(tf.ones([1, 1, 1], tf.complex64),
      ...           tf.ones([1, 1, 1], tf.complex64))  # doctest: +SKIP
    """
    x, y = _check_pair("s2_mm", x, y)
    return _library("tfcv_s2_mm").tfcv_s2_mm(x=x, y=y)


def so3_mm(x, y) -> tf.Tensor:
    """Per-degree block products `x^l y^l†` of SO(3) spectra, over channels.

    Args:
      x: complex `[B, C, P(b)]`.
      y: complex `[C, C', P(b)]`, same dtype.

    Returns:
      `[B, C', P(b)]`,
      `z[b, o, p(l,m,n)] = Σ_c Σ_k x[b,c,p(l,m,k)] conj(y[c,o,p(l,n,k)])`.

    Raises:
      ValueError: if the library lacks the op or the dtypes differ.
      tf.errors.InvalidArgumentError: for shapes that break the rules.

    Example:
      >>> z = so3_mm(tf.ones([1, 1, 1], tf.complex64),
      ...            tf.ones([1, 1, 1], tf.complex64))  # doctest: +SKIP
    """
    x, y = _check_pair("so3_mm", x, y)
    return _library("tfcv_so3_mm").tfcv_so3_mm(x=x, y=y)


# Gradients. Contract and expand are adjoint; the table gets none.


@tf.RegisterGradient("TfcvSo3Contract")
def _so3_contract_gradient(op, upstream):
    """`dL/dx = so3_expand(dL/dy)`; no gradient for the table."""
    grid_size = _static_dim(op.inputs[0], -1, "TfcvSo3Contract", "N")
    library = _library("tfcv_so3_expand")
    grad_x = library.tfcv_so3_expand(
        y=upstream, table=op.inputs[1], grid_size=grid_size
    )
    return [grad_x, None]


@tf.RegisterGradient("TfcvSo3Expand")
def _so3_expand_gradient(op, upstream):
    """`dL/dy = so3_contract(dL/dx)`; no gradient for the table."""
    packed_size = _static_dim(op.inputs[1], -1, "TfcvSo3Expand", "P")
    library = _library("tfcv_so3_contract")
    grad_y = library.tfcv_so3_contract(
        x=upstream,
        table=op.inputs[1],
        bandwidth=_so3_bandwidth(packed_size),
    )
    return [grad_y, None]


@tf.RegisterGradient("TfcvS2Contract")
def _s2_contract_gradient(op, upstream):
    """`dL/dx = s2_expand(dL/dy)`; no gradient for the table."""
    grid_size = _static_dim(op.inputs[0], -1, "TfcvS2Contract", "N")
    library = _library("tfcv_s2_expand")
    grad_x = library.tfcv_s2_expand(
        y=upstream, table=op.inputs[1], grid_size=grid_size
    )
    return [grad_x, None]


@tf.RegisterGradient("TfcvS2Expand")
def _s2_expand_gradient(op, upstream):
    """`dL/dy = s2_contract(dL/dx)`; no gradient for the table."""
    packed_size = _static_dim(op.inputs[1], -1, "TfcvS2Expand", "b^2")
    library = _library("tfcv_s2_contract")
    grad_y = library.tfcv_s2_contract(
        x=upstream,
        table=op.inputs[1],
        bandwidth=int(round(np.sqrt(packed_size))),
    )
    return [grad_y, None]


@tf.RegisterGradient("TfcvS2Mm")
def _s2_mm_gradient(op, upstream):
    """Per degree: `dx = Σ_{o,n} G y`, `dy = Σ_{b,m} conj(G) x`."""
    x, y = op.inputs
    packed_size = _static_dim(x, -1, "TfcvS2Mm", "b^2")
    bandwidth = int(round(np.sqrt(packed_size)))
    grad_x, grad_y = [], []
    for l in range(bandwidth):
        side = 2 * l + 1
        start = l * (4 * l * l - 1) // 3
        x_block = x[..., l * l : (l + 1) ** 2]  # [B, C, 2l+1]
        y_block = y[..., l * l : (l + 1) ** 2]  # [C, C', 2l+1]

        # [B, C', (2l+1)^2] -> [B, C', 2l+1, 2l+1]
        shape = tf.concat([tf.shape(upstream)[:2], [side, side]], axis=0)
        g_block = tf.reshape(upstream[..., start : start + side * side], shape)

        # [B, C', m, n] x [C, C', n] -> [B, C, m]
        grad_x.append(tf.einsum("bomn,con->bcm", g_block, y_block))
        # [B, C', m, n] x [B, C, m] -> [C, C', n]
        grad_y.append(
            tf.einsum("bomn,bcm->con", tf.math.conj(g_block), x_block)
        )
    return [tf.concat(grad_x, axis=-1), tf.concat(grad_y, axis=-1)]


@tf.RegisterGradient("TfcvSo3Mm")
def _so3_mm_gradient(op, upstream):
    """Both gradients are `TfcvSo3Mm` again on block-transposed operands.

    `dx[b,c,(m,k)] = Σ_{o,n} G[b,o,(m,n)] y[c,o,(n,k)]` is
    `so3_mm(G, conj(yᵀ))` and `dy[c,o,(n,k)] = Σ_{b,m} conj(G[b,o,(m,n)])
    x[b,c,(m,k)]` is `so3_mm(conj(Gᵀ), conj(xᵀ))` with channels swapped,
    where `ᵀ` swaps the two channel axes and transposes every degree block.
    """
    x, y = op.inputs
    packed_size = _static_dim(x, -1, "TfcvSo3Mm", "P")
    transpose = _block_transpose_indices(_so3_bandwidth(packed_size))
    library = _library("tfcv_so3_mm")

    # [C, C', P] -> [C', C, P], blocks transposed: W[o, c, (k, n)].
    y_swapped = tf.gather(tf.transpose(y, [1, 0, 2]), transpose, axis=-1)
    grad_x = library.tfcv_so3_mm(x=upstream, y=tf.math.conj(y_swapped))

    # [B, C', P] -> [C', B, P] blocks transposed; [B, C, P] blocks transposed.
    g_swapped = tf.gather(tf.transpose(upstream, [1, 0, 2]), transpose, axis=-1)
    x_transposed = tf.gather(x, transpose, axis=-1)
    grad_y_swapped = library.tfcv_so3_mm(
        x=tf.math.conj(g_swapped), y=tf.math.conj(x_transposed)
    )  # [C', C, P]
    return [grad_x, tf.transpose(grad_y_swapped, [1, 0, 2])]


def _block_transpose_indices(bandwidth: int) -> np.ndarray:
    """`index[p(l, m, n)] = p(l, n, m)`: gathering transposes every block."""
    blocks = []
    for l in range(bandwidth):
        side = 2 * l + 1
        start = l * (4 * l * l - 1) // 3
        grid = np.arange(side * side).reshape(side, side)
        blocks.append(start + grid.T.reshape(-1))
    if not blocks:
        return np.zeros([0], np.int64)
    return np.concatenate(blocks).astype(np.int64)


def _so3_bandwidth(packed_size: int) -> int:
    """The `b` with `P(b) = packed_size`, or raises `ValueError`."""
    bandwidth = 0
    while bandwidth * (4 * bandwidth * bandwidth - 1) // 3 < packed_size:
        bandwidth += 1
    if bandwidth * (4 * bandwidth * bandwidth - 1) // 3 != packed_size:
        raise ValueError(
            f"The spectrum size {packed_size} is not a packed SO(3) size "
            f"P(b) = b(4b^2-1)/3 (1, 10, 35, 84, ...); pass a spectrum "
            f"with all degrees l < b."
        )
    return bandwidth


def _static_dim(tensor, axis: int, op_name: str, letter: str) -> int:
    """A dimension the gradient needs as an attribute; must be static."""
    size = tensor.shape[axis]
    if size is None:
        raise ValueError(
            f"The gradient of {op_name} needs the static size {letter} of "
            f"its input (shape {tensor.shape}); give the input a static "
            f"last dimension, e.g. with `tf.ensure_shape`."
        )
    return int(size)


@tf.autograph.experimental.do_not_convert
def _library(op_attribute: str):
    """The loaded library, or `ValueError` if it lacks `op_attribute`."""
    library = _loader.load_library()
    if library is None or not hasattr(library, op_attribute):
        reason = (
            _loader.load_error()
            if library is None
            else f"{_loader.library_path()} has no op {op_attribute}"
        )
        raise ValueError(
            f"The spherical custom ops are not available ({reason}); "
            f"rebuild the library with `pip install --no-build-isolation "
            f"-e .` (see BUILD.md), or use the pure-TensorFlow twins."
        )
    return library


def _check_dtypes(function: str, name: str, signal, table):
    """Converts `signal` and `table`; checks complex64/f32, complex128/f64."""
    signal = tf.convert_to_tensor(signal)
    table = tf.convert_to_tensor(table)
    if signal.dtype not in _TABLE_DTYPES:
        raise ValueError(
            f"{function}: `{name}` must be complex64 or complex128, received "
            f"{signal.dtype.name}; cast it, e.g. `tf.cast({name}, "
            f"tf.complex64)`."
        )
    expected = _TABLE_DTYPES[signal.dtype]
    if table.dtype != expected:
        raise ValueError(
            f"{function}: `table` must be {expected.name} for a "
            f"{signal.dtype.name} `{name}`, received {table.dtype.name}; "
            f"cast it, e.g. `tf.cast(table, tf.{expected.name})`."
        )
    return signal, table


def _check_pair(function: str, x, y):
    """Converts `x` and `y`; both complex64 or both complex128."""
    x = tf.convert_to_tensor(x)
    y = tf.convert_to_tensor(y)
    if x.dtype not in _TABLE_DTYPES or y.dtype != x.dtype:
        raise ValueError(
            f"{function}: `x` and `y` must both be complex64 or both "
            f"complex128, received {x.dtype.name} and {y.dtype.name}; cast "
            f"them to one complex dtype."
        )
    return x, y
