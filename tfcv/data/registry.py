"""Names of the datasets the command line accepts."""

from tfcv.data import digits

DATASETS = {
    "digits": (digits.load_digits, digits.DIGITS_NUM_CLASSES),
}


def get_dataset(name: str, split: str = "train", image_size: int = 32):
    """Returns `(images, labels, num_classes)` for a registered dataset.

    Raises:
      ValueError: if `name` is not a registered dataset.
    """
    if name not in DATASETS:
        raise ValueError(
            f"Unknown dataset {name!r}; available: {sorted(DATASETS)}."
        )
    loader, num_classes = DATASETS[name]
    images, labels = loader(split, image_size=image_size)
    return images, labels, num_classes
