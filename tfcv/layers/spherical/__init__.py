"""Spherical CNN layers (Cohen et al. 2018) and their kernel grids."""

from tfcv.layers.spherical.kernel_grids import s2_equatorial_grid
from tfcv.layers.spherical.kernel_grids import s2_near_identity_grid
from tfcv.layers.spherical.kernel_grids import so3_equatorial_grid
from tfcv.layers.spherical.kernel_grids import so3_near_identity_grid
from tfcv.layers.spherical.s2_convolution import S2Convolution
from tfcv.layers.spherical.so3_batch_normalization import (
    SO3BatchNormalization,
)
from tfcv.layers.spherical.so3_convolution import SO3Convolution
from tfcv.layers.spherical.so3_global_max_pool import SO3GlobalMaxPool
from tfcv.layers.spherical.so3_integrate import SO3Integrate
from tfcv.layers.spherical.so3_residual_block import SO3ResidualBlock

__all__ = [
    "S2Convolution",
    "SO3BatchNormalization",
    "SO3Convolution",
    "SO3GlobalMaxPool",
    "SO3Integrate",
    "SO3ResidualBlock",
    "s2_equatorial_grid",
    "s2_near_identity_grid",
    "so3_equatorial_grid",
    "so3_near_identity_grid",
]
