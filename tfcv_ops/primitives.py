"""β-stage primitives and spectral products of the S² and SO(3) FFTs.

Spherical CNNs (Cohen, Geiger, Köhler & Welling, 2018, "Spherical CNNs",
arXiv:1801.10130), §4, Appendix C (the SO(3) FFT: an FFT over α and γ, then
a contraction of β with the Wigner-d table) and Appendix D / Fig. 2 (the
Fourier theorems: the SO(3) spectrum of a correlation is a per-degree outer
product (S²) or matrix product (SO(3)) of the input spectra).

With a real table `T[j, p]` (see `tables`), `M` centred frequencies
`-b < m < b` placed at `m mod N` on an FFT axis of length `N = 2 b_grid`:

  - `so3_contract(x [B, J, N, N], T [J, P(b)], b) -> [B, P(b)]`:
    `y[:, p(l,m,n)] = Σ_j T[j, p] x[:, j, m mod N, n mod N]`;
  - `so3_expand(y [B, P(b)], T, N) -> [B, J, N, N]`: the adjoint,
    `x[:, j, m mod N, n mod N] = Σ_{l >= max(|m|,|n|)} T[j, p(l,m,n)] y[:, p]`,
    zero at the other frequencies;
  - `s2_contract(x [B, J, N], T [J, b²], b) -> [B, b²]` and
    `s2_expand(y [B, b²], T, N) -> [B, J, N]`: the same with `n = 0`;
  - `s2_mm(x [B, C, b²], y [C, O, b²]) -> [B, O, P(b)]`:
    `z[:, o, p(l,m,n)] = Σ_c x[:, c, (l,m)] conj(y[c, o, (l,n)])`;
  - `so3_mm(x [B, C, P], y [C, O, P]) -> [B, O, P]`:
    `z^l = Σ_c x^l conj(y^l)^T`, i.e. `f̂ ψ̂^†` per degree.

`expand` is the adjoint of `contract` (real table), so each is the other's
gradient. Every primitive has a pure-TensorFlow twin (slicing, `tf.roll`,
`tf.einsum`; static shapes; compiles with `jit_compile=True`) and may run a
C++ kernel from `tfcv_ops.spherical_kernels`: by default (`use_custom_op=
None`, see `set_use_custom_op`) the kernel is used when its library loads
and provides the op, outside XLA-compiled functions and outside
`tf.saved_model.save`, so exported SavedModels contain only stock ops.

Shape letters: `B` batch, `C` input and `O` output channels, `J = 2 b_grid`
β samples, `N = 2 b_grid` FFT length, `b` bandwidth, `P = b (4b² - 1) / 3`.

Deviations from the paper:
  - The paper's GPU kernels compute these contractions; here the twins
    work per degree with complex data split into real and imaginary parts.
"""

import numpy as np
import tensorflow as tf

from tfcv_ops import _loader
from tfcv_ops import _spherical_twins
from tfcv_ops import layout
from tfcv_ops import wigner

try:  # Internal API: tells whether `tf.saved_model.save` is tracing.
    from tensorflow.python.saved_model import save_context as _save_context
except ImportError:  # pragma: no cover - depends on the TF build.
    _save_context = None

_TABLE_DTYPES = {tf.complex64: tf.float32, tf.complex128: tf.float64}
_settings = _loader.default_use_custom_op  # {"value": None|True|False}


def set_use_custom_op(value) -> None:
    """Sets the default of `use_custom_op` for the spherical ops.

    Args:
      value: `None` (initial default: the custom kernel when it can run),
        `True` (require it) or `False` (always the pure-TensorFlow twin).

    Raises:
      ValueError: if `value` is not `None`, `True` or `False`.

    Example:
      >>> set_use_custom_op(False)
      >>> set_use_custom_op(None)
    """
    _settings["value"] = _check_use_custom_op(value)


def get_use_custom_op():
    """Returns the default set by `set_use_custom_op` (initially `None`)."""
    return _settings["value"]


