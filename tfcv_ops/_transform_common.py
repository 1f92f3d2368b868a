"""Input checks and helpers shared by the S² and SO(3) transforms."""

import numpy as np
import tensorflow as tf

from tfcv_ops import grids
from tfcv_ops import layout
from tfcv_ops import primitives
from tfcv_ops import wigner

_COMPLEX = {
    tf.float32: tf.complex64,
    tf.float64: tf.complex128,
    tf.complex64: tf.complex64,
    tf.complex128: tf.complex128,
}
_LOW_PRECISION = (tf.float16, tf.bfloat16)


def to_complex(x, name: str, allow_low_precision: bool):
    """Returns `(x as complex64/complex128, dtype x came in)`.

    float16/bfloat16 are refused unless `allow_low_precision`, and then
    computed in float32.
    """
    x = tf.convert_to_tensor(x)
    dtype = x.dtype
    if dtype in _LOW_PRECISION:
        if not allow_low_precision:
            raise ValueError(
                f"`{name}` must be float32, float64, complex64 or "
                f"complex128, received {dtype.name}: with a 10-bit (float16) "
                f"or 7-bit (bfloat16) mantissa the transforms lose about "
                f"2-3 significant digits (sums of b³ terms); cast to "
                f"float32 or pass "
                f"`allow_low_precision=True` to compute in float32."
            )
        x = tf.cast(x, tf.float32)
    if x.dtype not in _COMPLEX:
        raise ValueError(
            f"`{name}` must be float32, float64, complex64 or complex128, "
            f"received {dtype.name}; cast it with `tf.cast`."
        )
    if x.dtype.is_complex:
        return x, dtype
    # tf.complex, not tf.cast: the same value, but its gradient takes the
    # real part without a "casting complex to float discards the imaginary
    # part" warning on every backward pass.
    return tf.complex(x, tf.zeros_like(x)), dtype


def real_dtype(complex_dtype):
    return tf.float32 if complex_dtype == tf.complex64 else tf.float64


def grid_bandwidth(x, grid_rank: int, maximum: int, layout_text: str) -> int:
    """Checks the grid axes of `x` (`grid_rank` equal even sides); returns b."""
    sides = x.shape[-grid_rank:] if x.shape.rank is not None else None
    if (
        sides is None
        or x.shape.rank < grid_rank
        or not sides.is_fully_defined()
        or len(set(sides.as_list())) != 1
        or sides[0] % 2
    ):
        raise ValueError(
            f"`x` must end in {grid_rank} equal, even, static grid axes "
            f"{layout_text} = 2b, received shape {_shape(x)}; resample the "
            f"signal to the SOFT grid of `s2_grid` / `so3_grid`."
        )
    return grids.check_bandwidth(
        "the grid bandwidth (side / 2)", sides[0] // 2, maximum
    )


def spectrum_bandwidth(y, bandwidth_of, size_text: str, maximum: int) -> int:
    """Checks the packed last axis of `y`; returns its bandwidth."""
    size = y.shape[-1] if y.shape.rank else None
    bandwidth = bandwidth_of(size) if size else None
    if not bandwidth:
        raise ValueError(
            f"the last axis of `x` must be a packed spectrum of size "
            f"{size_text} for a bandwidth b >= 1, received shape "
            f"{_shape(y)}; see `tfcv_ops.layout` for the layout."
        )
    return grids.check_bandwidth("the spectrum bandwidth", bandwidth, maximum)


def output_bandwidth(bandwidth_out, default: int, maximum: int) -> int:
    if bandwidth_out is None:
        return default
    return grids.check_bandwidth("bandwidth_out", bandwidth_out, maximum)


def flatten(x, trailing_rank: int):
    """`[..., *T]` -> (`[B, *T]`, the leading shape as a 1-D tensor)."""
    leading = tf.shape(x)[: x.shape.rank - trailing_rank]
    trailing = x.shape[x.shape.rank - trailing_rank :].as_list()
    return tf.reshape(x, [-1] + trailing), leading  # [..., *T] -> [B, *T]


def unflatten(x, leading):
    """`[B, *T]` -> `[..., *T]` with the leading shape from `flatten`."""
    trailing = x.shape[1:].as_list()
    return tf.reshape(x, tf.concat([leading, trailing], axis=0))


