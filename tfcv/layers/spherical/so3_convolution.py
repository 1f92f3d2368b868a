"""SO(3) correlation of SO(3) feature maps with point-mass filters.

Spherical CNNs (Cohen, Geiger, Köhler & Welling, 2018, "Spherical CNNs",
arXiv:1801.10130), §3 Eq. 6 and Appendix D:
`[ψ ⋆ f](R) = Σ_c ∫_{SO(3)} ψ_c(R⁻¹Q) f_c(Q) dQ`, computed as
`so3_ifft(Σ_c f̂_c ψ̂_c^†)` per degree.

The filter of input channel `c` and output channel `o` is a sum of point
masses at the kernel grid rotations `R_p = Z(α_p) Y(β_p) Z(γ_p)`,
`ψ_{c,o} = Σ_p w[c, o, p] δ_{R_p}`, with spectrum
`ψ̂^l_{mn} = Σ_p w_p conj(D^l_{mn}(R_p))`. Substituting `Q = R S` in
Eq. 6 gives `∫ ψ(S) f(R S) dS`, so the output is

    output[R, o] = Σ_c Σ_p w[c, o, p] f_c(R R_p)    (+ bias[o])

with `R_p` composed on the right (the filter is moved by `R` from the
left, Eq. 5), and `f` the input restricted to degrees `l < bandwidth_out`.

Initialization: `w ~ N(0, 1/(C N))` gives unit output variance for
unit-variance inputs (`E_w[output²] = σ² Σ_c Σ_p f_c(R R_p)²`), stored as
`v = w sqrt(C N) ~ N(0, 1)` times a constant, as in `S2Convolution`.

Shape letters: `B` batch, `C` input channels, `2b` grid side, `N` kernel
grid rotations.

Deviations from the paper:
  - As in `S2Convolution`: point masses of the normalised Haar measure,
    our initial scale, float32 transforms under low-precision policies.
"""

import tf_keras

import tfcv_ops
from tfcv.layers.spherical import _common
from tfcv.layers.spherical import kernel_grids
from tfcv.layers.spherical._convolution import SphericalConvolutionBase


@tf_keras.utils.register_keras_serializable(package="tfcv")
class SO3Convolution(SphericalConvolutionBase):
    """SO(3) correlation with point-mass filters (Eq. 6): SO(3) → SO(3).

    Args:
      filters: number of output channels `O`, `int >= 1`.
      bandwidth_in: input bandwidth `b_in` (grid side `2 b_in`), `1..64`.
      bandwidth_out: output bandwidth `b_out`, `1 <= b_out <= b_in`.
      kernel_grid: `[N, 3]` rotations (β, α, γ) in radians, or `None`
        (default) for `so3_near_identity_grid()` (72 rotations). No two
        rows may name the same rotation (at β = 0 only α + γ matters, at
        β = π only α - γ: gimbal lock).
      use_bias: `bool`, add a bias per output channel (default True).
      kernel_initializer: initializer of the stored kernel `v [C, O, N]`
        (the filter weights are `w = v / sqrt(C N)`), or `None` (default)
        for `N(0, 1)` (unit output variance).
      **kwargs: `tf_keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
      inputs: `[B, 2 b_in, 2 b_in, 2 b_in, C]` real SO(3) feature maps,
        axes (β, α, γ).

    Returns:
      `[B, 2 b_out, 2 b_out, 2 b_out, O]` in the layer's compute dtype.

    Raises:
      ValueError: on arguments out of range, `bandwidth_out >
        bandwidth_in`, two grid rows naming one rotation, an input
        grid that is not `[B, 2 b_in, 2 b_in, 2 b_in, C]`, or a channel
        count other than the one built for.

    Example:
      >>> layer = SO3Convolution(8, bandwidth_in=6, bandwidth_out=4)
      >>> layer(tf.zeros([2, 12, 12, 12, 3])).shape
      TensorShape([2, 8, 8, 8, 8])
    """

    grid_rank = 3
    grid_columns = 3

    @staticmethod
    def default_grid():
        return kernel_grids.so3_near_identity_grid()

    @staticmethod
    def kernel_table(grid, bandwidth):
        return _common.so3_kernel_table(grid, bandwidth)

    @staticmethod
    def forward(x, bandwidth):
        # [B, C, 2b, 2b, 2b] -> [B, C, P(b_out)]
        return tfcv_ops.so3_fft(x, bandwidth)

    @staticmethod
    def spectral_product(spectrum, filters):
        # [B, C, P] x [C, O, P] -> [B, O, P]
        return tfcv_ops.so3_mm(spectrum, filters)
