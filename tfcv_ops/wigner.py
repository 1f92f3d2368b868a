"""Wigner small-d matrices d^l(β): the custom op and its pure-TensorFlow twin.

Spherical CNNs (Cohen, Geiger, Köhler & Welling, 2018, "Spherical CNNs",
arXiv:1801.10130), Appendix (the generalized FFT on SO(3)): a signal on SO(3)
is expanded in Wigner D-functions of ZYZ Euler angles (α, β, γ),
`D^l_{mn}(α, β, γ) = exp(-i m α) d^l_{mn}(β) exp(-i n γ)`. This module
computes the real factor `d^l_{mn}(β)` for all degrees `l = 0..L`.

Convention: `d^l_{mn}(β) = <l m| exp(-i β J_y) |l n>`, the quantum-mechanics
convention of Wigner, Edmonds and Sakurai, with the Condon-Shortley phase.
For `l = 1`, with rows and columns `m, n = -1, 0, 1`:

    d^1(β) = [[(1 + cos β) / 2,  sin β / √2, (1 - cos β) / 2],
              [    -sin β / √2,       cos β,     sin β / √2],
              [(1 - cos β) / 2, -sin β / √2, (1 + cos β) / 2]]

so `d^1_{1,0}(β) = -sin β / √2`. Symmetries:
`d^l_{mn}(β) = (-1)^(m-n) d^l_{nm}(β) = d^l_{-n,-m}(β) = d^l_{nm}(-β)`, and
each `d^l(β)` is orthogonal.

Algorithm: Risbo's recursion (Risbo 1996, "Fourier transform summation of
Legendre series and D-functions", J. Geodesy 70). Spin `j` is the top
component of spin `j - 1/2` times spin `1/2`; with `n = 2j`, `a = j + m`,
`b = j + n'` (both in `0..n`), `p = cos(β/2)` and `q = sin(β/2)`:

    n d^(n)_{a,b} = √(ab) p d^(n-1)_{a-1,b-1} - √(a(n-b)) q d^(n-1)_{a-1,b}
                  + √((n-a)b) q d^(n-1)_{a,b-1} + √((n-a)(n-b)) p d^(n-1)_{a,b}

from `d^(0) = [[1]]`. Each step projects a unitary matrix, so errors grow
about linearly in `l` (about 1e-14 at `l = 64`); there are no factorials to
overflow. The C++ kernel (`tfcv_ops/cc/wigner_d.cc`) and the twin here run
the same recursion; the twin is vectorised over angles with `tf.pad`, so it
runs in graphs, under XLA and in exported SavedModels.

Layout: the result has shape `[J, P]`. Degree `l` occupies the columns
`[l (4 l^2 - 1) / 3, (l + 1) (4 (l + 1)^2 - 1) / 3)`, holding the
`(2l + 1) x (2l + 1)` matrix row-major in `(m, n)`, `m, n = -l..l`; use
`wigner_d_block` to get one degree as `[J, 2l + 1, 2l + 1]`.

Shape letters: `J` number of angles β, `L` the largest degree `l_max`,
`P = sum_{l <= L} (2l + 1)^2 = (L + 1)(2L + 1)(2L + 3) / 3`.

Deviations from the paper:
  - The paper fixes no sign convention for `d` in its text; we use the one
    above. The other common conventions (`β -> -β`, or an extra factor
    `(-1)^(m-n)`) give the transpose of our matrices.
"""

import numpy as np
import tensorflow as tf

from tfcv_ops import _loader

try:  # Internal API: tells whether we are inside an XLA-compiled function.
    from tensorflow.python.framework import ops as _tf_ops
    from tensorflow.python.ops import control_flow_util as _control_flow_util
except ImportError:  # pragma: no cover - depends on the TF build.
    _tf_ops = None
    _control_flow_util = None


def wigner_d_offset(l: int) -> int:
    """Returns the column where degree `l` starts: `sum_{k<l} (2k+1)^2`.

    Args:
      l: degree, a non-negative `int`. `wigner_d_offset(l_max + 1)` is the
        packed size `P`.

    Raises:
      ValueError: if `l` is not a non-negative integer.

    Example:
      >>> wigner_d_offset(2)
      10
    """
    l = _check_degree("l", l)
    return l * (4 * l * l - 1) // 3


