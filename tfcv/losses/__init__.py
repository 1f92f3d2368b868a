"""GAN losses: `<family>_generator_loss`, `<family>_discriminator_loss`."""

from tfcv.losses.hinge import hinge_discriminator_loss
from tfcv.losses.hinge import hinge_generator_loss

__all__ = ["hinge_discriminator_loss", "hinge_generator_loss"]
