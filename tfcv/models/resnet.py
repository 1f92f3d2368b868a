"""ResNet-50/101 with pluggable normalization, as Group Normalization uses them.

References: He, Zhang, Ren, Sun (2016), "Deep Residual Learning for Image
Recognition", arXiv:1512.03385, Table 1 (bottleneck blocks, depths 3-4-6-3
for ResNet-50 and 3-4-23-3 for ResNet-101); Wu & He (2018), "Group
Normalization", arXiv:1803.08494, §4.1 (training details), §4.2 (BN*) and
§4.3 (normalization over (T, H, W) in inflated 3D networks).

Architecture (channels last; `w` = 64 for the paper's models):

  stem   7×7/2 conv, 64 → norm → ReLU → 3×3/2 max pool      ("stem")
  conv2  3 bottlenecks, width w,   out 4w, stride 1         ("conv2")
  conv3  4 bottlenecks, width 2w,  out 8w, stride 2         ("conv3")
  conv4  6 (23) bottlenecks, width 4w, out 16w, stride 2    ("conv4")
  conv5  3 bottlenecks, width 8w,  out 32w, stride 2        ("conv5")
  head   global average pool → dense (logits)

A bottleneck is 1×1 conv → norm → ReLU → 3×3 conv (stride s) → norm → ReLU
→ 1×1 conv → norm, added to the shortcut (identity, or a 1×1 conv with
stride s → norm where the shape changes), then ReLU. Every convolution has
no bias (the normalization after it has β). The stage outputs are named
outputs of `resnet_backbone`, for detection heads, Taskonomy encoders and
perceptual losses.

Normalizations (`norm=`): `bn` (batch statistics per replica, as the
paper's baseline), `sync_bn` (over the global batch), `frozen_bn` (BN* of
§4.2: a frozen linear layer), `gn` (G = 32 by default, or a fixed number
of channels per group, Table 3), `ln` (GN with G = 1) and `in` (GN with
C/G = 1). The paper's choices, all defaults here:
  * γ = 1 everywhere except the last normalization of every residual
    block, where γ = 0, so that each block starts as the identity (§4.1,
    after Goyal et al. 2017); not for frozen BN, whose γ is loaded.
  * Convolutions initialized "with the method of [19]" (He et al. 2015):
    normal with variance 2 / fan-out, as the code the paper follows does.
  * Weight decay 1e-4 on all weight layers, including γ and β (§4.1;
    `decay_normalization=True`). For detection fine-tuning the paper uses
    no decay on γ and β (§4.2): `decay_normalization=False`. The decay is
    a Keras L2 regularizer of `weight_decay / 2`, whose gradient is the
    `weight_decay · w` that SGD's decay adds; it joins `model.losses`.

The reduced variant (`resnet_reduced`) for CPU experiments keeps the
bottleneck design but uses one block per stage, width 32 (so every layer
still has a multiple of 32 channels for G = 32) and a 3×3 stride-1 stem
without pooling, for small images such as the 8×8 digits.

`bottleneck_block_3d` is the inflated block of a ResNet-50 I3D (§4.3): the
first 1×1 convolution becomes k×1×1 over time, and BN or GN normalize over
(T, H, W) per channel or group.

Shapes: images `[B, H, W, 3]` (any channels), video `[B, T, H, W, C]`.

Deviations from the paper: stride 2 sits on the 3×3 convolution of the
first block of a stage (as in fb.resnet.torch, ref. [17] of the GN paper,
whose details §4.1 follows), not on the first 1×1 as in He et al. (2016).
"""

import dataclasses
import math
import numbers

import tf_keras

from tfcv.layers.batch_normalization import BatchNormalization
from tfcv.layers.batch_normalization import FrozenBatchNormalization
from tfcv.layers.group_normalization import GroupNormalization
from tfcv.layers.group_normalization import _divisors
from tfcv.layers.instance_normalization import InstanceNormalization
from tfcv.layers.validation import check_epsilon
from tfcv.models.config_base import ConfigDict

NORMALIZATIONS = ("bn", "sync_bn", "frozen_bn", "gn", "ln", "in")
STEMS = ("imagenet", "small")
# Name of each stage's output and its index in `depths`.
STAGES = ("conv2", "conv3", "conv4", "conv5")


