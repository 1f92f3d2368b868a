"""Spherical correlation of S² signals with point-mass filters (S² → SO(3)).

Spherical CNNs (Cohen, Geiger, Köhler & Welling, 2018, "Spherical CNNs",
arXiv:1801.10130), §3 Eq. 4 and Fig. 2:
`[ψ ⋆ f](R) = Σ_c ∫_{S²} ψ_c(R⁻¹x) f_c(x) dx`, computed as
`so3_ifft(Σ_c f̂_c ψ̂_c^†)` per degree.

The filter of input channel `c` and output channel `o` is a sum of point
masses at the kernel grid points `x_p = (β_p, α_p)`,
`ψ_{c,o} = Σ_p w[c, o, p] δ_{x_p}`, so its spectrum is
`ψ̂^l_n = Σ_p w_p conj(D^l_{n0}(α_p, β_p, 0))` and, substituting
`x = R x_p` in Eq. 4, the output is

    output[R, o] = Σ_c Σ_p w[c, o, p] f_c(R x_p)    (+ bias[o])

where `f` is the input restricted to degrees `l < bandwidth_out` (all of
it when the input is band-limited and `bandwidth_out == bandwidth_in`).

Initialization: for independent `w ~ N(0, σ²)`,
`E_w[output²] = σ² Σ_c Σ_p f_c(R x_p)²`, so `σ = 1/sqrt(C N)` gives unit
output variance for unit-variance inputs whatever their correlations
(measured through three layers in tests/test_spherical_layers.py). The
layer stores `v = w sqrt(C N)`, initialized `N(0, 1)`, and multiplies by
the constant `1/sqrt(C N)` in the call, as the authors' code does with
its own constant: an optimizer's steps (Adam's are about the step size
per weight) are then relative to the filter's scale for every `C` and
`N`, instead of moving filters of size ~0.03 by 0.01 a step.

Shape letters: `B` batch, `C` input channels, `2b` grid side (`b_in` in,
`b_out` out), `N` kernel grid points.

Deviations from the paper:
  - The authors' code sums the filter's point values without the
    normalised measure; ours are point masses of the normalised measure,
    the same up to the scale of `w`. The initial scale (and so the
    constant factor) is our derivation.
  - Inputs under float16/bfloat16 policies are transformed in float32
    (the FFTs lose 2-3 digits in 8-bit mantissas).
"""

import tf_keras

import tfcv_ops
from tfcv.layers.spherical import _common
from tfcv.layers.spherical import kernel_grids
from tfcv.layers.spherical._convolution import SphericalConvolutionBase


@tf_keras.utils.register_keras_serializable(package="tfcv")
class S2Convolution(SphericalConvolutionBase):
    """S² correlation with point-mass filters (Eq. 4): S² → SO(3).

    Args:
      filters: number of output channels `O`, `int >= 1`.
      bandwidth_in: input bandwidth `b_in` (grid side `2 b_in`), `1..256`
        (`S2_MAX_GRID_BANDWIDTH`); only degrees `l < b_out` are used.
      bandwidth_out: output bandwidth `b_out`, `1 <= b_out <= min(b_in,
        64)` (64 = `SO3_MAX_BANDWIDTH`).
      kernel_grid: `[N, 2]` points (β, α) in radians, or `None` (default)
        for `s2_near_identity_grid()` (24 points within π/8 of the pole).
        No two rows may name the same point (at the poles α is free).
      use_bias: `bool`, add a bias per output channel (default True).
      kernel_initializer: initializer of the stored kernel `v [C, O, N]`
        (the filter weights are `w = v / sqrt(C N)`), or `None` (default)
        for `N(0, 1)` (unit output variance).
      **kwargs: `tf_keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
      inputs: `[B, 2 b_in, 2 b_in, C]` real signals on the SOFT grid,
        axes (β, α).

    Returns:
      `[B, 2 b_out, 2 b_out, 2 b_out, O]` on the SO(3) grid, axes
      (β, α, γ), in the layer's compute dtype.

    Raises:
      ValueError: on arguments out of range, `bandwidth_out >
        bandwidth_in`, an input grid that is not `[B, 2 b_in, 2 b_in, C]`,
        or a channel count other than the one built for.

    Example:
      >>> layer = S2Convolution(8, bandwidth_in=8, bandwidth_out=6)
      >>> layer(tf.zeros([2, 16, 16, 3])).shape
      TensorShape([2, 12, 12, 12, 8])
    """

    grid_rank = 2
    grid_columns = 2

    @staticmethod
    def default_grid():
        return kernel_grids.s2_near_identity_grid()

    @staticmethod
    def kernel_table(grid, bandwidth):
        return _common.s2_kernel_table(grid, bandwidth)

    @staticmethod
    def forward(x, bandwidth):
        # [B, C, 2b, 2b] -> [B, C, b_out²]
        return tfcv_ops.s2_fft(x, bandwidth)

    @staticmethod
    def spectral_product(spectrum, filters):
        # [B, C, b²] x [C, O, b²] -> [B, O, P(b)]
        return tfcv_ops.s2_mm(spectrum, filters)
