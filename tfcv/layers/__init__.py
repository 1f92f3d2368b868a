"""Public layers of tfcv (all registered as serializable under `tfcv`)."""

from tfcv.layers.batch_normalization import BatchNormalization
from tfcv.layers.batch_normalization import FrozenBatchNormalization
from tfcv.layers.conditional_batch_normalization import (
    ConditionalBatchNormalization,
)
from tfcv.layers.cross_replica_batch_normalization import (
    CrossReplicaBatchNormalization,
)
from tfcv.layers.group_normalization import GroupNormalization
from tfcv.layers.instance_normalization import InstanceNormalization
from tfcv.layers.retinal_blur import RetinalBlur
from tfcv.layers.self_attention import SelfAttention
from tfcv.layers.spectral_normalization import SpectralNormalization
from tfcv.layers.spherical import S2Convolution
from tfcv.layers.spherical import SO3BatchNormalization
from tfcv.layers.spherical import SO3Convolution
from tfcv.layers.spherical import SO3GlobalMaxPool
from tfcv.layers.spherical import SO3Integrate
from tfcv.layers.spherical import SO3ResidualBlock

__all__ = [
    "BatchNormalization",
    "ConditionalBatchNormalization",
    "CrossReplicaBatchNormalization",
    "FrozenBatchNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "RetinalBlur",
    "S2Convolution",
    "SO3BatchNormalization",
    "SO3Convolution",
    "SO3GlobalMaxPool",
    "SO3Integrate",
    "SO3ResidualBlock",
    "SelfAttention",
    "SpectralNormalization",
]
