"""Shared pieces of the spherical layers: checks, kernel tables, dtypes.

Spherical CNNs (Cohen, Geiger, Köhler & Welling, 2018, arXiv:1801.10130),
§3-4 and Fig. 2. A filter made of point masses `ψ = Σ_p w_p δ_{x_p}` has
the spectrum `ψ̂^l = Σ_p w_p conj(D^l(R_p))` (Eq. 8 applied to a sum of
deltas), restricted to the column `n = 0` on S²: a constant complex table
`[N, spectrum]` built once per layer, contracted with the weights in
`call` (the DFT of Fig. 2).

Shape letters: `N` kernel grid points, `b` bandwidth, `P = b(4b² - 1)/3`.

Deviations from the paper:
  None.
"""

import math

import numpy as np
import tensorflow as tf

import tfcv_ops


def check_bandwidths(bandwidth_in, bandwidth_out, grid_rank: int = 3) -> tuple:
    """Returns both bandwidths as ints; `1 <= bandwidth_out <= bandwidth_in`.

    On SO(3) inputs (`grid_rank=3`, the default) both are at most
    `SO3_MAX_BANDWIDTH` (64). On S² inputs (`grid_rank=2`) the input grid
    may be finer, up to `S2_MAX_GRID_BANDWIDTH` (256), since only its
    degrees `l < bandwidth_out` are transformed; `bandwidth_out` is still
    at most 64 (the SO(3) output).
    """
    grids = tfcv_ops.grids
    maximum_in = grids.SO3_MAX_BANDWIDTH
    if grid_rank == 2:
        maximum_in = grids.S2_MAX_GRID_BANDWIDTH
    for name, value, maximum in (
        ("bandwidth_in", bandwidth_in, maximum_in),
        ("bandwidth_out", bandwidth_out, grids.SO3_MAX_BANDWIDTH),
    ):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, np.integer))
            or not 1 <= value <= maximum
        ):
            raise ValueError(
                f"`{name}` must be an integer in 1...{maximum} (degrees "
                f"l < b), received {value!r}; pass e.g. `{name}=8`."
            )
    if bandwidth_out > bandwidth_in:
        raise ValueError(
            f"`bandwidth_out` must be <= `bandwidth_in`, received "
            f"bandwidth_out={bandwidth_out} > bandwidth_in={bandwidth_in}: "
            f"the input holds no degrees l >= {bandwidth_in}, so a larger "
            f"output would only be a finer resampling; pass "
            f"bandwidth_out <= {bandwidth_in}."
        )
    return int(bandwidth_in), int(bandwidth_out)


def _grid_points_as_matrices(grid: np.ndarray) -> np.ndarray:
    """ZYZ rotations `[N, 3, 3]` of (β, α, γ) rows, or S² points `[N, 3]`."""
    beta, alpha = grid[:, 0], grid[:, 1]
    if grid.shape[1] == 2:
        return np.stack(
            [
                np.sin(beta) * np.cos(alpha),
                np.sin(beta) * np.sin(alpha),
                np.cos(beta),
            ],
            axis=-1,
        )
    gamma = grid[:, 2]

    def about_z(angle):
        c, s, zero, one = np.cos(angle), np.sin(angle), 0 * angle, 1 + 0 * angle
        return np.stack([c, -s, zero, s, c, zero, zero, zero, one], -1).reshape(
            -1, 3, 3
        )

    c, s, zero, one = np.cos(beta), np.sin(beta), 0 * beta, 1 + 0 * beta
    about_y = np.stack([c, zero, s, zero, one, zero, -s, zero, c], -1)
    return about_z(alpha) @ about_y.reshape(-1, 3, 3) @ about_z(gamma)


def check_kernel_grid(kernel_grid, columns: int) -> np.ndarray:
    """Returns `kernel_grid` as float64 `[N, columns]` or raises ValueError.

    Two rows naming the same rotation (SO(3), `columns == 3`) or the same
    point of the sphere (S², `columns == 2`) are refused: their weights
    would act as one. Different angles name one rotation at the poles
    (gimbal lock): at β = 0 only α + γ matters, at β = π only α - γ, and
    on S² the poles ignore α.
    """
    names = "(β, α)" if columns == 2 else "(β, α, γ)"
    try:
        grid = np.asarray(kernel_grid, dtype=np.float64)
    except (TypeError, ValueError):
        grid = None
    if (
        grid is None
        or grid.ndim != 2
        or grid.shape[0] < 1
        or grid.shape[1] != columns
        or not np.all(np.isfinite(grid))
    ):
        shape = None if grid is None else grid.shape
        raise ValueError(
            f"`kernel_grid` must be a finite [N, {columns}] array of angles "
            f"{names} with N >= 1, received shape {shape}; build one with "
            f"`tfcv.layers.spherical.kernel_grids`."
        )
    outside = np.flatnonzero((grid[:, 0] < 0) | (grid[:, 0] > np.pi + 1e-12))
    if outside.size:
        raise ValueError(
            f"`kernel_grid` row {int(outside[0])} {grid[outside[0]].tolist()}"
            f" has β outside [0, π] ({outside.size} such row(s)); angles "
            f"are in radians, β first ({names})."
        )
    # [N, 3, 3] or [N, 3] -> [N, N] distances between the points.
    points = _grid_points_as_matrices(grid).reshape(len(grid), -1)
    distance = np.linalg.norm(points[:, None] - points[None], axis=-1)
    first, second = np.nonzero(np.triu(distance < 1e-9, k=1))
    if first.size:
        i, j = int(first[0]), int(second[0])
        if columns == 3:
            what = "rotation"
            why = (
                "gimbal lock: at β = 0 only α + γ matters, at β = π only α - γ"
            )
        else:
            what, why = "point of the sphere", "at β = 0 or π, α is free"
        raise ValueError(
            f"`kernel_grid` rows {i} {grid[i].tolist()} and {j} "
            f"{grid[j].tolist()} are the same {what} ({first.size} such "
            f"pair(s)): at the poles the angles are not unique ({why}); "
            f"drop the repeats."
        )
    return grid