def _check_use_custom_op(value):
    if value is not None and value is not True and value is not False:
        raise ValueError(
            f"`use_custom_op` must be None, True or False, received "
            f"{value!r}; pass None to use the custom kernel when available."
        )
    return value


def _kernel(name: str):
    """The C++ kernel wrapper `name`, or `None` when there is none."""
    try:
        # Imported late: it registers gradients and needs the library.
        from tfcv_ops import spherical_kernels  # noqa: PLC0415
    except ImportError:
        return None
    return getattr(spherical_kernels, name, None)


def _in_save_context() -> bool:
    return _save_context is not None and _save_context.in_save_context()


def custom_op_blocker(use_custom_op):
    """Why no custom op may run now (a phrase), or `None` if one may.

    Shared with the transforms (they also choose `wigner_d_matrix`'s path).
    """
    if use_custom_op is None:
        use_custom_op = _settings["value"]
    if _check_use_custom_op(use_custom_op) is False:
        return "use_custom_op=False"
    if wigner._in_xla_context():  # pylint: disable=protected-access
        return "inside an XLA-compiled function, where it has no kernel"
    if _in_save_context():
        return "inside tf.saved_model.save (exports use stock ops only)"
    if not _loader.custom_ops_available():
        return (
            f"the custom-op library is not available ({_loader.load_error()})"
        )
    return None


def _select(name: str, use_custom_op):
    """The kernel to run for `name`, or `None` for the pure twin."""
    explicit = use_custom_op
    if explicit is None:
        explicit = _settings["value"]
    blocker = custom_op_blocker(use_custom_op)
    kernel = None
    if blocker is None:
        # The wrapper must exist and the loaded library must hold its op.
        kernel = _kernel(name)
        if _loader.library_op(f"tfcv_{name}") is None:
            kernel = None
        if kernel is None:
            blocker = f"the custom-op library provides no `tfcv_{name}` op"
    if kernel is None and explicit is True:
        raise ValueError(
            f"`use_custom_op=True` was requested for `{name}` but the "
            f"custom kernel cannot run: {blocker}; pass "
            f"`use_custom_op=None` or `False` to use the pure twin."
        )
    return kernel


def so3_contract(x, table, bandwidth: int, use_custom_op=None):
    """`y[:, p(l,m,n)] = Σ_j T[j, p] x[:, j, m mod N, n mod N]`, l < b.

    Args:
      x: complex64/complex128 `[B, J, N, N]`, the FFT of an SO(3) signal
        over α and γ (times the quadrature weights).
      table: real `[J, P(b)]`, float32 for complex64 and float64 for
        complex128 (`tables.so3_table`).
      bandwidth: `b`, `1 <= b <= N / 2`.
      use_custom_op: `None`, `True` or `False` (see `set_use_custom_op`).

    Returns:
      `[B, P(b)]`, dtype of `x`.

    Raises:
      ValueError: on shapes, dtypes or `bandwidth` that do not fit, or
        `use_custom_op=True` when the kernel cannot run.

    Example:
      >>> x = tf.zeros([1, 4, 4, 4], tf.complex64)
      >>> so3_contract(x, tf.zeros([4, 10]), 2).shape
      TensorShape([1, 10])
    """
    x, table = _check_inputs(x, table, 4, "`x`", "[B, J, N, N]")
    grid_size = x.shape[-1]
    _check_square(x)
    _check_table(table, x, layout.so3_spectrum_size, bandwidth, grid_size)
    kernel = _select("so3_contract", use_custom_op)
    if kernel is not None:
        return kernel(x, table, bandwidth)
    return _spherical_twins.so3_contract(x, table, bandwidth)


