"""Pure-TensorFlow twins of the β-stage primitives (see `primitives`).

Complex data are split into real and imaginary parts stacked on the batch
axis (`[2B, ...]`), so every product is real tensor times real table.
Frequencies `-b < m < b` are centred with `tf.roll` (position `m + b - 1`
of a `M = 2b - 1` axis) so that degree `l` is the square
`[b-1-l, b+l)²`. SO(3) works degree by degree on that square; `expand`
grows the centred array from the inside out ("onion": pad by one, add
degree `l`), so no step touches more than `B J (2l+1)²` entries and nothing
of size `[B, J, P]` is built. S² uses a dense `[J, M, b]` table (zero where
`l < |m|`) and one batched matmul.

Shape letters as in `primitives`; `M = 2b - 1`, `S = 2l + 1`.
"""

import numpy as np
import tensorflow as tf

from tfcv_ops import layout


def _stack_parts(x):
    """complex `[B, ...]` -> real `[2B, ...]` (real parts, then imaginary)."""
    return tf.concat([tf.math.real(x), tf.math.imag(x)], axis=0)


def _unstack_parts(x):
    """real `[2B, ...]` -> complex `[B, ...]`."""
    real, imaginary = tf.split(x, 2, axis=0)
    return tf.complex(real, imaginary)


def _centre(x, bandwidth: int, axes):
    """Frequencies at `m mod N` -> centred `m + b - 1` on `axes` (`M` long)."""
    shift = bandwidth - 1
    rolled = tf.roll(x, shift=[shift] * len(axes), axis=list(axes))
    begin = [0] * x.shape.rank
    size = [-1] * x.shape.rank
    for axis in axes:
        size[axis] = 2 * bandwidth - 1
    return tf.slice(rolled, begin, size)


def _uncentre(x, bandwidth: int, grid_size: int, axes):
    """Inverse of `_centre`: pads with zeros to `N` and rolls back."""
    paddings = [[0, 0]] * x.shape.rank
    for axis in axes:
        paddings[axis] = [0, grid_size - (2 * bandwidth - 1)]
    padded = tf.pad(x, paddings)
    shift = -(bandwidth - 1)
    return tf.roll(padded, shift=[shift] * len(axes), axis=list(axes))


def _so3_table_block(table, l: int):
    """Degree `l` of `[J, P]` as `[J, S, S]`."""
    side = 2 * l + 1
    start = layout.so3_spectrum_size(l)
    # [J, S^2] -> [J, S, S]
    return tf.reshape(table[:, start : start + side * side], [-1, side, side])


def so3_contract(x, table, bandwidth: int):
    """Twin of `primitives.so3_contract`: `[B, J, N, N]` -> `[B, P(b)]`."""
    parts = _stack_parts(x)  # [2B, J, N, N]
    centred = _centre(parts, bandwidth, axes=(2, 3))  # [2B, J, M, M]

    # One degree at a time: Σ_j T[j, (l,m,n)] x[:, j, m, n].
    blocks = []
    for l in range(bandwidth):
        side = 2 * l + 1
        low = bandwidth - 1 - l
        x_l = centred[:, :, low : low + side, low : low + side]
        t_l = _so3_table_block(table, l)
        # [2B, J, S, S] * [J, S, S] -> sum over J -> [2B, S, S]
        y_l = tf.reduce_sum(x_l * t_l, axis=1)
        blocks.append(tf.reshape(y_l, [-1, side * side]))  # [2B, S^2]
    return _unstack_parts(tf.concat(blocks, axis=1))  # [B, P]


def so3_expand(y, table, bandwidth: int, grid_size: int):
    """Twin of `primitives.so3_expand`: `[B, P(b)]` -> `[B, J, N, N]`."""
    parts = _stack_parts(y)  # [2B, P]

    # Onion: centred_l = pad(centred_{l-1}, 1) + T^l y^l, [2B, J, S, S].
    centred = None
    for l in range(bandwidth):
        side = 2 * l + 1
        start = layout.so3_spectrum_size(l)
        # [2B, S^2] -> [2B, S, S]
        y_l = tf.reshape(
            parts[:, start : start + side * side], [-1, side, side]
        )
        t_l = _so3_table_block(table, l)
        # [2B, 1, S, S] * [J, S, S] -> [2B, J, S, S]
        x_l = y_l[:, tf.newaxis] * t_l
        if centred is None:
            centred = x_l
        else:
            centred = x_l + tf.pad(centred, [[0, 0], [0, 0], [1, 1], [1, 1]])
    grid = _uncentre(centred, bandwidth, grid_size, axes=(2, 3))
    return _unstack_parts(grid)  # [B, J, N, N]


def _s2_dense_index(bandwidth: int) -> np.ndarray:
    """`[M, b]`: packed index `l² + l + m` where `l >= |m|`, else `b²`."""
    m = np.arange(-(bandwidth - 1), bandwidth)[:, np.newaxis]
    l = np.arange(bandwidth)[np.newaxis, :]
    return np.where(l >= np.abs(m), l * l + l + m, bandwidth * bandwidth)


def _s2_dense_table(table, bandwidth: int):
    """`[J, b²]` -> `[J, M, b]`, zero where `l < |m|`."""
    padded = tf.pad(table, [[0, 0], [0, 1]])  # [J, b^2 + 1]
    return tf.gather(padded, _s2_dense_index(bandwidth), axis=1)


def s2_contract(x, table, bandwidth: int):
    """Twin of `primitives.s2_contract`: `[B, J, N]` -> `[B, b²]`."""
    parts = _stack_parts(x)  # [2B, J, N]
    centred = _centre(parts, bandwidth, axes=(2,))  # [2B, J, M]
    dense_table = _s2_dense_table(table, bandwidth)  # [J, M, b]

    # Batched over m: [M, 2B, J] x [M, J, b] -> [2B, M, b]
    dense = tf.einsum("bjm,jml->bml", centred, dense_table)

    # (m, l) -> packed l² + l + m: [2B, M * b] -> [2B, b²]
    m, l = _s2_packed_orders(bandwidth)
    flat = tf.reshape(dense, [-1, (2 * bandwidth - 1) * bandwidth])
    packed = tf.gather(flat, (m + bandwidth - 1) * bandwidth + l, axis=1)
    return _unstack_parts(packed)  # [B, b²]


def s2_expand(y, table, bandwidth: int, grid_size: int):
    """Twin of `primitives.s2_expand`: `[B, b²]` -> `[B, J, N]`."""
    parts = _stack_parts(y)  # [2B, b²]
    dense_table = _s2_dense_table(table, bandwidth)  # [J, M, b]

    # Packed -> dense [2B, M, b] with zeros where l < |m|.
    padded = tf.pad(parts, [[0, 0], [0, 1]])  # [2B, b² + 1]
    dense = tf.gather(padded, _s2_dense_index(bandwidth), axis=1)

    # Batched over m: [M, 2B, b] x [M, b, J] -> [2B, J, M]
    centred = tf.einsum("bml,jml->bjm", dense, dense_table)
    grid = _uncentre(centred, bandwidth, grid_size, axes=(2,))
    return _unstack_parts(grid)  # [B, J, N]


def _s2_packed_orders(bandwidth: int):
    """`(m, l)` of each packed S² position, int arrays `[b²]`."""
    l = np.repeat(np.arange(bandwidth), 2 * np.arange(bandwidth) + 1)
    m = np.arange(bandwidth * bandwidth) - l * l - l
    return m, l