def wigner_d_block(wigner_d: tf.Tensor, l: int) -> tf.Tensor:
    """Returns degree `l`'s matrices `[J, 2l+1, 2l+1]` from packed `[J, P]`.

    Args:
      wigner_d: packed result `[J, P]` of `wigner_d_matrix`.
      l: degree to extract, `0 <= l <= L`.

    Returns:
      `d^l_{mn}(β_j)` at `[j, m + l, n + l]`.

    Raises:
      ValueError: if `l` is negative or larger than `wigner_d` holds.

    Example:
      >>> d = wigner_d_matrix(2, [0.5])
      >>> wigner_d_block(d, 1).shape
      TensorShape([1, 3, 3])
    """
    l = _check_degree("l", l)
    side = 2 * l + 1
    start = wigner_d_offset(l)
    packed_size = wigner_d.shape[-1]
    if packed_size is not None and start + side * side > packed_size:
        raise ValueError(
            f"`l` must be at most the `l_max` that `wigner_d` was computed "
            f"with, received l={l} for a packed size of {packed_size} "
            f"(which holds degrees up to {_max_degree(packed_size)}); "
            f"compute `wigner_d_matrix` with a larger `l_max`."
        )

    # [J, P] -> [J, (2l+1)^2] -> [J, 2l+1, 2l+1]
    block = wigner_d[:, start : start + side * side]
    return tf.reshape(block, [-1, side, side])


def wigner_d_matrix_reference(l_max: int, beta) -> tf.Tensor:
    """Wigner small-d matrices by Risbo's recursion in plain TensorFlow ops.

    The pure twin of the custom op: same recursion, same layout, float64.
    It runs eagerly, in `tf.function`s, under XLA (`jit_compile=True`) and in
    exported SavedModels, and is differentiable with respect to `beta`.

    Args:
      l_max: largest degree `L`, an `int >= 0`.
      beta: angles β in radians, `[J]`; a float64 tensor or array, or a
        Python sequence of numbers.

    Returns:
      float64 `[J, P]`, the packed `d^l(β)` for `l = 0..L` (see the module
      docstring for the layout).

    Raises:
      ValueError: if `l_max` is not a non-negative integer, or `beta` is not
        1-D or not float64.

    Example:
      >>> d = wigner_d_matrix_reference(1, [0.0])
      >>> d.shape
      TensorShape([1, 10])
    """
    l_max = _check_degree("l_max", l_max)
    beta = _convert_beta(beta)

    # p = cos(β/2), q = sin(β/2), broadcast over the matrix: [J, 1, 1].
    half_angle = 0.5 * beta[:, tf.newaxis, tf.newaxis]
    p = tf.cos(half_angle)
    q = tf.sin(half_angle)

    # d^(0) = [[1]] for every angle: [J, 1, 1].
    current = tf.ones_like(half_angle)
    blocks = [tf.reshape(current, [-1, 1])]  # [J, 1, 1] -> [J, 1]
    for n in range(1, 2 * l_max + 1):
        current = _risbo_step(current, n, p, q)

        # Keep integer degrees l = n / 2: [J, n+1, n+1] -> [J, (n+1)^2].
        if n % 2 == 0:
            blocks.append(tf.reshape(current, [-1, (n + 1) ** 2]))
    return tf.concat(blocks, axis=1)


