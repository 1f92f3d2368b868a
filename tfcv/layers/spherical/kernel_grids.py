"""Kernel grids: where the point-mass filters of the spherical layers sit.

Spherical CNNs (Cohen, Geiger, Köhler & Welling, 2018, "Spherical CNNs",
arXiv:1801.10130), §3 and Fig. 2: the filters are locally supported, given
by their values at a few points near the north pole (S²) or near the
identity rotation (SO(3)), and transformed to the spectrum by a direct sum
(a DFT) rather than an FFT. The argument names follow the authors' public
code; the code here is our own.

Points are rows of float64 arrays: `[N, 2]` with columns (β, α) on S², and
`[N, 3]` with columns (β, α, γ) for the ZYZ rotation `Z(α) Y(β) Z(γ)` on
SO(3) (the axis order of the grids of `tfcv_ops`).

  - `s2_near_identity_grid`: `n_beta` rings `β_i = (i + 1) max_beta /
    n_beta` of `n_alpha` points `α_k = 2πk / n_alpha` (24 by default).
  - `so3_near_identity_grid`: the same rings; for each point
    `γ = γ' - α` with `γ'` in `linspace(-max_gamma, max_gamma, n_gamma)`, so
    every rotation of a ring is the same distance from the identity
    (`Z(α) Y(β) Z(-α)` tilts the pole by β towards α, then turns by γ');
    72 rotations by default: 20·40·72 = 57,600 weights in the MNIST
    model's SO(3) layer (§5.2).
  - `s2_equatorial_grid`, `so3_equatorial_grid`: rings around the equator,
    `β` in `linspace(π/2 - max_beta, π/2 + max_beta, n_beta)` (and γ in
    `linspace(-max_gamma, max_gamma, n_gamma)` on SO(3)).

Shape letters: `N` number of grid points.

Deviations from the paper:
  - The paper gives no grid sizes; the defaults are those of the authors'
    code. A `linspace` of one value is its centre (β = π/2, γ' = 0) rather
    than its start, so one-value grids are symmetric.
"""

import math
import numbers

import numpy as np


def _check_count(value, name: str) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < 1
    ):
        raise ValueError(
            f"`{name}` must be an integer >= 1 (a number of grid samples), "
            f"received {value!r}; pass e.g. `{name}=4`."
        )
    return int(value)


def _check_angle(value, name: str, low: float, high: float, strict: bool):
    """Returns `value` as a float if `low (<=|<) value <= high`."""
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > low if strict else value >= low)
        and value <= high
    )
    if not ok:
        bound = "<" if strict else "<="
        raise ValueError(
            f"`{name}` must be a finite angle in radians with {low:.4g} "
            f"{bound} {name} <= {high:.4g}, received {value!r}; pass e.g. "
            f"`{name}=math.pi / 8`."
        )
    return float(value)


def _centred_linspace(centre: float, half_width: float, count: int):
    if count == 1:
        return np.array([centre])
    return np.linspace(centre - half_width, centre + half_width, count)


def _rings(max_beta: float, n_beta: int) -> np.ndarray:
    return (np.arange(n_beta) + 1.0) * max_beta / n_beta


def _alphas(n_alpha: int) -> np.ndarray:
    return 2.0 * np.pi * np.arange(n_alpha) / n_alpha


def s2_near_identity_grid(
    max_beta: float = math.pi / 8, n_alpha: int = 8, n_beta: int = 3
) -> np.ndarray:
    """Rings of points around the north pole of S².

    Args:
      max_beta: colatitude of the outer ring, `0 < max_beta <= π`
        (default π/8).
      n_alpha: points per ring, `>= 1` (default 8).
      n_beta: number of rings, `>= 1` (default 3).

    Returns:
      float64 `[n_beta · n_alpha, 2]`, columns (β, α), ring by ring.

    Raises:
      ValueError: if an argument is outside its range.

    Example:
      >>> s2_near_identity_grid().shape
      (24, 2)
    """
    max_beta = _check_angle(max_beta, "max_beta", 0.0, math.pi, True)
    n_alpha = _check_count(n_alpha, "n_alpha")
    n_beta = _check_count(n_beta, "n_beta")

    # [n_beta, n_alpha] meshes -> [N, 2]
    beta, alpha = np.meshgrid(_rings(max_beta, n_beta), _alphas(n_alpha))
    return np.stack([beta.T.ravel(), alpha.T.ravel()], axis=1)


