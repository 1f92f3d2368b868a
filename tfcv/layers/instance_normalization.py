"""Instance normalization: each example's channels normalized on their own.

Reference: Ulyanov, Vedaldi, Lempitsky (2016), "Instance Normalization: The
Missing Ingredient for Fast Stylization", arXiv:1607.08022: per example and
channel, `x̂ = (x - μ) / sqrt(σ² + ε)` with μ and the biased σ² taken over
the spatial positions, here followed by a per-channel `γ x̂ + β`. It is group
normalization with one channel per group (Wu & He 2018, arXiv:1803.08494,
Eq. 5 and §3.1). The generator of GANimation (Pumarola et al. 2018,
"GANimation: Anatomically-aware Facial Animation from a Single Image",
arXiv:1807.09251, §5) uses instance instead of batch normalization for
training stability; its critic uses no feature normalization, so that the
gradient penalty stays per-example. ε defaults to 1e-5, the value of the GN
paper's code (Fig. 3) and of PyTorch's instance normalization.

Shapes: inputs `[B, L, C]`, `[B, H, W, C]` or `[B, T, H, W, C]`; the
statistics of one channel cover its `N` positions (`L`, `H·W` or `T·H·W`).

Deviations from the paper: Ulyanov et al.'s equation has no γ and β; we learn
them by default, as GAN generators do (`center=False, scale=False` gives the
plain equation).
"""

import tf_keras

from tfcv.layers.group_normalization import GroupNormalization


@tf_keras.utils.register_keras_serializable(package="tfcv")
class InstanceNormalization(GroupNormalization):
    """Instance normalization: `GroupNormalization` with `C/G = 1`.

    Args:
      epsilon: `float > 0` added to the variance (default 1e-5).
      center: `bool`, learn a per-channel offset β (default True).
      scale: `bool`, learn a per-channel scale γ (default True).
      gamma_initializer: initializer of γ (default `"ones"`).
      beta_initializer: initializer of β (default `"zeros"`).
      gamma_regularizer: optional regularizer of γ.
      beta_regularizer: optional regularizer of β.
      **kwargs: base `tf_keras.layers.Layer` arguments (`name`, `dtype`).

    Call arguments:
      inputs: `[B, L, C]`, `[B, H, W, C]` or `[B, T, H, W, C]` with `C`
        known when the layer is built.

    Returns:
      A tensor of the inputs' shape and dtype.

    Example:
      >>> norm = InstanceNormalization()
      >>> norm(tf.random.normal([2, 8, 8, 3])).shape
      TensorShape([2, 8, 8, 3])
    """

    def __init__(
        self,
        epsilon: float = 1e-5,
        center: bool = True,
        scale: bool = True,
        gamma_initializer="ones",
        beta_initializer="zeros",
        gamma_regularizer=None,
        beta_regularizer=None,
        **kwargs,
    ):
        super().__init__(
            channels_per_group=1,
            epsilon=epsilon,
            center=center,
            scale=scale,
            gamma_initializer=gamma_initializer,
            beta_initializer=beta_initializer,
            gamma_regularizer=gamma_regularizer,
            beta_regularizer=beta_regularizer,
            **kwargs,
        )

    def get_config(self):
        config = super().get_config()
        for key in ("groups", "channels_per_group"):
            config.pop(key)
        return config