def so3_expand(y, table, grid_size: int, use_custom_op=None):
    """The adjoint of `so3_contract`: `[B, P(b)]` -> `[B, J, N, N]`.

    Args:
      y: complex64/complex128 `[B, P(b)]`.
      table: real `[J, P(b)]` matching `y`'s precision.
      grid_size: `N`, an even int `>= 2b`.
      use_custom_op: `None`, `True` or `False`.

    Returns:
      `x[:, j, m mod N, n mod N] = Σ_{l >= max(|m|,|n|)} T[j, p] y[:, p]`,
      zero at frequencies `|m| >= b` or `|n| >= b`; dtype of `y`.

    Raises:
      ValueError: as `so3_contract`.

    Example:
      >>> y = tf.zeros([1, 10], tf.complex64)
      >>> so3_expand(y, tf.zeros([4, 10]), 4).shape
      TensorShape([1, 4, 4, 4])
    """
    y, table = _check_inputs(y, table, 2, "`y`", "[B, P]")
    bandwidth = _packed_bandwidth(y, layout.so3_bandwidth_of, "P(b)")
    _check_table(table, y, layout.so3_spectrum_size, bandwidth, grid_size)
    kernel = _select("so3_expand", use_custom_op)
    if kernel is not None:
        return kernel(y, table, grid_size)
    return _spherical_twins.so3_expand(y, table, bandwidth, grid_size)


def s2_contract(x, table, bandwidth: int, use_custom_op=None):
    """`y[:, l² + l + m] = Σ_j T[j, l² + l + m] x[:, j, m mod N]`, l < b.

    Args:
      x: complex64/complex128 `[B, J, N]`, the FFT of an S² signal over α
        (times the quadrature weights).
      table: real `[J, b²]` matching `x`'s precision (`tables.s2_table`).
      bandwidth: `b`, `1 <= b <= N / 2`.
      use_custom_op: `None`, `True` or `False`.

    Returns:
      `[B, b²]`, dtype of `x`.

    Raises:
      ValueError: as `so3_contract`.

    Example:
      >>> s2_contract(tf.zeros([1, 4, 4], tf.complex64), tf.zeros([4, 4]),
      ...             2).shape
      TensorShape([1, 4])
    """
    x, table = _check_inputs(x, table, 3, "`x`", "[B, J, N]")
    grid_size = x.shape[-1]
    _check_table(table, x, layout.s2_spectrum_size, bandwidth, grid_size)
    kernel = _select("s2_contract", use_custom_op)
    if kernel is not None:
        return kernel(x, table, bandwidth)
    return _spherical_twins.s2_contract(x, table, bandwidth)


def s2_expand(y, table, grid_size: int, use_custom_op=None):
    """The adjoint of `s2_contract`: `[B, b²]` -> `[B, J, N]`.

    Args:
      y: complex64/complex128 `[B, b²]`.
      table: real `[J, b²]` matching `y`'s precision.
      grid_size: `N`, an even int `>= 2b`.
      use_custom_op: `None`, `True` or `False`.

    Returns:
      `x[:, j, m mod N] = Σ_{l >= |m|} T[j, l² + l + m] y[:, l² + l + m]`.

    Raises:
      ValueError: as `so3_contract`.

    Example:
      >>> s2_expand(tf.zeros([1, 4], tf.complex64), tf.zeros([4, 4]),
      ...           4).shape
      TensorShape([1, 4, 4])
    """
    y, table = _check_inputs(y, table, 2, "`y`", "[B, b²]")
    bandwidth = _packed_bandwidth(y, layout.s2_bandwidth_of, "b²")
    _check_table(table, y, layout.s2_spectrum_size, bandwidth, grid_size)
    kernel = _select("s2_expand", use_custom_op)
    if kernel is not None:
        return kernel(y, table, grid_size)
    return _spherical_twins.s2_expand(y, table, bandwidth, grid_size)


