"""Labelled images from a folder: one sub-folder per class.

`<folder>/<class name>/*.{png,jpg,jpeg,bmp,gif}`; classes are the
sub-folder names in sorted order (labels 0, 1, ...). Images are converted
to RGB, resized to `size × size` (bilinear) and scaled to [-1, 1], like the
embedded digits. A fixed stratified split (seed 0) holds out 20 % of each
class for testing.

Shapes: images `[N, size, size, 3]` float32, labels `[N]` int32.
"""

import os

import numpy as np

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
TEST_FRACTION = 0.2


def _class_files(folder):
    classes = sorted(
        name
        for name in os.listdir(folder)
        if os.path.isdir(os.path.join(folder, name))
    )
    files = {}
    for name in classes:
        directory = os.path.join(folder, name)
        files[name] = sorted(
            os.path.join(directory, entry)
            for entry in os.listdir(directory)
            if entry.lower().endswith(EXTENSIONS)
        )
    return files


def _read(path, size):
    from PIL import Image
    from PIL import UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = image.convert("RGB").resize((size, size), Image.BILINEAR)
            pixels = np.asarray(image, np.float32)
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(
            f"Cannot read image {path}: {error}. Remove it or convert it "
            "to PNG or JPEG."
        ) from None
    return pixels / 127.5 - 1.0


def load_image_folder(folder, size):
    """`(train images, train labels, test images, test labels)`.

    Raises:
      ValueError: for a folder with fewer than 2 classes, a class with
        fewer than 2 images, or an unreadable image (naming it).
    """
    if not os.path.isdir(folder):
        raise ValueError(f"{folder} is not a directory of class folders.")
    files = _class_files(folder)
    if len(files) < 2:
        raise ValueError(
            f"{folder} has {len(files)} class folder(s) with images; a "
            "classifier needs at least 2 (one sub-folder per class)."
        )
    for name, paths in files.items():
        if len(paths) < 2:
            raise ValueError(
                f"Class folder {os.path.join(folder, name)} has "
                f"{len(paths)} image(s) ({', '.join(EXTENSIONS)}); each "
                "class needs at least 2 (one to train, one to test)."
            )
    rng = np.random.RandomState(0)
    train, test = ([], []), ([], [])
    for label, paths in enumerate(files.values()):
        order = rng.permutation(len(paths))
        held = max(1, int(round(TEST_FRACTION * len(paths))))
        for rank, index in enumerate(order):
            target = test if rank < held else train
            target[0].append(_read(paths[index], size))
            target[1].append(label)
    return (
        np.stack(train[0]).astype(np.float32),
        np.asarray(train[1], np.int32),
        np.stack(test[0]).astype(np.float32),
        np.asarray(test[1], np.int32),
    )
