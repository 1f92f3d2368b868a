"""Metrics that show a class-conditional generator learned its data.

`conditional_accuracy` scores how often generated samples are recognised as
the class they were asked for; `frechet_distance` compares feature
statistics of real and generated images; the digit judge
(`load_or_train_digit_classifier`, `classify`, `classifier_features`)
supplies the decisions and features for the embedded digits dataset.
"""

from tfcv.metrics.conditional_accuracy import conditional_accuracy
from tfcv.metrics.digit_classifier import FEATURES_LAYER_NAME
from tfcv.metrics.digit_classifier import build_digit_classifier
from tfcv.metrics.digit_classifier import classifier_features
from tfcv.metrics.digit_classifier import classify
from tfcv.metrics.digit_classifier import load_or_train_digit_classifier
from tfcv.metrics.digit_classifier import train_digit_classifier
from tfcv.metrics.frechet_distance import frechet_distance

__all__ = [
    "FEATURES_LAYER_NAME",
    "build_digit_classifier",
    "classifier_features",
    "classify",
    "conditional_accuracy",
    "frechet_distance",
    "load_or_train_digit_classifier",
    "train_digit_classifier",
]
