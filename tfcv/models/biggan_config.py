"""BigGAN's configuration: `BigGANConfig` and the paper's architectures.

Reference: Brock, Donahue, Simonyan (2019), arXiv:1809.11096, Appendix B
(Tables 4-6). The models that read these configs are in `biggan.py`.
"""

import dataclasses
from typing import Optional
from typing import Tuple

from tfcv.models.config_base import ConfigDict


@dataclasses.dataclass(frozen=True)
class BigGANConfig(ConfigDict):
    """Architecture of a BigGAN generator / discriminator pair.

    The defaults are the 32x32 digits model; `paper_config` gives the
    paper's 128, 256 and 512 architectures.

    Attributes:
      resolution: output side `R` (Appendix B: 128, 256, 512).
      ch: channel multiplier (Table 1 and Appendix B: 96 for BigGAN).
      num_classes: `K` (1,000 for ImageNet; 10 for the digits).
      dim_z: latent size, a multiple of `num_blocks + 1` (Appendix B: 20-d
        chunks, so 120, 140, 160 at 128, 256, 512).
      shared_dim: shared class embedding size (Appendix B: 128).
      g_multipliers: channels of G's 4x4 input map then of each up-block,
        as multiples of `ch` (Table 4 at 128: 16, 16, 8, 4, 2, 1).
      d_multipliers: channels of each of D's blocks as multiples of `ch`
        (at 128: 1, 2, 4, 8, 16, 16); all but the last downsample, so D
        ends at 4x4.
      attention_resolution: side at which G's self-attention block sits
        (Tables 4-6: 64, 128, 64).
      epsilon: BN and SN epsilon (Appendix C: 1e-4).
      standing_levels: truncations at which standing BN statistics are kept.
      d_attention_resolution: side of D's self-attention block (Tables 4-6:
        64); None means `attention_resolution`.
    """

    _EXAMPLE = "biggan_128"

    resolution: int = 32
    ch: int = 32
    num_classes: int = 10
    dim_z: int = 80
    shared_dim: int = 128
    g_multipliers: Tuple[int, ...] = (4, 4, 2, 1)
    d_multipliers: Tuple[int, ...] = (1, 2, 4, 4)
    attention_resolution: int = 16
    epsilon: float = 1e-4
    standing_levels: Tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
    d_attention_resolution: Optional[int] = None

    def __post_init__(self):
        for name in ("ch", "num_classes", "shared_dim", "dim_z"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(
                    f"`{name}` must be an integer >= 1, got "
                    f"{type(value).__name__} {value!r}."
                )
            if value < 1:
                raise ValueError(f"`{name}` must be >= 1, got {value}.")
        for name in ("g_multipliers", "d_multipliers"):
            multipliers = getattr(self, name)
            if len(multipliers) < 2 or min(multipliers) < 1:
                raise ValueError(
                    f"`{name}` must hold >= 2 multipliers, each >= 1, got "
                    f"{multipliers}."
                )
        if not self.epsilon > 0:
            raise ValueError(f"`epsilon` must be > 0, got {self.epsilon}.")
        self._check_sides()
        if self.dim_z < self.num_chunks or self.dim_z % self.num_chunks:
            raise ValueError(
                f"`dim_z`={self.dim_z} must be a positive multiple of the "
                f"number of latent chunks ({self.num_chunks} = up-blocks + "
                f"1); the paper uses 20 per chunk, "
                f"{20 * self.num_chunks} here."
            )

    def _check_sides(self):
        """Checks that both networks' sides fit `resolution`."""
        num_blocks = len(self.g_multipliers) - 1
        if self.resolution != 4 * 2**num_blocks:
            raise ValueError(
                f"`resolution`={self.resolution} does not match "
                f"g_multipliers={self.g_multipliers}: {num_blocks} up-blocks "
                f"from 4x4 give {4 * 2**num_blocks}. Add or remove entries."
            )
        num_downsamples = len(self.d_multipliers) - 1
        if self.resolution != 4 * 2**num_downsamples:
            raise ValueError(
                f"`d_multipliers`={self.d_multipliers} does not match "
                f"resolution={self.resolution}: all blocks but the last "
                f"halve the side, so D would end at "
                f"{self.resolution / 2**num_downsamples:g}x"
                f"{self.resolution / 2**num_downsamples:g}, not 4x4. Use "
                f"{num_blocks + 1} entries."
            )
        g_sides = self.generator_sides
        if self.attention_resolution not in g_sides:
            raise ValueError(
                f"`attention_resolution`={self.attention_resolution} is not "
                f"a side G's up-blocks reach at resolution "
                f"{self.resolution}; pick one of {g_sides}."
            )
        d_sides = self.discriminator_sides
        if self.discriminator_attention_resolution not in d_sides:
            raise ValueError(
                f"`d_attention_resolution`={self.d_attention_resolution} "
                f"(None takes attention_resolution="
                f"{self.attention_resolution}) is not a side D's blocks "
                f"reach at resolution {self.resolution}; pick one of "
                f"{d_sides}."
            )

    @property
    def num_chunks(self):
        """Latent chunks: one for the 4x4 map, one per up-block."""
        return len(self.g_multipliers)

    @property
    def generator_sides(self):
        """Side after each of G's up-blocks: `(8, 16, ..., R)`."""
        return tuple(8 * 2**i for i in range(len(self.g_multipliers) - 1))

    @property
    def discriminator_sides(self):
        """Side after each of D's blocks: `(R/2, ..., 4, 4)`."""
        count = len(self.d_multipliers)
        return tuple(
            max(self.resolution // 2 ** (i + 1), 4) for i in range(count)
        )

    @property
    def discriminator_attention_resolution(self):
        """The side of D's self-attention block."""
        if self.d_attention_resolution is None:
            return self.attention_resolution
        return self.d_attention_resolution


# Appendix B, Tables 4-6: G's channel multipliers (4x4 map, then each
# up-block), D's (each block, RGB in), and the non-local blocks' sides.
PAPER_ARCHITECTURES = {
    128: dict(
        g_multipliers=(16, 16, 8, 4, 2, 1),
        d_multipliers=(1, 2, 4, 8, 16, 16),
        attention_resolution=64,
        d_attention_resolution=64,
    ),
    256: dict(
        g_multipliers=(16, 16, 8, 8, 4, 2, 1),
        d_multipliers=(1, 2, 4, 8, 8, 16, 16),
        attention_resolution=128,
        d_attention_resolution=64,
    ),
    512: dict(
        g_multipliers=(16, 16, 8, 8, 4, 2, 1, 1),
        d_multipliers=(1, 1, 2, 4, 8, 8, 16, 16),
        attention_resolution=64,
        d_attention_resolution=64,
    ),
}

# Appendix B: z is split into 20-d chunks, one per G block plus one.
LATENT_CHUNK_SIZE = 20


def paper_config(resolution, ch=96, num_classes=1000, **overrides):
    """The `BigGANConfig` of Appendix B's BigGAN at `resolution`.

    Args:
      resolution: 128 (Table 4), 256 (Table 5) or 512 (Table 6).
      ch: channel multiplier (default 96, the paper's).
      num_classes: `K` (default 1,000, ImageNet's).
      **overrides: any other `BigGANConfig` field.

    Returns:
      A `BigGANConfig` with `dim_z` = 20 per chunk (120, 140, 160), a
      128-d shared embedding and epsilon 1e-4 unless overridden.

    Raises:
      ValueError: if the paper has no table for `resolution`, or a field
        is invalid (see `BigGANConfig`).

    Example:
      >>> paper_config(256).dim_z
      140
    """
    if resolution not in PAPER_ARCHITECTURES:
        raise ValueError(
            f"`resolution`={resolution!r} has no architecture table in the "
            f"paper; Appendix B gives {sorted(PAPER_ARCHITECTURES)} "
            "(Tables 4-6). Pass one of them, or build a BigGANConfig with "
            "your own multipliers."
        )
    architecture = PAPER_ARCHITECTURES[resolution]
    values = dict(
        architecture,
        resolution=resolution,
        ch=ch,
        num_classes=num_classes,
        dim_z=LATENT_CHUNK_SIZE * len(architecture["g_multipliers"]),
        shared_dim=128,
        epsilon=1e-4,
    )
    values.update(overrides)
    return BigGANConfig(**values)