@dataclasses.dataclass(frozen=True)
class ResNetConfig(ConfigDict):
    """A bottleneck ResNet and its normalization.

    Attributes:
      depths: bottleneck blocks per stage conv2..conv5 (ResNet-50:
        (3, 4, 6, 3); ResNet-101: (3, 4, 23, 3)).
      width: bottleneck width of conv2; stage k uses `width · 2^k` and
        outputs 4 times that.
      stem: `"imagenet"` (7×7/2 conv and 3×3/2 max pool) or `"small"`
        (3×3/1 conv, no pooling, for small images).
      stem_width: channels of the stem convolution.
      norm: one of `NORMALIZATIONS`.
      groups: G of `gn` (default 32); ignored by the others.
      channels_per_group: if set, `gn` uses this many channels per group
        in every layer instead of a fixed G (Table 3, bottom).
      epsilon: ε of every normalization (default 1e-5).
      weight_decay: `λ >= 0` of SGD's weight decay (default 1e-4); 0 adds
        none.
      decay_normalization: also decay γ and β (default True, §4.1; the
        paper's detection fine-tuning uses False).
      zero_init_residual: γ = 0 for the last normalization of each block
        (default True, §4.1).
      num_classes: logits of the classifier head.
    """

    depths: tuple = (3, 4, 6, 3)
    width: int = 64
    stem: str = "imagenet"
    stem_width: int = 64
    norm: str = "gn"
    groups: int = 32
    channels_per_group: int | None = None
    epsilon: float = 1e-5
    weight_decay: float = 1e-4
    decay_normalization: bool = True
    zero_init_residual: bool = True
    num_classes: int = 1000

    _EXAMPLE = "ResNetConfig(depths=(3, 4, 6, 3), norm='gn')"

    def __post_init__(self):
        check_norm(self.norm)
        # NumPy numbers (np.int64, np.float32) are taken as Python ones.
        for name in ("width", "stem_width", "groups", "num_classes"):
            value = getattr(self, name)
            if isinstance(value, numbers.Integral) and not isinstance(
                value, bool
            ):
                object.__setattr__(self, name, int(value))
        if isinstance(self.channels_per_group, numbers.Integral) and not (
            isinstance(self.channels_per_group, bool)
        ):
            object.__setattr__(
                self, "channels_per_group", int(self.channels_per_group)
            )
        if isinstance(self.weight_decay, numbers.Real) and not isinstance(
            self.weight_decay, bool
        ):
            object.__setattr__(self, "weight_decay", float(self.weight_decay))
        for name in ("decay_normalization", "zero_init_residual"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"`{name}` must be True or False, got "
                    f"{getattr(self, name)!r}."
                )
        if self.stem not in STEMS:
            raise ValueError(
                f"Unknown stem {self.stem!r}; choose one of {STEMS}."
            )
        if len(self.depths) != len(STAGES) or any(
            not _is_count(depth) for depth in self.depths
        ):
            raise ValueError(
                f"`depths` must be {len(STAGES)} integers >= 1 (blocks in "
                f"conv2..conv5), got {self.depths!r}; ResNet-50 uses "
                "(3, 4, 6, 3)."
            )
        for name in ("width", "stem_width", "groups", "num_classes"):
            if not _is_count(getattr(self, name)):
                raise ValueError(
                    f"`{name}` must be an integer >= 1, got "
                    f"{getattr(self, name)!r}."
                )
        if self.channels_per_group is not None and not _is_count(
            self.channels_per_group
        ):
            raise ValueError(
                "`channels_per_group` must be None or an integer >= 1, got "
                f"{self.channels_per_group!r}."
            )
        check_epsilon(self.epsilon)
        if self.channels_per_group is not None and self.groups != 32:
            raise ValueError(
                f"`groups`={self.groups} conflicts with `channels_per_group`"
                f"={self.channels_per_group}; set only one of the two."
            )
        if not (
            isinstance(self.weight_decay, float)
            and math.isfinite(self.weight_decay)
            and 0 <= self.weight_decay < 1
        ):
            raise ValueError(
                "`weight_decay` must be a number in [0, 1), got "
                f"{self.weight_decay!r}; the paper uses 1e-4."
            )
        check_group_divisibility(self)

    def normalized_channels(self):
        """`(layer name, channels)` of every normalization layer, in order."""
        layers = [("stem_norm", self.stem_width)]
        for stage, depth in enumerate(self.depths):
            width = self.width * 2**stage
            for block in range(1, depth + 1):
                prefix = f"{STAGES[stage]}_block{block}"
                layers += [
                    (f"{prefix}_norm1", width),
                    (f"{prefix}_norm2", width),
                    (f"{prefix}_norm3", 4 * width),
                ]
                if block == 1:
                    layers.append((f"{prefix}_shortcut_norm", 4 * width))
        return layers


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_norm(norm):
    """Raises a one-line ValueError unless `norm` is a known name."""
    if norm not in NORMALIZATIONS:
        raise ValueError(
            f"Unknown normalization {norm!r}; choose one of "
            f"{', '.join(NORMALIZATIONS)} (bn: batch, sync_bn: cross-replica "
            "batch, frozen_bn: BN*, gn: group, ln: layer, in: instance)."
        )


