"""tfcv: ten computer-vision papers as TensorFlow 2 / tf-keras components.

Subpackages:
  `tfcv.layers`    building blocks (spectral normalization, self-attention,
                   conditional batch normalization, ...).
  `tfcv.models`    generators and discriminators (BigGAN family).
  `tfcv.losses`    GAN losses.
  `tfcv.training`  strategy-aware GAN trainer, EMA, checkpoints, progress.
  `tfcv.data`      datasets (the embedded default: scikit-learn's digits).
  `tfcv.metrics`   conditional accuracy, Frechet distance, the digit judge.
  `tfcv.cli`       the `tfcv` command.
"""

__version__ = "0.1.0"
