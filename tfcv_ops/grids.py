"""SOFT sampling grids on S² and SO(3), quadrature weights, bandwidth limits.

Spherical CNNs (Cohen, Geiger, Köhler & Welling, 2018, "Spherical CNNs",
arXiv:1801.10130), Appendix A (ZYZ Euler angles, Eqs. 10-13: the normalised
Haar measures) and §4 (the grids of Kostelec & Rockmore's SOFT). For a
bandwidth `b` (degrees `l < b`) the equiangular grid without poles is

    β_j = π (2j + 1) / (4b),    α_k = γ_k = 2π k / (2b),    j, k < 2b,

and an S² signal is stored `[..., 2b, 2b]` (β, α), an SO(3) signal
`[..., 2b, 2b, 2b]` (β, α, γ). The β integral with the normalised measure
`sin β dβ / 2` is done with the weights

    w_j = (1/b) sin(β_j) Σ_{k<b} sin((2k + 1) β_j) / (2k + 1),

which sum to 1 and integrate products of two band-limited functions exactly
(they are the Driscoll-Healy / SOFT weights divided by 2).

Shape letters: `2b` grid side, `J = 2b` number of β samples.

Deviations from the paper:
  None.
"""

import numpy as np

# NOTE: two limits. Spectra (S² and SO(3)) stop at b = 64: the SO(3)
# β-stage stores one float64 table [2b, P(b)] with P(b) = b (4b² - 1) / 3,
# 358 MB at b = 64 (plus 179 MB for its float32 copy), 1.8 GB at b = 96,
# 5.7 GB at b = 128, and S² spectra of bandwidth b become SO(3) spectra of
# the same b in a correlation. The int32 index width would allow b <= 168
# (2b P(b) < 2^31 table entries) and SO(3) grids up to b = 511 ((2b)³ <
# 2^31 samples per signal); memory binds first. An S² *grid* only
# needs the S² table [2 b_grid, b_spec²] with b_spec <= 64: 17 MB in
# float64 at b_grid = 256 (built in chunks of angles, so the Wigner-d rows
# it is cut from never exceed ~64 MB). Its other costs grow with the grid:
# one channel is (2 b_grid)² samples (int32 would bind only at b_grid =
# 23170), a [16, 512, 512, 6] float32 batch is 100 MB at b_grid = 256, and
# the table build takes about 1 s there. We stop S² grids at 256, twice
# the paper's largest (b = 128, §5.3), the size that is tested.
S2_MAX_BANDWIDTH = 64
S2_MAX_GRID_BANDWIDTH = 256
SO3_MAX_BANDWIDTH = 64

SPECTRUM_REASON = (
    "the β-stage stores a float64 Wigner-d table of 2b × b(4b² - 1)/3 "
    "entries (358 MB at b = 64, 5.7 GB at b = 128); the int32 index width "
    "alone would allow b <= 168"
)
GRID_REASON = (
    "S² grids are supported and tested up to a 2b × 2b = 512 × 512 grid "
    "(twice the paper's b = 128); their spectra stop at "
    f"b = {S2_MAX_BANDWIDTH}"
)


def check_bandwidth(name: str, value, maximum: int = SO3_MAX_BANDWIDTH) -> int:
    """Returns `value` as an `int` if it is a bandwidth in `1..maximum`.

    Args:
      name: argument name used in the error message.
      value: the bandwidth `b` to check.
      maximum: largest allowed value (`S2_MAX_BANDWIDTH`,
        `SO3_MAX_BANDWIDTH` or `S2_MAX_GRID_BANDWIDTH`).

    Raises:
      ValueError: if `value` is not an integer (bools excluded), is below 1,
        or is above `maximum` (the message gives the reason for the limit).

    Example:
      >>> check_bandwidth("b", 8)
      8
    """
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, np.integer))
        or value < 1
    ):
        raise ValueError(
            f"`{name}` must be a positive integer (a bandwidth b: degrees "
            f"l < b), received {value!r}; pass a Python int such as "
            f"`{name}=8`."
        )
    if value > maximum:
        reason = GRID_REASON if maximum > SO3_MAX_BANDWIDTH else SPECTRUM_REASON
        raise ValueError(
            f"`{name}` must be at most {maximum}, received {value}: "
            f"{reason}; use a bandwidth <= {maximum}."
        )
    return int(value)


def _beta(b: int) -> np.ndarray:
    """β_j = π (2j + 1) / (4b), j < 2b: float64 `[2b]`."""
    return np.pi * (2.0 * np.arange(2 * b) + 1.0) / (4.0 * b)


def _alpha(b: int) -> np.ndarray:
    """α_k = 2π k / (2b), k < 2b: float64 `[2b]`."""
    return 2.0 * np.pi * np.arange(2 * b) / (2.0 * b)


def s2_grid(b: int):
    """The SOFT grid on S² for bandwidth `b`.

    Args:
      b: bandwidth, `1 <= b <= S2_MAX_GRID_BANDWIDTH` (256; spectra of
        grids above `S2_MAX_BANDWIDTH` = 64 are truncated, see `s2_fft`).

    Returns:
      `(beta, alpha)`, float64 arrays `[2b]` each: `x[..., j, k]` is the
      signal at colatitude `beta[j]` and longitude `alpha[k]`.

    Raises:
      ValueError: if `b` is not an integer in
        `1..S2_MAX_GRID_BANDWIDTH`.

    Example:
      >>> beta, alpha = s2_grid(2)
      >>> beta.shape, alpha.shape
      ((4,), (4,))
    """
    b = check_bandwidth("b", b, S2_MAX_GRID_BANDWIDTH)
    return _beta(b), _alpha(b)


def so3_grid(b: int):
    """The SOFT grid on SO(3) for bandwidth `b` (ZYZ Euler angles).

    Args:
      b: bandwidth, `1 <= b <= SO3_MAX_BANDWIDTH`.

    Returns:
      `(beta, alpha, gamma)`, float64 arrays `[2b]` each: `x[..., j, k1, k2]`
      is the signal at the rotation `Z(alpha[k1]) Y(beta[j]) Z(gamma[k2])`.

    Raises:
      ValueError: if `b` is not an integer in `1..SO3_MAX_BANDWIDTH`.

    Example:
      >>> beta, alpha, gamma = so3_grid(2)
      >>> gamma.shape
      (4,)
    """
    b = check_bandwidth("b", b, SO3_MAX_BANDWIDTH)
    return _beta(b), _alpha(b), _alpha(b)


def quadrature_weights(b: int) -> np.ndarray:
    """Weights `w_j` of the β integral `∫ g(β) sin β dβ / 2 ≈ Σ_j w_j g(β_j)`.

    Exact when `g` is a product of two functions of degree `< b`, e.g.
    `d^l_{mn} d^{l'}_{mn}` with `l, l' < b`.

    Args:
      b: bandwidth, `1 <= b <= S2_MAX_GRID_BANDWIDTH` (the largest grid,
        S² or SO(3)).

    Returns:
      float64 `[2b]`, summing to 1.

    Raises:
      ValueError: if `b` is not an integer in the allowed range.

    Example:
      >>> round(float(quadrature_weights(4).sum()), 12)
      1.0
    """
    b = check_bandwidth("b", b, S2_MAX_GRID_BANDWIDTH)
    beta = _beta(b)
    odd = 2.0 * np.arange(b) + 1.0  # 2k + 1, k < b

    # Σ_k sin((2k+1) β_j) / (2k+1): [2b, 1] x [b] -> [2b, b] -> [2b]
    series = np.sum(np.sin(beta[:, np.newaxis] * odd) / odd, axis=1)
    return np.sin(beta) * series / b
