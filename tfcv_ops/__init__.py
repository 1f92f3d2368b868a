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
"""

from tfcv_ops._loader import custom_ops_available
from tfcv_ops.wigner import wigner_d_block
from tfcv_ops.wigner import wigner_d_matrix
from tfcv_ops.wigner import wigner_d_matrix_reference
from tfcv_ops.wigner import wigner_d_offset

__all__ = [
    "custom_ops_available",
    "wigner_d_block",
    "wigner_d_matrix",
    "wigner_d_matrix_reference",
    "wigner_d_offset",
]
