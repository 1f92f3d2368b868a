"""Custom ops (C++ CPU kernels) and their pure-TensorFlow twins.

`setup.py` compiles `tfcv_ops/cc/*.cc` into `tfcv_ops/_tfcv_ops.so` against
the installed TensorFlow (see BUILD.md). Every op dispatches to its kernel
when that library loads and to its pure-TensorFlow twin otherwise (missing
`.so`, a `.so` built for another TensorFlow, XLA-compiled functions, export);
a missing library is reported by one warning per process.

Ops:
  `wigner_d_matrix`  Wigner small-d matrices d^l(β), l = 0..L (Spherical CNNs,
                     Cohen et al. 2018), packed `[J, P]`; twin
                     `wigner_d_matrix_reference`.
  `s2_fft`, `s2_ifft`    S² Fourier transform and inverse (Spherical CNNs
                     Eqs. 8-9), grid `[..., 2b, 2b]` <-> packed `[..., b²]`.
  `so3_fft`, `so3_ifft`  SO(3) Fourier transform and inverse, grid
                     `[..., 2b, 2b, 2b]` <-> packed `[..., b(4b²-1)/3]`.
  `s2_mm`, `so3_mm`  spectral S² / SO(3) correlation (Appendix D).
  `group_norm`       group normalization of `[B, N, C]` (Wu & He 2018,
                     Eqs. 1, 2, 6, 7), fused kernel and gradient; twin
                     `group_norm_reference`.
  `s2_rotate`, `so3_rotate`  exact rotation of band-limited signals.
  `so3_contract`, `so3_expand`, `s2_contract`, `s2_expand`  the β-stage
                     primitives (Wigner-d contraction and its adjoint).
  Helpers: `s2_grid`, `so3_grid`, `quadrature_weights`, the packed-layout
  functions of `layout`, `set_use_custom_op` (global dispatch default).
"""

from tfcv_ops._loader import custom_ops_available
from tfcv_ops.grids import quadrature_weights
from tfcv_ops.group_norm import group_norm
from tfcv_ops.group_norm import group_norm_reference
from tfcv_ops.grids import s2_grid
from tfcv_ops.grids import so3_grid
from tfcv_ops.layout import s2_degree_block
from tfcv_ops.layout import s2_index
from tfcv_ops.layout import s2_spectrum_size
from tfcv_ops.layout import so3_degree_block
from tfcv_ops.layout import so3_index
from tfcv_ops.layout import so3_spectrum_size
from tfcv_ops.primitives import s2_contract
from tfcv_ops.primitives import s2_expand
from tfcv_ops.primitives import s2_mm
from tfcv_ops.primitives import set_use_custom_op
from tfcv_ops.primitives import so3_contract
from tfcv_ops.primitives import so3_expand
from tfcv_ops.primitives import so3_mm
from tfcv_ops.s2 import s2_fft
from tfcv_ops.s2 import s2_ifft
from tfcv_ops.s2 import s2_rotate
from tfcv_ops.so3 import so3_fft
from tfcv_ops.so3 import so3_ifft
from tfcv_ops.so3 import so3_rotate
from tfcv_ops.wigner import wigner_d_block
from tfcv_ops.wigner import wigner_d_matrix
from tfcv_ops.wigner import wigner_d_matrix_reference
from tfcv_ops.wigner import wigner_d_offset

__all__ = [
    "custom_ops_available",
    "group_norm",
    "group_norm_reference",
    "quadrature_weights",
    "s2_contract",
    "s2_degree_block",
    "s2_expand",
    "s2_fft",
    "s2_grid",
    "s2_ifft",
    "s2_index",
    "s2_mm",
    "s2_rotate",
    "s2_spectrum_size",
    "set_use_custom_op",
    "so3_contract",
    "so3_degree_block",
    "so3_expand",
    "so3_fft",
    "so3_grid",
    "so3_ifft",
    "so3_index",
    "so3_mm",
    "so3_rotate",
    "so3_spectrum_size",
    "wigner_d_block",
    "wigner_d_matrix",
    "wigner_d_matrix_reference",
    "wigner_d_offset",
]
