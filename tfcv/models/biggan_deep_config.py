"""BigGAN-deep's configuration: `BigGANDeepConfig` and the tables' widths.

Reference: Brock, Donahue, Simonyan (2019), arXiv:1809.11096, Appendix B
(Tables 7-9). The models that read these configs are in `biggan_deep.py`.
"""

import dataclasses
from typing import Optional
from typing import Tuple

from tfcv.models.config_base import ConfigDict


# Tables 7-9: channels (multiples of ch) of G's 4x4 map, then after each
# resolution stage. D uses them in reverse: its stem, then its stages.
PAPER_CHANNEL_MULTIPLIERS = {
    128: (16, 16, 8, 4, 2, 1),
    256: (16, 16, 8, 8, 4, 2, 1),
    512: (16, 16, 8, 8, 4, 2, 1, 1),
}

# Self-attention divides channels by 8 for keys and queries.
_ATTENTION_KEY_DIVISOR = 8


def _invalid(field, value, rule, fix):
    return ValueError(
        f"BigGANDeepConfig `{field}`={value!r} is invalid: {rule}. {fix}"
    )


@dataclasses.dataclass(frozen=True)
class BigGANDeepConfig(ConfigDict):
    """Architecture of a BigGAN-deep generator / discriminator pair.

    Attributes:
      resolution: output side `R` (Tables 7, 8, 9: 128, 256, 512).
      ch: channel multiplier (Appendix B: ch = 128 for all BigGAN-deep).
      num_classes: `K` (1,000 for ImageNet, Appendix C).
      dim_z: latent size (Tables 7-9: z ∈ R^128).
      shared_dim: shared class embedding size (Tables 7-9: Embed(y) ∈
        R^128).
      channel_multipliers: G's 4x4 map and each stage's output channels as
        multiples of `ch`, non-increasing; D reads them reversed. `None`
        (default) takes Tables 7-9 for `resolution` (128: 16, 16, 8, 4, 2,
        1); set it for other resolutions (one entry per doubling from 4).
      blocks_per_resolution: residual blocks per stage (Appendix B: 2).
      bottleneck_ratio: channel reduction of the bottleneck (Appendix B:
        "by a factor of 4").
      attention_resolution: side of the non-local block in G and D
        (Appendix B: 64x64 for all BigGAN-deep models).
      epsilon: BN and SN epsilon (Appendix C: 1e-4).
      standing_levels: truncations at which standing BN statistics are
        kept (Appendix C.1 collects them at the sampling truncation).
    """

    _EXAMPLE = "biggan_deep_128"

    resolution: int = 128
    ch: int = 128
    num_classes: int = 1000
    dim_z: int = 128
    shared_dim: int = 128
    channel_multipliers: Optional[Tuple[int, ...]] = None
    blocks_per_resolution: int = 2
    bottleneck_ratio: int = 4
    attention_resolution: int = 64
    epsilon: float = 1e-4
    standing_levels: Tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)

    def __post_init__(self):
        # Sequences may arrive as lists (e.g. from JSON); store tuples.
        for field in ("channel_multipliers", "standing_levels"):
            if isinstance(getattr(self, field), list):
                object.__setattr__(self, field, tuple(getattr(self, field)))
        for field in (
            "ch",
            "num_classes",
            "dim_z",
            "shared_dim",
            "blocks_per_resolution",
            "bottleneck_ratio",
        ):
            value = getattr(self, field)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < 1
            ):
                raise _invalid(
                    field, value, "must be an integer >= 1", "Pass e.g. 4."
                )
        if not self.epsilon > 0:
            raise _invalid(
                "epsilon", self.epsilon, "must be > 0", "The paper uses 1e-4."
            )
        levels = self.standing_levels
        if (
            not isinstance(levels, tuple)
            or not levels
            or any(b <= a for a, b in zip(levels, levels[1:]))
        ):
            raise _invalid(
                "standing_levels",
                self.standing_levels,
                "must be a non-empty increasing sequence",
                "E.g. (0.2, 0.4, 0.6, 0.8, 1.0).",
            )
        self._check_multipliers()
        self._check_widths()

    def _check_multipliers(self):
        multipliers = self.channel_multipliers
        if multipliers is None:
            if self.resolution not in PAPER_CHANNEL_MULTIPLIERS:
                raise _invalid(
                    "resolution",
                    self.resolution,
                    "Tables 7-9 define only "
                    f"{sorted(PAPER_CHANNEL_MULTIPLIERS)}",
                    "Pick one of those or pass channel_multipliers.",
                )
            multipliers = PAPER_CHANNEL_MULTIPLIERS[self.resolution]
            object.__setattr__(self, "channel_multipliers", multipliers)
        valid = (
            isinstance(multipliers, tuple)
            and len(multipliers) >= 2
            and all(isinstance(m, int) and m >= 1 for m in multipliers)
            and all(b <= a for a, b in zip(multipliers, multipliers[1:]))
        )
        if not valid:
            raise _invalid(
                "channel_multipliers",
                multipliers,
                "needs >= 2 positive integers, non-increasing (G only "
                "drops channels, D only adds them)",
                "E.g. (16, 16, 8, 4, 2, 1).",
            )
        stages = len(multipliers) - 1
        if self.resolution != 4 * 2**stages:
            raise _invalid(
                "resolution",
                self.resolution,
                f"channel_multipliers={multipliers} give {stages} stages "
                f"from 4x4, i.e. {4 * 2**stages}",
                "Add or remove multipliers.",
            )

    def _check_widths(self):
        sides = [8 * 2**index for index in range(self.num_stages - 1)]
        if self.attention_resolution not in sides:
            raise _invalid(
                "attention_resolution",
                self.attention_resolution,
                f"must be one of {sides} (a side both G and D reach after "
                "a stage)",
                "The paper uses 64.",
            )
        narrowest = self.ch * min(self.channel_multipliers)
        if narrowest // self.bottleneck_ratio < 1:
            raise _invalid(
                "ch",
                self.ch,
                f"the narrowest stage ({narrowest} channels) // "
                f"bottleneck_ratio={self.bottleneck_ratio} leaves no "
                "bottleneck channels",
                "Increase ch or lower bottleneck_ratio.",
            )
        attention_channels = self.channels_at(self.attention_resolution)
        if attention_channels < _ATTENTION_KEY_DIVISOR:
            raise _invalid(
                "ch",
                self.ch,
                f"the {attention_channels} channels at attention_resolution="
                f"{self.attention_resolution} are fewer than the "
                f"{_ATTENTION_KEY_DIVISOR} self-attention needs",
                "Increase ch.",
            )

    @property
    def num_stages(self):
        """Resolution stages (doublings from 4x4 to `resolution`)."""
        return len(self.channel_multipliers) - 1

    def channels_at(self, side):
        """Channels of G's and D's features at `side` x `side`."""
        index = (side // 4).bit_length() - 1
        return self.ch * self.channel_multipliers[index]