def wigner_d_matrix(l_max: int, beta, use_custom_op=None) -> tf.Tensor:
    """Wigner small-d matrices `d^l(β)` for `l = 0..l_max`, packed.

    Runs the C++ kernel `TfcvWignerDMatrix` when it is available and allowed,
    otherwise the pure-TensorFlow twin `wigner_d_matrix_reference`; both give
    the same values to about 1e-14. The gradient with respect to `beta` is
    exact on both paths (`d/dβ d^l = -i J_y d^l` for the custom op).

    Args:
      l_max: largest degree `L`, an `int >= 0`.
      beta: angles β in radians, `[J]`; a float64 tensor or array, or a
        Python sequence of numbers.
      use_custom_op: `None` (default) uses the custom op when its library
        loaded and we are not inside an XLA-compiled function (the op has no
        XLA kernel); `True` requires it; `False` uses the pure twin (for
        export: exported models must not need our library).

    Returns:
      float64 `[J, P]`: `d^l_{mn}(β_j)` at `[j, wigner_d_offset(l) +
      (m + l)(2l + 1) + (n + l)]`.

    Raises:
      ValueError: if `l_max` is not a non-negative integer, `beta` is not
        1-D or not float64, `use_custom_op` is not `None`/`True`/`False`,
        or `use_custom_op=True` while the op is unavailable or inside an
        XLA-compiled function.

    Example:
      >>> d = wigner_d_matrix(1, [np.pi / 3])
      >>> round(float(wigner_d_block(d, 1)[0, 1, 1]), 12)  # d^1_{00} = cos β
      0.5
    """
    l_max = _check_degree("l_max", l_max)
    beta = _convert_beta(beta)
    if use_custom_op is None:
        use_custom_op = _loader.default_use_custom_op["value"]
    if use_custom_op is not None and not isinstance(use_custom_op, bool):
        raise ValueError(
            f"`use_custom_op` must be None, True or False, received "
            f"{use_custom_op!r}; pass None to use the custom op when "
            f"available."
        )
    if use_custom_op is False:
        return wigner_d_matrix_reference(l_max, beta)

    if _in_xla_context():
        if use_custom_op:
            raise ValueError(
                "`use_custom_op=True` was passed inside an XLA-compiled "
                "function (`jit_compile=True` or TPU), but the custom op has "
                "no XLA kernel; pass `use_custom_op=None` or `False` to use "
                "the pure-TensorFlow twin there."
            )
        return wigner_d_matrix_reference(l_max, beta)

    op = _loader.library_op("tfcv_wigner_d_matrix")
    if op is None:
        if use_custom_op:
            raise ValueError(
                f"`use_custom_op=True` was passed but the custom-op library "
                f"is not available ({_loader.load_error()}); build it with "
                f"`pip install --no-build-isolation -e .` (see BUILD.md) or "
                f"pass `use_custom_op=None` to fall back to the pure twin."
            )
        return wigner_d_matrix_reference(l_max, beta)
    return op(beta=beta, l_max=l_max)


@tf.RegisterGradient("TfcvWignerDMatrix")
def _wigner_d_matrix_gradient(op, upstream):
    """Gradient of `TfcvWignerDMatrix` with respect to `beta`.

    `d/dβ d^l = -i J_y d^l`; with `c_m = √((l - m)(l + m + 1)) / 2`,
    `d/dβ d^l_{mn} = c_m d^l_{m+1,n} - c_{m-1} d^l_{m-1,n}`, so
    `dLoss/dβ = sum_{l, m<l, n} c_m (g_{mn} d_{m+1,n} - g_{m+1,n} d_{mn})`
    with `g = dLoss/dd`.
    """
    l_max = op.get_attr("l_max")
    wigner_d = op.outputs[0]
    rows, partners, weights = _row_pairs(l_max)

    # Pair every row m < l of every degree with row m + 1: [J, P] -> [J, R].
    upstream_rows = tf.gather(upstream, rows, axis=1)
    upstream_partners = tf.gather(upstream, partners, axis=1)
    wigner_d_rows = tf.gather(wigner_d, rows, axis=1)
    wigner_d_partners = tf.gather(wigner_d, partners, axis=1)

    # Σ c_m (g_{m,n} d_{m+1,n} - g_{m+1,n} d_{m,n}): [J, R] -> [J].
    pair_terms = (
        upstream_rows * wigner_d_partners - upstream_partners * wigner_d_rows
    )
    return [tf.reduce_sum(pair_terms * weights, axis=1)]


def _row_pairs(l_max: int):
    """Packed indices of `(m, n)` with `m < l`, of `(m + 1, n)`, and `c_m`."""
    rows, partners, weights = [], [], []
    for l in range(1, l_max + 1):
        side = 2 * l + 1
        m = np.arange(-l, l)  # rows m = -l..l-1
        c = 0.5 * np.sqrt((l - m) * (l + m + 1.0))
        index = wigner_d_offset(l) + np.arange(2 * l * side)  # [2l * side]
        rows.append(index)
        partners.append(index + side)
        weights.append(np.repeat(c, side))
    if not rows:
        return (
            np.zeros([0], np.int64),
            np.zeros([0], np.int64),
            np.zeros([0], np.float64),
        )
    return (
        np.concatenate(rows),
        np.concatenate(partners),
        np.concatenate(weights),
    )