def s2_mm(x, y, use_custom_op=None):
    """Spectral S² correlation: per-degree outer products summed over `C`.

    `z[:, o, p(l,m,n)] = Σ_c x[:, c, (l,m)] conj(y[c, o, (l,n)])`: with `x`
    the spectrum of the signal `f` and `y` that of the filter `ψ`, `z` is
    the SO(3) spectrum of `R ↦ ∫ conj(ψ(R⁻¹ x)) f(x) dx` (Eq. 4 for real ψ).

    Args:
      x: complex `[B, C, b²]`.
      y: complex `[C, O, b²]`, same dtype.
      use_custom_op: `None`, `True` or `False`.

    Returns:
      `[B, O, P(b)]`.

    Raises:
      ValueError: on ranks, dtypes or sizes that do not fit.

    Example:
      >>> s2_mm(tf.zeros([2, 3, 4], tf.complex64),
      ...       tf.zeros([3, 5, 4], tf.complex64)).shape
      TensorShape([2, 5, 10])
    """
    x, y, bandwidth = _check_mm(x, y, layout.s2_bandwidth_of, "b²")
    kernel = _select("s2_mm", use_custom_op)
    if kernel is not None:
        return kernel(x, y)

    blocks = []
    for l in range(bandwidth):
        side = 2 * l + 1
        x_l = x[:, :, l * l : l * l + side]  # [B, C, 2l+1]
        y_l = tf.math.conj(y[:, :, l * l : l * l + side])  # [C, O, 2l+1]
        z_l = tf.einsum("bcm,con->bomn", x_l, y_l)  # -> [B, O, m, n]
        blocks.append(tf.reshape(z_l, [-1, y.shape[1], side * side]))
    return tf.concat(blocks, axis=-1)  # [B, O, P]


def so3_mm(x, y, use_custom_op=None):
    """Spectral SO(3) correlation: `z^l = Σ_c x^l_c conj(y^l_{c,o})^T`.

    With `x` the spectrum of `f` and `y` that of `ψ`, `z` is the spectrum
    of `R ↦ ∫ conj(ψ(R⁻¹ Q)) f(Q) dQ` (Eq. 6 for real ψ): `f̂ ψ̂^†`.

    Args:
      x: complex `[B, C, P(b)]`.
      y: complex `[C, O, P(b)]`, same dtype.
      use_custom_op: `None`, `True` or `False`.

    Returns:
      `[B, O, P(b)]`, `z[(l,m,n)] = Σ_c Σ_k x[(l,m,k)] conj(y[(l,n,k)])`.

    Raises:
      ValueError: on ranks, dtypes or sizes that do not fit.

    Example:
      >>> so3_mm(tf.zeros([2, 3, 10], tf.complex64),
      ...        tf.zeros([3, 5, 10], tf.complex64)).shape
      TensorShape([2, 5, 10])
    """
    x, y, bandwidth = _check_mm(x, y, layout.so3_bandwidth_of, "P(b)")
    kernel = _select("so3_mm", use_custom_op)
    if kernel is not None:
        return kernel(x, y)

    blocks = []
    for l in range(bandwidth):
        side = 2 * l + 1
        start = layout.so3_spectrum_size(l)
        # [B, C, (2l+1)^2] -> [B, C, m, k]; [C, O, (2l+1)^2] -> [C, O, n, k]
        x_l = tf.reshape(
            x[..., start : start + side**2], [-1, x.shape[1], side, side]
        )
        y_l = tf.reshape(
            y[..., start : start + side**2], [y.shape[0], -1, side, side]
        )
        z_l = tf.einsum("bcmk,conk->bomn", x_l, tf.math.conj(y_l))
        blocks.append(tf.reshape(z_l, [-1, y.shape[1], side * side]))
    return tf.concat(blocks, axis=-1)  # [B, O, P]


