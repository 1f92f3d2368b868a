"""Public layers of tfcv (all registered as serializable under `tfcv`)."""

from tfcv.layers.conditional_batch_normalization import (
    ConditionalBatchNormalization,
)
from tfcv.layers.cross_replica_batch_normalization import (
    CrossReplicaBatchNormalization,
)
from tfcv.layers.group_normalization import GroupNormalization
from tfcv.layers.instance_normalization import InstanceNormalization
from tfcv.layers.self_attention import SelfAttention
from tfcv.layers.spectral_normalization import SpectralNormalization

__all__ = [
    "ConditionalBatchNormalization",
    "CrossReplicaBatchNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "SelfAttention",
    "SpectralNormalization",
]
