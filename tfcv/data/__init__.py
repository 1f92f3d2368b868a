"""Datasets. The embedded default is scikit-learn's handwritten digits."""

from tfcv.data.digits import DIGITS_NUM_CLASSES
from tfcv.data.digits import load_digits
from tfcv.data.registry import DATASETS
from tfcv.data.registry import get_dataset

__all__ = ["DATASETS", "DIGITS_NUM_CLASSES", "get_dataset", "load_digits"]