def resize_spectrum(y, size_out: int):
    """Truncates or zero-pads the packed last axis of `y` to `size_out`."""
    size_in = y.shape[-1]
    if size_out <= size_in:
        return y[..., :size_out]
    paddings = [[0, 0]] * (y.shape.rank - 1) + [[0, size_out - size_in]]
    return tf.pad(y, paddings)


def degree_factors(bandwidth: int, so3: bool) -> np.ndarray:
    """`2l + 1` at every packed position (Eq. 9's factor), float64."""
    degrees = np.arange(bandwidth)
    repeats = (2 * degrees + 1) ** 2 if so3 else 2 * degrees + 1
    return np.repeat(2.0 * degrees + 1.0, repeats)


def weight_column(bandwidth: int, extra_axes: int) -> np.ndarray:
    """Quadrature weights `w_j` shaped `[J, 1, ...]` for broadcasting."""
    weights = grids.quadrature_weights(bandwidth)
    return weights.reshape([-1] + [1] * extra_axes)


def wigner_big_d(bandwidth: int, alpha, beta, gamma, use_custom_op):
    """Packed `D^l_{mn}(α, β, γ)`, complex128 `[P(b)]` (ZYZ, see `wigner`)."""
    angles = [
        _angle(name, value)
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma))
    ]
    if primitives.custom_op_blocker(use_custom_op) is None:
        small_d = wigner.wigner_d_matrix(bandwidth - 1, angles[1][None])
    else:
        small_d = wigner.wigner_d_matrix_reference(
            bandwidth - 1, angles[1][None]
        )
    m, n = _packed_orders(bandwidth)

    # D_{mn} = exp(-i m α) d_{mn}(β) exp(-i n γ): [P]
    phase = -(m * angles[0] + n * angles[2])
    return tf.complex(small_d[0] * tf.cos(phase), small_d[0] * tf.sin(phase))


def _angle(name, value):
    """A rotation angle as a float64 scalar tensor, or a `ValueError`."""
    try:
        angle = tf.convert_to_tensor(value, dtype_hint=tf.float64)
    except (TypeError, ValueError):
        angle = None
    if (
        angle is None
        or not (angle.dtype.is_floating or angle.dtype.is_integer)
        or angle.shape.rank not in (None, 0)
    ):
        raise ValueError(
            f"`{name}` must be a real scalar angle in radians (a Python "
            f"number or a 0-D float tensor), received {value!r}; rotate "
            "one batch at a time, or call once per rotation."
        )
    return tf.cast(angle, tf.float64)


def _packed_orders(bandwidth: int):
    """`(m, n)` of every packed SO(3) position, float64 arrays `[P]`."""
    m, n = [], []
    for l in range(bandwidth):
        orders = np.arange(-l, l + 1, dtype=np.float64)
        m.append(np.repeat(orders, 2 * l + 1))
        n.append(np.tile(orders, 2 * l + 1))
    return np.concatenate(m), np.concatenate(n)


def rotate_spectrum(y, big_d, bandwidth: int, so3: bool):
    """Per degree `y^l -> conj(D^l) y^l`; `y` `[B, size]`, `D` `[P]`."""
    big_d = tf.cast(tf.math.conj(big_d), y.dtype)
    blocks = []
    for l in range(bandwidth):
        side = 2 * l + 1
        start = layout.so3_spectrum_size(l)
        # [S^2] -> [S, S] (rows k, columns m)
        d_l = tf.reshape(big_d[start : start + side * side], [side, side])
        if so3:
            # [B, S^2] -> [B, S, S]; [S, S] x [B, S, S] -> [B, S, S]
            y_l = tf.reshape(
                y[:, start : start + side * side], [-1, side, side]
            )
            rotated = tf.einsum("km,bmn->bkn", d_l, y_l)
            blocks.append(tf.reshape(rotated, [-1, side * side]))
        else:
            y_l = y[:, l * l : l * l + side]  # [B, S]
            blocks.append(tf.einsum("km,bm->bk", d_l, y_l))  # -> [B, S]
    return tf.concat(blocks, axis=1)


def _shape(tensor):
    if tensor.shape.rank is None:
        return "(unknown rank)"
    return tuple(tensor.shape.as_list())
