"""The generalized FFT on the sphere S², its inverse, and exact rotations.

Spherical CNNs (Cohen, Geiger, Köhler & Welling, 2018, "Spherical CNNs",
arXiv:1801.10130), Eqs. 8-9 (forward and inverse transform, with
`Y^l_m = D^l_{m0}` restricted to S², footnote 3), Eq. 1 (the rotation
`[L_R f](x) = f(R⁻¹ x)`) and Appendix A (measure `dx = dα/2π · sin β dβ/2`,
total mass 1).

Conventions:
  - Spherical harmonics `Y^l_m(β, α) = D^l_{m0}(α, β, 0) = exp(-i m α)
    d^l_{m0}(β)`, with `d` from `wigner_d_matrix` (Condon-Shortley phase);
    they are orthogonal with `∫ Y^l_m conj(Y^l'_m') dx = δ δ / (2l+1)`.
  - Grid (SOFT, no poles): `β_j = π(2j+1)/(4b)`, `α_k = 2πk/(2b)`; a signal
    is `[..., 2b, 2b]` with axes (β, α).
  - Forward (Eq. 8 with quadrature): `f̂^l_m = Σ_{j,k} w_j / (2b)
    f(β_j, α_k) conj(Y^l_m)`, computed as `tf.signal.ifft` over α, the
    weights `w_j` (`quadrature_weights`) and `s2_contract`.
  - Inverse (Eq. 9): `f = Σ_{l<b} (2l+1) Σ_m f̂^l_m Y^l_m`: `(2l+1)` on the
    spectrum, `s2_expand` and `tf.signal.fft`.
  - Spectra are packed `[..., b²]`, entry `(l, m)` at `l² + m + l`.
  - Grids go up to `b = 256` and spectra to `b = 64` (`grids`): a finer
    grid is transformed to its degrees `l < bandwidth_out <= 64`.
  - A band-limited signal goes grid -> spectrum -> grid unchanged; for other
    grids that round trip is a projection onto the band-limited signals.

Shape letters: `2b` grid side; leading axes `...` are kept.

Deviations from the paper:
  - The paper's Eq. 4 correlation is of real signals, without a complex
    conjugate; `s2_mm` gives `∫ conj(ψ(R⁻¹x)) f(x) dx`, the same for real ψ.
"""

import tensorflow as tf

from tfcv_ops import _transform_common as common
from tfcv_ops import grids
from tfcv_ops import layout
from tfcv_ops import primitives
from tfcv_ops import tables

# Spectra stop at b = 64, grids at b = 256 (see the NOTE in `grids`).
_MAX = grids.S2_MAX_BANDWIDTH
_GRID_MAX = grids.S2_MAX_GRID_BANDWIDTH


def s2_fft(
    x,
    bandwidth_out=None,
    use_custom_op=None,
    allow_low_precision: bool = False,
) -> tf.Tensor:
    """S² Fourier coefficients `f̂^l_m` of a grid signal (Eq. 8).

    Args:
      x: `[..., 2b, 2b]` signal on the grid of `s2_grid(b)`, axes (β, α),
        `b <= S2_MAX_GRID_BANDWIDTH` (256);
        float32/float64/complex64/complex128.
      bandwidth_out: degrees kept, `l < bandwidth_out`, at most
        `S2_MAX_BANDWIDTH` (64); `None` (default) means `b`, allowed for
        `b <= 64` only. Smaller truncates, larger pads with zeros.
      use_custom_op: `None`, `True` or `False` (see `set_use_custom_op`).
      allow_low_precision: if `True`, float16/bfloat16 inputs are computed
        in float32 instead of being refused. Default `False`.

    Returns:
      `[..., bandwidth_out²]`, complex64 for float32/complex64 (and low
      precision) input, complex128 for float64/complex128.

    Raises:
      ValueError: if the last two axes are not equal, even and static, the
        grid bandwidth is above `S2_MAX_GRID_BANDWIDTH`, `bandwidth_out`
        is above `S2_MAX_BANDWIDTH` (or omitted for a grid above it), or
        the dtype is refused.

    Example:
      >>> s2_fft(tf.ones([8, 8])).shape
      TensorShape([16])
      >>> s2_fft(tf.ones([256, 256]), bandwidth_out=32).shape
      TensorShape([1024])
    """
    x, _ = common.to_complex(x, "x", allow_low_precision)
    bandwidth = common.grid_bandwidth(x, 2, _GRID_MAX, "(β, α)")
    if bandwidth_out is None and bandwidth > _MAX:
        raise ValueError(
            f"`bandwidth_out` must be given for an S² grid of bandwidth "
            f"{bandwidth} (shape {tuple(x.shape.as_list())}): spectra stop "
            f"at b = {_MAX} while grids go up to b = {_GRID_MAX}; pass "
            f"`bandwidth_out` <= {_MAX}, e.g. `bandwidth_out={_MAX}`."
        )
    bandwidth_out = common.output_bandwidth(bandwidth_out, bandwidth, _MAX)
    degrees = min(bandwidth, bandwidth_out)
    grid, leading = common.flatten(x, 2)  # [B, J, N]

    # FFT over α: Σ_k f e^{+i m α_k} / N, at m mod N.
    spectral = tf.signal.ifft(grid)
    weights = common.weight_column(bandwidth, 1)  # [J, 1]
    spectral *= tf.cast(weights, spectral.dtype)

    # β stage: Σ_j w_j d^l_{m0}(β_j) F[j, m]. The C++ S² kernels index in
    # int64 and check only N >= 2 b_spec, so grids up to b = 256 run on
    # the custom op as well as on the twin.
    table = tables.s2_table(
        bandwidth, degrees, common.real_dtype(spectral.dtype)
    )
    y = primitives.s2_contract(spectral, table, degrees, use_custom_op)
    y = common.resize_spectrum(y, layout.s2_spectrum_size(bandwidth_out))
    return common.unflatten(y, leading)  # [..., bandwidth_out²]


