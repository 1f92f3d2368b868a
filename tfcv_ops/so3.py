"""The generalized FFT on SO(3), its inverse, and exact rotations.

Spherical CNNs (Cohen, Geiger, Köhler & Welling, 2018, "Spherical CNNs",
arXiv:1801.10130), Eqs. 8-9 (forward and inverse transform), Eq. 5 (the
rotation `[L_R f](Q) = f(R⁻¹ Q)`), Appendix A (Haar measure `dR = dα/2π ·
sin β dβ/2 · dγ/2π`, total mass 1) and Appendix C (the FFT algorithm).

Conventions:
  - Wigner D-functions of ZYZ Euler angles,
    `D^l_{mn}(α, β, γ) = exp(-i m α) d^l_{mn}(β) exp(-i n γ)`, with `d`
    from `wigner_d_matrix`; `D^l(R R') = D^l(R) D^l(R')`.
  - Grid (SOFT, no poles): `β_j = π(2j+1)/(4b)`, `α_k = γ_k = 2πk/(2b)`;
    a signal is `[..., 2b, 2b, 2b]` with axes (β, α, γ).
  - Forward (Eq. 8 with quadrature): `f̂^l_{mn} = Σ_{j,k1,k2} w_j / (2b)²
    f(α_k1, β_j, γ_k2) conj(D^l_{mn})`, computed as `tf.signal.ifft2d` over
    (α, γ), the weights `w_j` (`quadrature_weights`) and `so3_contract`.
  - Inverse (Eq. 9): `f = Σ_{l<b} (2l+1) Σ_{mn} f̂^l_{mn} D^l_{mn}`, i.e.
    `(2l+1)` on the spectrum, `so3_expand` and `tf.signal.fft2d`.
  - Spectra are packed `[..., P(b)]`, `P(b) = b(4b² - 1)/3` (`layout`).
  - A band-limited signal goes grid -> spectrum -> grid unchanged; for other
    grids that round trip is a projection onto the band-limited signals.

Shape letters: `2b` grid side, `P = P(b)`; leading axes `...` are kept.

Deviations from the paper:
  - The paper's Eq. 4/6 correlations are of real signals and use no complex
    conjugate; our spectral products (`so3_mm`) give `∫ conj(ψ(R⁻¹Q)) f(Q)
    dQ`, the same for real filters ψ.
"""

import tensorflow as tf

from tfcv_ops import _transform_common as common
from tfcv_ops import grids
from tfcv_ops import layout
from tfcv_ops import primitives
from tfcv_ops import tables

_MAX = grids.SO3_MAX_BANDWIDTH


def so3_fft(
    x,
    bandwidth_out=None,
    use_custom_op=None,
    allow_low_precision: bool = False,
) -> tf.Tensor:
    """SO(3) Fourier coefficients `f̂^l_{mn}` of a grid signal (Eq. 8).

    Args:
      x: `[..., 2b, 2b, 2b]` signal on the SO(3) grid of `so3_grid(b)`,
        axes (β, α, γ); float32/float64/complex64/complex128.
      bandwidth_out: degrees kept, `l < bandwidth_out`; `None` (default)
        means `b`. Smaller truncates, larger pads with zeros.
      use_custom_op: `None`, `True` or `False` (see `set_use_custom_op`).
      allow_low_precision: if `True`, float16/bfloat16 inputs are computed
        in float32 instead of being refused. Default `False`.

    Returns:
      `[..., P(bandwidth_out)]`, complex64 for float32/complex64 (and low
      precision) input, complex128 for float64/complex128.

    Raises:
      ValueError: if the last three axes are not equal, even and static,
        the bandwidth is above `SO3_MAX_BANDWIDTH`, or the dtype is refused.

    Example:
      >>> so3_fft(tf.ones([8, 8, 8])).shape
      TensorShape([84])
    """
    x, _ = common.to_complex(x, "x", allow_low_precision)
    bandwidth = common.grid_bandwidth(x, 3, _MAX, "(β, α, γ)")
    bandwidth_out = common.output_bandwidth(bandwidth_out, bandwidth, _MAX)
    degrees = min(bandwidth, bandwidth_out)
    grid, leading = common.flatten(x, 3)  # [B, J, N, N]

    # FFT over (α, γ): Σ_k f e^{+i(mα + nγ)} / N², at (m mod N, n mod N).
    spectral = tf.signal.ifft2d(grid)
    weights = common.weight_column(bandwidth, 2)  # [J, 1, 1]
    spectral *= tf.cast(weights, spectral.dtype)

    # β stage: Σ_j w_j d^l_{mn}(β_j) F[j, m, n].
    table = tables.so3_table(
        bandwidth, degrees, common.real_dtype(spectral.dtype)
    )
    y = primitives.so3_contract(spectral, table, degrees, use_custom_op)
    y = common.resize_spectrum(y, layout.so3_spectrum_size(bandwidth_out))
    return common.unflatten(y, leading)  # [..., P(bandwidth_out)]