def check_grid_input(layer, input_shape, grid_rank: int, bandwidth) -> int:
    """Checks `[B, 2b, ..., 2b, C]`; returns C. `bandwidth=None`: any even."""
    shape = tf.TensorShape(input_shape)
    letters = ", ".join(["2b"] * grid_rank)
    sides = shape.as_list()[1:-1] if shape.rank else []
    expected = None
    if bandwidth is not None:
        expected = (None,) + (2 * bandwidth,) * grid_rank + (shape[-1],)
    if (
        shape.rank != grid_rank + 2
        or shape[-1] is None
        or None in sides
        or len(set(sides)) != 1
        or sides[0] % 2
        or (bandwidth is not None and sides[0] != 2 * bandwidth)
    ):
        wanted = expected if expected else f"[B, {letters}, C]"
        raise ValueError(
            f"{type(layer).__name__} expects inputs [B, {letters}, C] on the "
            f"SOFT grid with a known channel axis, received shape "
            f"{tuple(shape.as_list()) if shape.rank else None}, expected "
            f"{wanted}; resample the signal to that grid."
        )
    return int(shape[-1])


def check_channels(layer, inputs, channels: int) -> None:
    """Raises if the channel axis changed since `build`."""
    if inputs.shape[-1] != channels:
        raise ValueError(
            f"{type(layer).__name__} was built for {channels} input "
            f"channels, received shape {tuple(inputs.shape.as_list())}; "
            f"make a new layer for inputs with {inputs.shape[-1]} channels."
        )


def fft_dtype(layer):
    """float64 under a float64 policy, else float32 (the ops refuse less)."""
    if tf.as_dtype(layer.compute_dtype) == tf.float64:
        return tf.float64
    return tf.float32


def _small_d(l_max: int, beta, columns=None) -> np.ndarray:
    """`d^l_{mn}(β_p)` packed `[N, P(l_max + 1)]`, float64, computed eagerly.

    Evaluated once per distinct β (equatorial grids share one) and cut to
    `columns` of the packed axis before being copied to every point.
    """
    distinct, point_row = np.unique(np.asarray(beta), return_inverse=True)
    with tf.init_scope():
        small_d = tfcv_ops.wigner_d_matrix(l_max, distinct).numpy()
    if columns is not None:
        small_d = small_d[:, columns]
    return small_d[point_row.reshape(-1)]  # [distinct, P] -> [N, P]


def _packed_orders(bandwidth: int):
    """`(l, m, n)` of every packed SO(3) position, int arrays `[P]`."""
    l, m, n = [], [], []
    for degree in range(bandwidth):
        orders = np.arange(-degree, degree + 1)
        l.append(np.full((2 * degree + 1) ** 2, degree))
        m.append(np.repeat(orders, 2 * degree + 1))
        n.append(np.tile(orders, 2 * degree + 1))
    return np.concatenate(l), np.concatenate(m), np.concatenate(n)


def so3_kernel_table(grid: np.ndarray, bandwidth: int) -> np.ndarray:
    """`conj(D^l_{mn}(α_p, β_p, γ_p))`, complex128 `[N, P(bandwidth)]`."""
    small_d = _small_d(bandwidth - 1, grid[:, 0])  # [N, P]
    _, m, n = _packed_orders(bandwidth)

    # conj(e^{-imα} d e^{-inγ}) = e^{+i(mα + nγ)} d: [N, 1] x [P] -> [N, P]
    phase = np.outer(grid[:, 1], m) + np.outer(grid[:, 2], n)
    return small_d * np.exp(1j * phase)


def s2_kernel_table(grid: np.ndarray, bandwidth: int) -> np.ndarray:
    """`conj(D^l_{n0}(α_p, β_p, 0))`, complex128 `[N, bandwidth²]`."""
    _, m, n = _packed_orders(bandwidth)
    columns = np.flatnonzero(n == 0)  # (l, m) in S² packed order: [b²]
    small_d = _small_d(bandwidth - 1, grid[:, 0], columns)  # [N, b²]

    # conj(e^{-imα} d_{m0}) = e^{+imα} d_{m0}: [N, 1] x [b²] -> [N, b²]
    return small_d * np.exp(1j * np.outer(grid[:, 1], m[columns]))


def kernel_spectrum(kernel, table_real, table_imag):
    """`Σ_p w[c, o, p] T[p, :]`: `[C, O, N] x [N, S] -> [C, O, S]` complex."""
    real = tf.einsum("cop,ps->cos", kernel, table_real)
    imag = tf.einsum("cop,ps->cos", kernel, table_imag)
    return tf.complex(real, imag)


def default_stddev(channels: int, points: int) -> float:
    """`1/sqrt(C N)`: unit output variance for unit-variance inputs."""
    return 1.0 / math.sqrt(channels * points)


def haar_weights(bandwidth: int) -> np.ndarray:
    """Normalised Haar quadrature on the SO(3) grid, `[2b, 1, 1, 1]`.

    `w_j / (2b)²`, summing to 1 over the (β, α, γ) grid; broadcasts over
    `[B, 2b, 2b, 2b, C]`.
    """
    weights = tfcv_ops.quadrature_weights(bandwidth) / (2 * bandwidth) ** 2
    return weights.reshape([-1, 1, 1, 1])
