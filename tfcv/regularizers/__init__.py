"""Public regularizers of tfcv (serializable under `tfcv`)."""

from tfcv.regularizers.orthogonal import OrthogonalRegularizer
from tfcv.regularizers.orthogonal import orthogonal_penalty

__all__ = ["OrthogonalRegularizer", "orthogonal_penalty"]