def check_group_divisibility(config):
    """Raises a ValueError naming the first layer GN cannot split.

    For `norm="gn"` every normalized channel count must be divisible by
    `groups` (or by `channels_per_group`).
    """
    if config.norm != "gn":
        return
    divisor = config.channels_per_group or config.groups
    what = (
        f"channels_per_group={config.channels_per_group}"
        if config.channels_per_group
        else f"groups={config.groups}"
    )
    for name, channels in config.normalized_channels():
        if channels % divisor or channels < divisor:
            raise ValueError(
                f"Group normalization layer {name!r} has {channels} "
                f"channels, which {what} does not divide; use a divisor of "
                f"{channels} {_divisors(channels)} or change the widths."
            )


def normalization(config, name, zero_gamma=False):
    """The normalization layer `config.norm` asks for, named `name`.

    Args:
      config: a `ResNetConfig` (or anything with its normalization fields).
      name: the Keras name of the layer.
      zero_gamma: initialize γ to 0 (last normalization of a block).
    """
    check_norm(config.norm)
    regularizer = None
    if config.weight_decay and config.decay_normalization:
        regularizer = tf_keras.regularizers.L2(config.weight_decay / 2)
    gamma = "zeros" if zero_gamma else "ones"
    common = dict(
        epsilon=config.epsilon,
        gamma_initializer=gamma,
        gamma_regularizer=regularizer,
        beta_regularizer=regularizer,
        name=name,
    )
    if config.norm in ("bn", "sync_bn"):
        return BatchNormalization(
            synchronized=config.norm == "sync_bn", **common
        )
    if config.norm == "frozen_bn":
        # BN*'s γ comes from the pre-trained model: never zero it here.
        return FrozenBatchNormalization(epsilon=config.epsilon, name=name)
    if config.norm == "gn":
        if config.channels_per_group:
            return GroupNormalization(
                channels_per_group=config.channels_per_group, **common
            )
        return GroupNormalization(groups=config.groups, **common)
    if config.norm == "ln":
        return GroupNormalization(groups=1, **common)
    return InstanceNormalization(**common)


def _kernel_regularizer(config):
    if not config.weight_decay:
        return None
    return tf_keras.regularizers.L2(config.weight_decay / 2)


def _he_normal():
    # He et al. (2015), variance 2 / fan-out, as fb.resnet.torch does.
    return tf_keras.initializers.VarianceScaling(
        2.0, mode="fan_out", distribution="untruncated_normal"
    )


def _conv(config, filters, kernel_size, strides, name, rank=2):
    layer = tf_keras.layers.Conv2D if rank == 2 else tf_keras.layers.Conv3D
    return layer(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=_he_normal(),
        kernel_regularizer=_kernel_regularizer(config),
        name=name,
    )


def bottleneck_block(inputs, width, strides, config, name):
    """One bottleneck block; output channels `4 · width`.

    Args:
      inputs: `[B, H, W, C]` Keras tensor.
      width: channels of the 1×1 and 3×3 convolutions.
      strides: stride of the 3×3 convolution and of the shortcut.
      config: the `ResNetConfig` (normalization, decay).
      name: prefix of the layer names, e.g. `"conv3_block1"`.

    Returns:
      `[B, H/strides, W/strides, 4 · width]`.
    """
    return _bottleneck(inputs, width, strides, config, name, rank=2)