def _check_inputs(x, table, rank: int, name: str, shape_text: str):
    """Converts `x` and `table`; checks ranks, static shapes and dtypes."""
    x = tf.convert_to_tensor(x)
    table = tf.convert_to_tensor(table)
    if x.shape.rank != rank or not x.shape[1:].is_fully_defined():
        raise ValueError(
            f"{name} must have rank {rank} {shape_text} with static sizes "
            f"after the batch axis, received shape {_shape(x)}; reshape it "
            f"(the transforms flatten leading axes for you)."
        )
    if x.dtype not in _TABLE_DTYPES:
        raise ValueError(
            f"{name} must be complex64 or complex128, received "
            f"{x.dtype.name}; cast it with `tf.cast`."
        )
    if table.dtype != _TABLE_DTYPES[x.dtype] or table.shape.rank != 2:
        raise ValueError(
            f"`table` must be a rank-2 {_TABLE_DTYPES[x.dtype].name} tensor "
            f"for {x.dtype.name} data, received {table.dtype.name} of shape "
            f"{_shape(table)}; build it with `tables.so3_table` / "
            f"`tables.s2_table` and the matching dtype."
        )
    return x, table


def _check_square(x) -> None:
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(
            f"`x` must have equal α and γ axes [B, J, N, N], received shape "
            f"{_shape(x)}; resample the signal to a square grid."
        )


def _check_table(table, data, size_of, bandwidth, grid_size) -> None:
    """Checks `bandwidth`, `grid_size` and `table` against each other."""
    bandwidth = layout._check_non_negative("bandwidth", bandwidth)
    if (
        isinstance(grid_size, (bool, np.bool_))
        or not isinstance(grid_size, (int, np.integer))
        or grid_size % 2
        or not 2 <= 2 * bandwidth <= grid_size
    ):
        raise ValueError(
            f"the grid size N must be an even int >= 2 * bandwidth with "
            f"bandwidth >= 1, received N={grid_size!r} and "
            f"bandwidth={bandwidth}; a grid of N samples resolves degrees "
            f"l < N / 2."
        )
    expected = [table.shape[0], size_of(bandwidth)]
    if data.shape.rank > 2:  # contract/expand on the grid side: J = x.shape[1]
        expected[0] = data.shape[1]
    if table.shape.as_list() != expected:
        raise ValueError(
            f"`table` must have shape {tuple(expected)} for bandwidth "
            f"{bandwidth}, received {_shape(table)}; build it for the same "
            f"grid and bandwidth."
        )


def _packed_bandwidth(y, bandwidth_of, size_text: str) -> int:
    bandwidth = bandwidth_of(y.shape[-1])
    if not bandwidth:
        raise ValueError(
            f"the last axis of `y` must be a packed spectrum size {size_text} "
            f"for some bandwidth b >= 1, received shape {_shape(y)}; see "
            f"`tfcv_ops.layout` for the packed layout."
        )
    return bandwidth


def _check_mm(x, y, bandwidth_of, size_text: str):
    """Checks the operands of `s2_mm` / `so3_mm`; returns them and `b`."""
    x = tf.convert_to_tensor(x)
    y = tf.convert_to_tensor(y)
    if (
        x.shape.rank != 3
        or y.shape.rank != 3
        or not x.shape[1:].is_fully_defined()
        or not y.shape.is_fully_defined()
        or x.shape[1] != y.shape[0]
        or x.shape[2] != y.shape[2]
    ):
        raise ValueError(
            f"`x` must be [B, C, {size_text}] and `y` [C, O, {size_text}] with "
            f"static sizes, equal C and equal spectra, received shapes "
            f"{_shape(x)} and {_shape(y)}; transpose or reshape them."
        )
    if x.dtype not in _TABLE_DTYPES or y.dtype != x.dtype:
        raise ValueError(
            f"`x` and `y` must both be complex64 or both complex128, "
            f"received {x.dtype.name} and {y.dtype.name}; cast them."
        )
    return x, y, _packed_bandwidth(y, bandwidth_of, size_text)


def _shape(tensor) -> tuple:
    if tensor.shape.rank is None:
        return "(unknown rank)"
    return tuple(tensor.shape.as_list())
