"""scikit-learn's handwritten digits as the embedded default dataset.

The 1,797 real 8x8 grey-level digits (UCI "optdigits" test set) ship inside
scikit-learn, so no download is needed. They are upsampled to `image_size`
(default 32) with bilinear interpolation, replicated to 3 channels and scaled
to [-1, 1], the range our generators produce.

The split is fixed and documented: a stratified split with seed 0 puts 20 %
of each class (359 images, rounded per class) in the held-out part, the
rest (1,438) in the training part. The GAN and the judging classifier
train on `"train"` only; the Frechet distance and the classifier's accuracy
use `"heldout"`.

Shapes: images `[N, H, W, 3]` float32 in [-1, 1], labels `[N]` int32.
"""

import numpy as np

DIGITS_NUM_CLASSES = 10
HELDOUT_FRACTION = 0.2
SPLIT_SEED = 0
SPLITS = ("train", "heldout", "all")


def _split_indices(labels: np.ndarray) -> dict:
    """Stratified split: 20 % of each class, chosen with seed 0, held out."""
    rng = np.random.RandomState(SPLIT_SEED)
    heldout = []
    for label in range(DIGITS_NUM_CLASSES):
        members = np.flatnonzero(labels == label)
        count = int(round(len(members) * HELDOUT_FRACTION))
        heldout.extend(rng.permutation(members)[:count].tolist())
    heldout = np.sort(np.asarray(heldout))
    train = np.setdiff1d(np.arange(len(labels)), heldout)
    return {"train": train, "heldout": heldout, "all": np.arange(len(labels))}


def _resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize `[N, h, w]` -> `[N, size, size]` with pixel centres."""
    height, width = images.shape[1:]
    rows = (np.arange(size) + 0.5) * height / size - 0.5
    cols = (np.arange(size) + 0.5) * width / size - 0.5
    rows = np.clip(rows, 0, height - 1)
    cols = np.clip(cols, 0, width - 1)
    top = np.floor(rows).astype(int)
    left = np.floor(cols).astype(int)
    bottom = np.minimum(top + 1, height - 1)
    right = np.minimum(left + 1, width - 1)
    row_weight = (rows - top)[None, :, None]
    col_weight = (cols - left)[None, None, :]

    # Interpolate along columns on the two neighbouring rows, then rows.
    upper = (
        images[:, top][:, :, left] * (1 - col_weight)
        + images[:, top][:, :, right] * col_weight
    )
    lower = (
        images[:, bottom][:, :, left] * (1 - col_weight)
        + images[:, bottom][:, :, right] * col_weight
    )
    return upper * (1 - row_weight) + lower * row_weight


def load_digits(split: str = "train", image_size: int = 32):
    """Loads the digits as `(images [N, S, S, 3] float32, labels [N] int32)`.

    Args:
      split: `"train"` (1,438 images), `"heldout"` (359) or `"all"` (1,797).
      image_size: side `S` of the returned images, at least 8.

    Raises:
      ValueError: if `split` or `image_size` is not valid.

    Example:
      >>> images, labels = load_digits("heldout")
      >>> images.shape
      (359, 32, 32, 3)
    """
    if split not in SPLITS:
        raise ValueError(
            f"Unknown digits split {split!r}; expected one of {SPLITS}."
        )
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(
            f"`image_size` must be an integer >= 8, got {image_size!r}."
        )
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    labels = bunch.target.astype(np.int32)
    indices = _split_indices(labels)[split]

    # Grey levels 0..16 -> [0, 1], resize, then [-1, 1] on 3 channels.
    grey = bunch.images[indices].astype(np.float64) / 16.0
    grey = _resize_bilinear(grey, image_size)
    images = np.repeat(grey[..., None] * 2.0 - 1.0, 3, axis=-1)
    return images.astype(np.float32), labels[indices]