def bottleneck_block_3d(
    inputs, width, strides=1, config=None, name="block3d", temporal_kernel=3
):
    """An inflated (I3D) bottleneck block for video (GN paper §4.3).

    The first convolution is `temporal_kernel`×1×1 (its temporal extent is
    the inflation), the second 1×3×3 with stride `(1, strides, strides)`,
    the third 1×1×1; the normalizations reduce over (T, H, W) per channel
    (BN) or per group (GN).

    Args:
      inputs: `[B, T, H, W, C]` Keras tensor (or tensor).
      width: channels of the first two convolutions; outputs `4 · width`.
      strides: spatial stride (time is not strided).
      config: a `ResNetConfig` for the normalization (default GN, G = 32).
      name: prefix of the layer names.
      temporal_kernel: odd temporal extent of the first convolution.

    Returns:
      `[B, T, H/strides, W/strides, 4 · width]`.
    """
    config = ResNetConfig.coerce(config or ResNetConfig())
    if not _is_count(width) or not _is_count(strides):
        raise ValueError(
            f"`width` and `strides` must be integers >= 1, got {width!r} "
            f"and {strides!r}."
        )
    if not _is_count(temporal_kernel) or temporal_kernel % 2 == 0:
        raise ValueError(
            "`temporal_kernel` must be an odd integer >= 1, got "
            f"{temporal_kernel!r} (3 inflates a 1×1 convolution to 3×1×1)."
        )
    if len(inputs.shape) != 5:
        raise ValueError(
            "bottleneck_block_3d expects video [B, T, H, W, C], got shape "
            f"{tuple(inputs.shape)}."
        )
    _check_block_channels(config, name, width)
    return _bottleneck(
        inputs,
        width,
        strides,
        config,
        name,
        rank=3,
        temporal_kernel=temporal_kernel,
    )


def _check_block_channels(config, name, width):
    """GN divisibility for one stand-alone block, naming the layer."""
    if config.norm != "gn":
        return
    divisor = config.channels_per_group or config.groups
    for suffix, channels in (("norm1", width), ("norm3", 4 * width)):
        if channels % divisor or channels < divisor:
            raise ValueError(
                f"Group normalization layer '{name}_{suffix}' has "
                f"{channels} channels, which {divisor} groups (or channels "
                f"per group) do not divide; use a divisor of {channels} "
                f"{_divisors(channels)}."
            )


def _bottleneck(inputs, width, strides, config, name, rank, temporal_kernel=1):
    relu = tf_keras.layers.ReLU
    if rank == 2:
        kernels = (1, 3, 1)
        conv_strides = strides
    else:
        kernels = ((temporal_kernel, 1, 1), (1, 3, 3), (1, 1, 1))
        conv_strides = (1, strides, strides)
    out_channels = 4 * width

    shortcut = inputs
    if inputs.shape[-1] != out_channels or strides != 1:
        shortcut = _conv(
            config, out_channels, 1, conv_strides, f"{name}_shortcut", rank
        )(inputs)
        shortcut = normalization(config, f"{name}_shortcut_norm")(shortcut)

    x = _conv(config, width, kernels[0], 1, f"{name}_conv1", rank)(inputs)
    x = normalization(config, f"{name}_norm1")(x)
    x = relu(name=f"{name}_relu1")(x)
    x = _conv(config, width, kernels[1], conv_strides, f"{name}_conv2", rank)(x)
    x = normalization(config, f"{name}_norm2")(x)
    x = relu(name=f"{name}_relu2")(x)
    x = _conv(config, out_channels, kernels[2], 1, f"{name}_conv3", rank)(x)
    x = normalization(
        config, f"{name}_norm3", zero_gamma=config.zero_init_residual
    )(x)
    x = tf_keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return relu(name=f"{name}_out")(x)


def _features(inputs, config):
    """The stem and the four stages; returns `{name: Keras tensor}`."""
    outputs = {}
    if config.stem == "imagenet":
        x = _conv(config, config.stem_width, 7, 2, "stem_conv")(inputs)
    else:
        x = _conv(config, config.stem_width, 3, 1, "stem_conv")(inputs)
    x = normalization(config, "stem_norm")(x)
    if config.stem == "imagenet":
        x = tf_keras.layers.ReLU(name="stem_relu")(x)
        x = tf_keras.layers.MaxPool2D(3, 2, padding="same", name="stem_out")(x)
    else:
        x = tf_keras.layers.ReLU(name="stem_out")(x)
    outputs["stem"] = x
    for stage, depth in enumerate(config.depths):
        width = config.width * 2**stage
        for block in range(1, depth + 1):
            strides = 2 if stage > 0 and block == 1 else 1
            x = bottleneck_block(
                x, width, strides, config, f"{STAGES[stage]}_block{block}"
            )
        outputs[STAGES[stage]] = x
    return outputs


