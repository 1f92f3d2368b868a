"""Generators and discriminators."""

from tfcv.models.biggan import MODELS
from tfcv.models.biggan import BigGANConfig
from tfcv.models.biggan import BigGANDiscriminator
from tfcv.models.biggan import BigGANGenerator
from tfcv.models.biggan import biggan_digits_32

__all__ = [
    "MODELS",
    "BigGANConfig",
    "BigGANDiscriminator",
    "BigGANGenerator",
    "biggan_digits_32",
]
