"""Packed layouts of S² and SO(3) spectra and helpers to index them.

Spherical CNNs (Cohen, Geiger, Köhler & Welling, 2018, "Spherical CNNs",
arXiv:1801.10130), Eqs. 8-9: the Fourier coefficients of a band-limited
signal are one vector `f̂^l` (S²) or one matrix `f̂^l` (SO(3)) per degree
`l < b`. We store them packed, degree by degree, on the last axis:

  - S²: `[..., b²]`, entry `(l, m)` at `l² + (m + l)`, `-l <= m <= l`.
  - SO(3): `[..., P(b)]` with `P(b) = Σ_{l<b} (2l + 1)² = b (4b² - 1) / 3`,
    entry `(l, m, n)` at `l (4l² - 1) / 3 + (m + l)(2l + 1) + (n + l)` (the
    layout of `wigner_d_matrix`: degree `l` is a row-major `(m, n)` block).

Truncating to a smaller bandwidth keeps a prefix; padding appends zeros.

Shape letters: `b` bandwidth, `P = P(b)`.

Deviations from the paper:
  None (the paper leaves the memory layout open).
"""

import numpy as np
import tensorflow as tf


def s2_spectrum_size(b: int) -> int:
    """Length `b²` of a packed S² spectrum of bandwidth `b` (`b >= 0`).

    Example:
      >>> s2_spectrum_size(4)
      16
    """
    b = _check_non_negative("b", b)
    return b * b


def so3_spectrum_size(b: int) -> int:
    """Length `P(b) = b (4b² - 1) / 3` of a packed SO(3) spectrum (`b >= 0`).

    Example:
      >>> so3_spectrum_size(4)
      84
    """
    b = _check_non_negative("b", b)
    return b * (4 * b * b - 1) // 3


def s2_index(l: int, m: int) -> int:
    """Packed position `l² + m + l` of the S² coefficient `f̂^l_m`.

    Raises:
      ValueError: if `l < 0` or `|m| > l`.

    Example:
      >>> s2_index(1, -1)
      1
    """
    l = _check_non_negative("l", l)
    _check_order("m", m, l)
    return l * l + m + l


def so3_index(l: int, m: int, n: int) -> int:
    """Packed position of the SO(3) coefficient `f̂^l_{mn}`.

    Raises:
      ValueError: if `l < 0`, `|m| > l` or `|n| > l`.

    Example:
      >>> so3_index(1, -1, -1)
      1
    """
    l = _check_non_negative("l", l)
    _check_order("m", m, l)
    _check_order("n", n, l)
    return so3_spectrum_size(l) + (m + l) * (2 * l + 1) + (n + l)


def s2_degree_block(x: tf.Tensor, l: int) -> tf.Tensor:
    """Degree `l` of a packed S² spectrum: `[..., b²]` -> `[..., 2l + 1]`.

    Args:
      x: packed S² spectrum `[..., b²]`.
      l: degree, `0 <= l < b`.

    Returns:
      `f̂^l_m` at `[..., m + l]`.

    Raises:
      ValueError: if `l` is negative or `x` holds no degree `l`.

    Example:
      >>> s2_degree_block(tf.range(9), 1).numpy()
      array([1, 2, 3], dtype=int32)
    """
    l = _check_non_negative("l", l)
    _check_holds("x", x.shape[-1], s2_spectrum_size(l + 1), l)
    return x[..., l * l : (l + 1) * (l + 1)]


def so3_degree_block(x: tf.Tensor, l: int) -> tf.Tensor:
    """Degree `l` of a packed SO(3) spectrum: `[..., P]` -> `[..., 2l+1, 2l+1]`.

    Args:
      x: packed SO(3) spectrum `[..., P(b)]`.
      l: degree, `0 <= l < b`.

    Returns:
      `f̂^l_{mn}` at `[..., m + l, n + l]`.

    Raises:
      ValueError: if `l` is negative or `x` holds no degree `l`.

    Example:
      >>> so3_degree_block(tf.range(10), 1).shape
      TensorShape([3, 3])
    """
    l = _check_non_negative("l", l)
    _check_holds("x", x.shape[-1], so3_spectrum_size(l + 1), l)
    side = 2 * l + 1
    block = x[..., so3_spectrum_size(l) : so3_spectrum_size(l + 1)]

    # [..., (2l+1)^2] -> [..., 2l+1, 2l+1]
    return tf.reshape(block, tf.concat([tf.shape(x)[:-1], [side, side]], 0))


def s2_bandwidth_of(size: int):
    """Returns `b` with `b² == size`, or `None` if there is none."""
    b = int(round(np.sqrt(size)))
    return b if b * b == size else None


def so3_bandwidth_of(size: int):
    """Returns `b` with `P(b) == size`, or `None` if there is none."""
    b = int(round((0.75 * size) ** (1.0 / 3.0)))
    for candidate in (b - 1, b, b + 1):
        if candidate >= 0 and so3_spectrum_size(candidate) == size:
            return candidate
    return None


def _check_non_negative(name: str, value) -> int:
    """Returns `value` as an `int` if it is a non-negative integer."""
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, np.integer))
        or value < 0
    ):
        raise ValueError(
            f"`{name}` must be a non-negative integer, received {value!r}; "
            f"pass a Python int such as `{name}=2`."
        )
    return int(value)


def _check_order(name: str, value, l: int) -> None:
    """Raises unless `value` is an integer order with `|value| <= l`."""
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, np.integer))
        or abs(value) > l
    ):
        raise ValueError(
            f"`{name}` must be an integer with |{name}| <= l = {l}, received "
            f"{value!r}; orders run over -l..l."
        )


def _check_holds(name: str, size, needed: int, l: int) -> None:
    """Raises if a packed axis of `size` entries holds no degree `l`."""
    if size is not None and size < needed:
        raise ValueError(
            f"`{name}` must hold degree l = {l} (a packed last axis of at "
            f"least {needed} entries), received a last axis of {size}; "
            f"pass a smaller `l` or a spectrum of a larger bandwidth."
        )