def _input(input_shape):
    if len(input_shape) != 3:
        raise ValueError(
            f"`input_shape` must be (height, width, channels), got "
            f"{tuple(input_shape)!r}."
        )
    return tf_keras.Input(tuple(input_shape), name="images")


def resnet_backbone(config, input_shape=(None, None, 3), name=None):
    """The stem and stages conv2..conv5, without the classifier.

    Returns:
      A `tf_keras.Model` from images to a dict of named feature maps:
      `stem` (stride 4, or 1 for the small stem), `conv2` (4), `conv3`
      (8), `conv4` (16), `conv5` (32) for the ImageNet stem.
    """
    config = ResNetConfig.coerce(config)
    inputs = _input(input_shape)
    outputs = _features(inputs, config)
    return tf_keras.Model(inputs, outputs, name=name or "resnet_backbone")


def resnet(config, input_shape=(224, 224, 3), name=None):
    """A ResNet classifier: images `[B, H, W, C]` → logits `[B, K]`.

    The stage outputs stay reachable by name: `stage_outputs(model)`.
    """
    config = ResNetConfig.coerce(config)
    inputs = _input(input_shape)
    features = _features(inputs, config)
    x = tf_keras.layers.GlobalAveragePooling2D(name="pool")(features["conv5"])
    regularizer = _kernel_regularizer(config)
    logits = tf_keras.layers.Dense(
        config.num_classes,
        # The classifier of the paper's code base: normal, σ = 0.01, so the
        # first logits are near 0 and the first gradients moderate.
        kernel_initializer=tf_keras.initializers.RandomNormal(stddev=0.01),
        kernel_regularizer=regularizer,
        bias_regularizer=regularizer,
        name="logits",
    )(x)
    return tf_keras.Model(inputs, logits, name=name or "resnet")


def stage_outputs(model):
    """A model from `model`'s input to its named stage outputs (shared weights).

    Works on models made by `resnet` (the blocks' last layers are named
    `<stage>_block<k>_out`).
    """
    outputs = {"stem": model.get_layer("stem_out").output}
    for stage in STAGES:
        last = [
            layer
            for layer in model.layers
            if layer.name.startswith(f"{stage}_block")
            and layer.name.endswith("_out")
        ][-1]
        outputs[stage] = last.output
    return tf_keras.Model(model.input, outputs, name=f"{model.name}_stages")


def resnet50(norm="gn", num_classes=1000, input_shape=(224, 224, 3), **kwargs):
    """ResNet-50 (25,557,032 trainable parameters at 1000 classes)."""
    config = ResNetConfig(
        depths=(3, 4, 6, 3), norm=norm, num_classes=num_classes, **kwargs
    )
    return resnet(config, input_shape, name="resnet50")


def resnet101(norm="gn", num_classes=1000, input_shape=(224, 224, 3), **kwargs):
    """ResNet-101 (44,549,160 trainable parameters at 1000 classes)."""
    config = ResNetConfig(
        depths=(3, 4, 23, 3), norm=norm, num_classes=num_classes, **kwargs
    )
    return resnet(config, input_shape, name="resnet101")


def reduced_config(norm="gn", num_classes=10, **kwargs):
    """The CPU-sized config: one block per stage, width 32, small stem."""
    settings = dict(depths=(1, 1, 1, 1), width=32, stem="small", stem_width=32)
    settings.update(kwargs)
    return ResNetConfig(norm=norm, num_classes=num_classes, **settings)


def resnet_reduced(
    norm="gn", num_classes=10, input_shape=(16, 16, 3), **kwargs
):
    """The reduced ResNet for CPU experiments (see `reduced_config`)."""
    return resnet(
        reduced_config(norm, num_classes, **kwargs),
        input_shape,
        name="resnet_reduced",
    )