def so3_near_identity_grid(
    max_beta: float = math.pi / 8,
    max_gamma: float = math.pi / 8,
    n_alpha: int = 8,
    n_beta: int = 3,
    n_gamma: int = 3,
) -> np.ndarray:
    """Rotations near the identity, `Z(α) Y(β) Z(γ' - α)`.

    Args:
      max_beta: tilt of the outer ring, `0 < max_beta <= π` (default π/8).
      max_gamma: largest turn `|γ'|`, `0 <= max_gamma <= π` (default π/8).
      n_alpha: tilt directions per ring, `>= 1` (default 8).
      n_beta: number of rings, `>= 1` (default 3).
      n_gamma: turns per direction, `>= 1` (default 3; one turn is γ' = 0).

    Returns:
      float64 `[n_beta · n_alpha · n_gamma, 3]`, columns (β, α, γ).

    Raises:
      ValueError: if an argument is outside its range.

    Example:
      >>> so3_near_identity_grid().shape
      (72, 3)
    """
    max_beta = _check_angle(max_beta, "max_beta", 0.0, math.pi, True)
    max_gamma = _check_angle(max_gamma, "max_gamma", 0.0, math.pi, False)
    n_alpha = _check_count(n_alpha, "n_alpha")
    n_beta = _check_count(n_beta, "n_beta")
    n_gamma = _check_count(n_gamma, "n_gamma")
    turns = _centred_linspace(0.0, max_gamma, n_gamma)

    # [n_beta, n_alpha, n_gamma] meshes; γ = γ' - α.
    beta, alpha, turn = np.meshgrid(
        _rings(max_beta, n_beta), _alphas(n_alpha), turns, indexing="ij"
    )
    return np.stack(
        [beta.ravel(), alpha.ravel(), (turn - alpha).ravel()], axis=1
    )


def s2_equatorial_grid(
    max_beta: float = 0.0, n_alpha: int = 32, n_beta: int = 1
) -> np.ndarray:
    """Rings of points around the equator of S².

    Args:
      max_beta: half-width of the band around β = π/2,
        `0 <= max_beta < π/2` (default 0).
      n_alpha: points per ring, `>= 1` (default 32).
      n_beta: number of rings, `>= 1` (default 1).

    Returns:
      float64 `[n_beta · n_alpha, 2]`, columns (β, α).

    Raises:
      ValueError: if an argument is outside its range.

    Example:
      >>> s2_equatorial_grid().shape
      (32, 2)
    """
    max_beta = _check_angle(max_beta, "max_beta", 0.0, math.pi / 2, False)
    if max_beta == math.pi / 2:
        raise ValueError(
            "`max_beta` must be < π/2 for an equatorial grid, received "
            f"{max_beta!r}: its outer rings would sit on the poles, where "
            "every α is the same point; pass a smaller `max_beta`."
        )
    n_alpha = _check_count(n_alpha, "n_alpha")
    n_beta = _check_count(n_beta, "n_beta")
    rings = _centred_linspace(math.pi / 2, max_beta, n_beta)

    # [n_beta, n_alpha] meshes -> [N, 2]
    beta, alpha = np.meshgrid(rings, _alphas(n_alpha), indexing="ij")
    return np.stack([beta.ravel(), alpha.ravel()], axis=1)


def so3_equatorial_grid(
    max_beta: float = 0.0,
    max_gamma: float = math.pi / 8,
    n_alpha: int = 32,
    n_beta: int = 1,
    n_gamma: int = 2,
) -> np.ndarray:
    """Rotations `Z(α) Y(β) Z(γ)` with β near π/2.

    Args:
      max_beta: half-width of the band around β = π/2,
        `0 <= max_beta < π/2` (default 0).
      max_gamma: largest `|γ|`, `0 <= max_gamma <= π` (default π/8).
      n_alpha: values of α, `>= 1` (default 32).
      n_beta: values of β, `>= 1` (default 1).
      n_gamma: values of γ, `>= 1` (default 2).

    Returns:
      float64 `[n_beta · n_alpha · n_gamma, 3]`, columns (β, α, γ).

    Raises:
      ValueError: if an argument is outside its range.

    Example:
      >>> so3_equatorial_grid().shape
      (64, 3)
    """
    points = s2_equatorial_grid(max_beta, n_alpha, n_beta)
    max_gamma = _check_angle(max_gamma, "max_gamma", 0.0, math.pi, False)
    n_gamma = _check_count(n_gamma, "n_gamma")
    gammas = _centred_linspace(0.0, max_gamma, n_gamma)

    # [N_s2, 2] x [n_gamma] -> [N_s2 · n_gamma, 3]
    repeated = np.repeat(points, n_gamma, axis=0)
    tiled = np.tile(gammas, len(points))[:, np.newaxis]
    return np.concatenate([repeated, tiled], axis=1)