def s2_ifft(
    x,
    bandwidth_out=None,
    real_output: bool = False,
    use_custom_op=None,
    allow_low_precision: bool = False,
) -> tf.Tensor:
    """Grid signal `f = Σ_l (2l+1) Σ_m f̂^l_m Y^l_m` (Eq. 9).

    Args:
      x: packed spectrum `[..., b²]` with `b <= S2_MAX_BANDWIDTH` (64);
        complex64/complex128 (real float spectra are promoted).
      bandwidth_out: bandwidth of the output grid `[..., 2 bandwidth_out,
        2 bandwidth_out]`, at most `S2_MAX_GRID_BANDWIDTH` (256); `None`
        (default) means `b`. Smaller drops degrees `l >= bandwidth_out`;
        larger samples the same signal more finely.
      real_output: if `True`, return the real part (for spectra of real
        signals). Default `False`.
      use_custom_op: `None`, `True` or `False`.
      allow_low_precision: as in `s2_fft`.

    Returns:
      `[..., 2b', 2b']` (β, α), complex64/complex128, or float32/float64
      with `real_output=True`.

    Raises:
      ValueError: if the last axis is no square `b²`, `b` is above
        `S2_MAX_BANDWIDTH`, `bandwidth_out` is above
        `S2_MAX_GRID_BANDWIDTH`, or the dtype is refused.

    Example:
      >>> s2_ifft(tf.ones([16], tf.complex64)).shape
      TensorShape([8, 8])
    """
    x, _ = common.to_complex(x, "x", allow_low_precision)
    bandwidth = common.spectrum_bandwidth(x, layout.s2_bandwidth_of, "b²", _MAX)
    bandwidth_out = common.output_bandwidth(bandwidth_out, bandwidth, _GRID_MAX)
    degrees = min(bandwidth, bandwidth_out)
    grid_size = 2 * bandwidth_out
    y, leading = common.flatten(x, 1)  # [B, b²]
    y = common.resize_spectrum(y, layout.s2_spectrum_size(degrees))

    # (2l + 1) f̂^l, then the β stage: Σ_l (2l+1) d^l_{m0}(β_j) f̂^l_m.
    y *= tf.cast(common.degree_factors(degrees, so3=False), y.dtype)
    table = tables.s2_table(bandwidth_out, degrees, common.real_dtype(y.dtype))
    spectral = primitives.s2_expand(y, table, grid_size, use_custom_op)

    # Σ_m G[j, m] e^{-i m α}: [B, J, N]
    grid = tf.signal.fft(spectral)
    if real_output:
        grid = tf.math.real(grid)
    return common.unflatten(grid, leading)


def s2_rotate(
    x, alpha, beta, gamma, use_custom_op=None, allow_low_precision=False
) -> tf.Tensor:
    """Rotates a band-limited S² signal: `[L_R f](x) = f(R⁻¹ x)` (Eq. 1).

    With `R = R(α, β, γ)`, `Y^l(R⁻¹ x) = D^l(R)^† Y^l(x)` (as row-vector
    components `Y^l_m = D^l_{m0}`), so
    `f(R⁻¹ x) = Σ_l (2l+1) Σ_k [conj(D^l(R)) f̂^l]_k Y^l_k(x)`: the rotated
    spectrum is `conj(D^l(R)) · f̂^l` per degree. Exact for signals of
    degree `l < b`; other grids are first projected onto them.

    Args:
      x: `[..., 2b, 2b]` signal (β, α), float or complex, `b <=
        S2_MAX_BANDWIDTH` (64: the rotation needs the whole spectrum).
      alpha: α of `R`, radians; a Python number or scalar tensor.
      beta: β of `R`, radians.
      gamma: γ of `R`, radians.
      use_custom_op: `None`, `True` or `False`.
      allow_low_precision: as in `s2_fft`.

    Returns:
      The rotated signal, same shape and dtype as `x` (real stays real).

    Raises:
      ValueError: as `s2_fft`, and for grids above `S2_MAX_BANDWIDTH`.

    Example:
      >>> s2_rotate(tf.ones([8, 8]), 0.1, 0.2, 0.3).shape
      TensorShape([8, 8])
    """
    x = tf.convert_to_tensor(x)
    dtype = x.dtype
    common.grid_bandwidth(x, 2, _MAX, "(β, α)")
    spectrum = s2_fft(x, None, use_custom_op, allow_low_precision)
    bandwidth = layout.s2_bandwidth_of(spectrum.shape[-1])
    flat, leading = common.flatten(spectrum, 1)  # [B, b²]

    big_d = common.wigner_big_d(bandwidth, alpha, beta, gamma, use_custom_op)
    rotated = common.rotate_spectrum(flat, big_d, bandwidth, so3=False)
    rotated = common.unflatten(rotated, leading)
    grid = s2_ifft(rotated, None, not dtype.is_complex, use_custom_op)
    return tf.cast(grid, dtype)