def _risbo_step(previous: tf.Tensor, n: int, p, q) -> tf.Tensor:
    """One Risbo step `d^(n-1)` `[J, n, n]` -> `d^(n)` `[J, n+1, n+1]`."""
    sqrt_k = np.sqrt(np.arange(n + 1, dtype=np.float64))
    sqrt_a = sqrt_k[:, np.newaxis]  # √a, a = 0..n
    sqrt_b = sqrt_k[np.newaxis, :]  # √b
    sqrt_n_minus_a = sqrt_k[::-1, np.newaxis]  # √(n - a)
    sqrt_n_minus_b = sqrt_k[np.newaxis, ::-1]  # √(n - b)

    # Shifted copies of d^(n-1), zero outside 0..n-1: [J, n, n] -> [J, n+1,
    # n+1] holding d^(n-1)_{a-1,b-1}, _{a-1,b}, _{a,b-1} and _{a,b}.
    above_left = tf.pad(previous, [[0, 0], [1, 0], [1, 0]])
    above = tf.pad(previous, [[0, 0], [1, 0], [0, 1]])
    left = tf.pad(previous, [[0, 0], [0, 1], [1, 0]])
    same = tf.pad(previous, [[0, 0], [0, 1], [0, 1]])

    # n d^(n)_{a,b} = p (√(ab) d_{a-1,b-1} + √((n-a)(n-b)) d_{a,b})
    #               + q (√((n-a)b) d_{a,b-1} - √(a(n-b)) d_{a-1,b})
    diagonal = sqrt_a * sqrt_b * above_left + (
        sqrt_n_minus_a * sqrt_n_minus_b * same
    )
    off_diagonal = sqrt_n_minus_a * sqrt_b * left - (
        sqrt_a * sqrt_n_minus_b * above
    )
    return (p * diagonal + q * off_diagonal) / n


def _check_degree(name: str, value) -> int:
    """Returns `value` as an `int` if it is a non-negative integer."""
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, np.integer))
        or value < 0
    ):
        raise ValueError(
            f"`{name}` must be a non-negative integer (a degree l), received "
            f"{value!r}; pass a Python int such as `{name}=8`."
        )
    return int(value)


def _convert_beta(beta) -> tf.Tensor:
    """Returns `beta` as a float64 tensor `[J]`, or raises `ValueError`."""
    dtype = getattr(beta, "dtype", None)
    if dtype is not None:
        # Tensors, variables and arrays keep their dtype: no silent casts.
        if tf.as_dtype(dtype) != tf.float64:
            raise ValueError(
                f"`beta` must be float64, received dtype "
                f"{tf.as_dtype(dtype).name}; cast it first, e.g. "
                f"`tf.cast(beta, tf.float64)`."
            )
        beta = tf.convert_to_tensor(beta)
    else:
        # Python numbers and sequences are converted to float64.
        beta = tf.convert_to_tensor(np.asarray(beta, dtype=np.float64))
    if beta.shape.rank is not None and beta.shape.rank != 1:
        raise ValueError(
            f"`beta` must be 1-D [J], received shape "
            f"{tuple(beta.shape.as_list())}; flatten it with "
            f"`tf.reshape(beta, [-1])` and reshape the result."
        )
    return beta


def _max_degree(packed_size: int) -> int:
    """Returns the largest `L` with `P(L) <= packed_size`."""
    l = 0
    while wigner_d_offset(l + 2) <= packed_size:
        l += 1
    return l


def _in_xla_context() -> bool:
    """Whether ops built now are compiled by XLA (`jit_compile`, TPU)."""
    if _control_flow_util is None or tf.executing_eagerly():
        return False
    graph = _tf_ops.get_default_graph()
    return bool(_control_flow_util.GraphOrParentsInXlaContext(graph))
