"""Conditional accuracy: do class-conditional samples show the asked class?

Odena et al. 2017, "Conditional Image Synthesis with Auxiliary Classifier
GANs" (arXiv:1610.09585), Section 4.1, judge a class-conditional generator by
the accuracy of a classifier trained on real images when it is shown
generated samples: a sample counts as correct when the classifier assigns it
the class it was generated for. This module turns the classifier's decisions
into that score, per requested class and averaged over classes, so that a
generator that ignores its label (about `1 / K`) is told apart from one that
follows it (close to the classifier's accuracy on real images).

Shapes: labels `[N]` (`N` samples), per-class results `[K]` (`K` classes).

Deviations from the paper:
  * The paper's classifier is Inception-v3 on ImageNet; ours is whatever the
    caller's labels come from (for the digits, `digit_classifier.py`).
  * The paper reports one accuracy over all samples; we also report it per
    class, and the mean is over classes so that each class weighs the same
    however many samples were asked of it.
"""

import numpy as np


def _check_labels(labels, name: str, num_classes: int) -> np.ndarray:
    """Returns `labels` as a 1-D int64 array with values in `[0, K)`."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(
            f"`{name}` must be a 1-D array [N] of class indices, received "
            f"shape {labels.shape}; flatten it or take the argmax of logits."
        )
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"`{name}` must hold integers, received dtype {labels.dtype}; "
            f"cast class indices with `.astype(int)`."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"`{name}` must lie in [0, {num_classes}) for `num_classes`="
            f"{num_classes}, received values from {labels.min()} to "
            f"{labels.max()}."
        )
    return labels.astype(np.int64)


def conditional_accuracy(
    predicted_labels, requested_labels, num_classes: int
) -> tuple:
    """Fraction of samples classified as the class they were generated for.

    Args:
      predicted_labels: integer array-like `[N]`, values in `[0, K)`; the
        classifier's decision for each generated sample.
      requested_labels: integer array-like `[N]`, values in `[0, K)`; the
        class each sample was generated for.
      num_classes: int `K` >= 1, the number of classes.

    Returns:
      `(per_class, mean)`: `per_class` a float64 array `[K]` whose entry `k`
      is the accuracy over the samples requested as class `k` (NaN for a
      class that was never requested), and `mean` the float mean of the
      entries of the requested classes.

    Raises:
      ValueError: if `num_classes` is not an integer >= 1; if either label
        array is not 1-D, not integer or outside `[0, num_classes)`; if their
        lengths differ; or if they are empty.

    Example:
      >>> per_class, mean = conditional_accuracy([0, 1, 1, 1], [0, 0, 1, 1], 2)
      >>> per_class.tolist(), mean
      ([0.5, 1.0], 0.75)
    """
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or num_classes < 1
    ):
        raise ValueError(
            f"`num_classes` must be an integer >= 1, received {num_classes!r}."
        )
    predicted_labels = _check_labels(
        predicted_labels, "predicted_labels", num_classes
    )
    requested_labels = _check_labels(
        requested_labels, "requested_labels", num_classes
    )
    if predicted_labels.shape != requested_labels.shape:
        raise ValueError(
            "`predicted_labels` and `requested_labels` must have the same "
            f"shape, received {predicted_labels.shape} and "
            f"{requested_labels.shape}; pass one decision per requested "
            "sample."
        )
    if predicted_labels.size == 0:
        raise ValueError(
            "`predicted_labels` and `requested_labels` must not be empty, "
            "received shape (0,); generate at least one sample."
        )

    # Per requested class: correct decisions / samples asked of that class.
    correct = (predicted_labels == requested_labels).astype(np.float64)
    hits = np.bincount(requested_labels, weights=correct, minlength=num_classes)
    counts = np.bincount(requested_labels, minlength=num_classes)
    per_class = np.full(num_classes, np.nan)
    requested = counts > 0
    per_class[requested] = hits[requested] / counts[requested]

    # Mean over the classes that were asked for.
    return per_class, float(np.mean(per_class[requested]))