def so3_ifft(
    x,
    bandwidth_out=None,
    real_output: bool = False,
    use_custom_op=None,
    allow_low_precision: bool = False,
) -> tf.Tensor:
    """Grid signal `f = Σ_l (2l+1) Σ_{mn} f̂^l_{mn} D^l_{mn}` (Eq. 9).

    Args:
      x: packed spectrum `[..., P(b)]` (complex64/complex128; real float
        spectra are promoted).
      bandwidth_out: bandwidth of the output grid, `[..., 2 bandwidth_out,
        2 bandwidth_out, 2 bandwidth_out]`; `None` (default) means `b`.
        Smaller drops degrees `l >= bandwidth_out`; larger samples the same
        band-limited signal on a finer grid.
      real_output: if `True`, return the real part (for spectra of real
        signals, whose imaginary part is rounding noise). Default `False`.
      use_custom_op: `None`, `True` or `False`.
      allow_low_precision: as in `so3_fft`.

    Returns:
      `[..., 2b', 2b', 2b']` (β, α, γ), complex64/complex128, or
      float32/float64 with `real_output=True`.

    Raises:
      ValueError: if the last axis is no packed size `P(b)`, a bandwidth is
        above `SO3_MAX_BANDWIDTH`, or the dtype is refused.

    Example:
      >>> so3_ifft(tf.ones([84], tf.complex64)).shape
      TensorShape([8, 8, 8])
    """
    x, _ = common.to_complex(x, "x", allow_low_precision)
    bandwidth = common.spectrum_bandwidth(
        x, layout.so3_bandwidth_of, "P(b) = b(4b² - 1)/3", _MAX
    )
    bandwidth_out = common.output_bandwidth(bandwidth_out, bandwidth, _MAX)
    degrees = min(bandwidth, bandwidth_out)
    grid_size = 2 * bandwidth_out
    y, leading = common.flatten(x, 1)  # [B, P(b)]
    y = common.resize_spectrum(y, layout.so3_spectrum_size(degrees))

    # (2l + 1) f̂^l, then the β stage: Σ_l (2l+1) d^l_{mn}(β_j) f̂^l_{mn}.
    y *= tf.cast(common.degree_factors(degrees, so3=True), y.dtype)
    table = tables.so3_table(bandwidth_out, degrees, common.real_dtype(y.dtype))
    spectral = primitives.so3_expand(y, table, grid_size, use_custom_op)

    # Σ_{mn} G[j, m, n] e^{-i(mα + nγ)}: [B, J, N, N]
    grid = tf.signal.fft2d(spectral)
    if real_output:
        grid = tf.math.real(grid)
    return common.unflatten(grid, leading)


def so3_rotate(
    x, alpha, beta, gamma, use_custom_op=None, allow_low_precision=False
) -> tf.Tensor:
    """Rotates a band-limited SO(3) signal: `[L_R f](Q) = f(R⁻¹ Q)` (Eq. 5).

    With `R = R(α, β, γ)` and `D^l(R⁻¹ Q) = D^l(R)^† D^l(Q)`,
    `f(R⁻¹ Q) = Σ_l (2l+1) Σ_{k,n} [conj(D^l(R)) f̂^l]_{kn} D^l_{kn}(Q)`:
    the rotated spectrum is `conj(D^l(R)) · f̂^l` per degree (a matrix
    product over the first index). Exact for signals of degree `l < b`; a
    grid with higher degrees is first projected onto them.

    Args:
      x: `[..., 2b, 2b, 2b]` signal (β, α, γ), float or complex.
      alpha: α of `R`, radians; a Python number or scalar tensor.
      beta: β of `R`, radians.
      gamma: γ of `R`, radians.
      use_custom_op: `None`, `True` or `False`.
      allow_low_precision: as in `so3_fft`.

    Returns:
      The rotated signal, same shape and dtype as `x` (real stays real).

    Raises:
      ValueError: as `so3_fft`.

    Example:
      >>> so3_rotate(tf.ones([8, 8, 8]), 0.1, 0.2, 0.3).shape
      TensorShape([8, 8, 8])
    """
    dtype = tf.convert_to_tensor(x).dtype
    spectrum = so3_fft(x, None, use_custom_op, allow_low_precision)
    bandwidth = layout.so3_bandwidth_of(spectrum.shape[-1])
    flat, leading = common.flatten(spectrum, 1)  # [B, P]

    big_d = common.wigner_big_d(bandwidth, alpha, beta, gamma, use_custom_op)
    rotated = common.rotate_spectrum(flat, big_d, bandwidth, so3=True)
    rotated = common.unflatten(rotated, leading)
    grid = so3_ifft(rotated, None, not dtype.is_complex, use_custom_op)
    return tf.cast(grid, dtype)
