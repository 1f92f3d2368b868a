"""Generators and discriminators, the registry of their presets, and ResNets.

ResNet-50/101 with a pluggable normalization (Group Normalization) live in
`tfcv.models.resnet`; they are classifiers and backbones, not GAN presets.

Each preset (`biggan_128`, `biggan_deep_256`, `sagan_128`, ...) returns
`(generator, discriminator, config)`. `MODELS` maps preset names to preset
functions; `generator_from_config` rebuilds a generator from a run's recorded
model name and config (for checkpoints and export).
"""

from tfcv.models import biggan
from tfcv.models import biggan_deep
from tfcv.models import resnet
from tfcv.models import sagan
from tfcv.models.biggan import BigGANConfig
from tfcv.models.biggan import BigGANDiscriminator
from tfcv.models.biggan import BigGANGenerator
from tfcv.models.biggan import biggan_128
from tfcv.models.biggan import biggan_256
from tfcv.models.biggan import biggan_512
from tfcv.models.biggan import biggan_digits_32
from tfcv.models.biggan_deep import BigGANDeepConfig
from tfcv.models.biggan_deep import BigGANDeepDiscriminator
from tfcv.models.biggan_deep import BigGANDeepGenerator
from tfcv.models.biggan_deep import biggan_deep_128
from tfcv.models.biggan_deep import biggan_deep_256
from tfcv.models.biggan_deep import biggan_deep_512
from tfcv.models.resnet import ResNetConfig
from tfcv.models.resnet import resnet50
from tfcv.models.resnet import resnet101
from tfcv.models.resnet import resnet_backbone
from tfcv.models.resnet import resnet_reduced
from tfcv.models.sagan import SAGANConfig
from tfcv.models.sagan import SAGANDiscriminator
from tfcv.models.sagan import SAGANGenerator
from tfcv.models.sagan import sagan_128

# Preset name -> (config class, generator class), per family.
_FAMILIES = {}
for _presets, _classes in (
    (biggan.PRESETS, (BigGANConfig, BigGANGenerator)),
    (biggan_deep.PRESETS, (BigGANDeepConfig, BigGANDeepGenerator)),
    (sagan.PRESETS, (SAGANConfig, SAGANGenerator)),
):
    for _name in _presets:
        _FAMILIES[_name] = _classes

MODELS = {**biggan.PRESETS, **biggan_deep.PRESETS, **sagan.PRESETS}


def generator_from_config(model, config, name=None):
    """An unbuilt generator of preset family `model` with `config`.

    Args:
      model: a name in `MODELS`.
      config: the family's config dataclass or its dict form.
      name: optional Keras name of the generator.

    Raises:
      ValueError: if `model` is not a name in `MODELS`.
    """
    if model not in _FAMILIES:
        raise ValueError(
            f"Unknown model {model!r}; available: {sorted(MODELS)}."
        )
    config_class, generator_class = _FAMILIES[model]
    kwargs = {"name": name} if name else {}
    return generator_class(config_class.coerce(config), **kwargs)


__all__ = [
    "MODELS",
    "BigGANConfig",
    "BigGANDeepConfig",
    "BigGANDeepDiscriminator",
    "BigGANDeepGenerator",
    "BigGANDiscriminator",
    "BigGANGenerator",
    "ResNetConfig",
    "SAGANConfig",
    "SAGANDiscriminator",
    "SAGANGenerator",
    "biggan_128",
    "biggan_256",
    "biggan_512",
    "biggan_deep_128",
    "biggan_deep_256",
    "biggan_deep_512",
    "biggan_digits_32",
    "generator_from_config",
    "resnet",
    "resnet50",
    "resnet101",
    "resnet_backbone",
    "resnet_reduced",
    "sagan_128",
]
