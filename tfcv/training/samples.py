"""Sample grids: fixed latents, one row per class, written as PNG."""

import os

import numpy as np
import tensorflow as tf
from PIL import Image


def grid_latents(num_classes, per_class, dim_z, seed=0, truncation=1.0):
    """Fixed `(z [K·n, dim_z], y [K·n, K])` for a grid with a row per class.

    The same arguments always give the same latents, so grids made from a
    checkpoint and from an exported module can be compared.
    """
    z = tf.random.stateless_truncated_normal(
        [num_classes * per_class, dim_z], seed=[seed, 12345]
    )
    labels = np.repeat(np.arange(num_classes), per_class)
    return truncation * z, tf.one_hot(labels, num_classes)


def image_grid(images, rows):
    """Tiles `[rows·cols, H, W, 3]` images in [-1, 1] to a uint8 grid."""
    images = np.asarray(images)
    count, height, width, channels = images.shape
    cols = count // rows
    pixels = np.clip((images + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    # [rows, cols, H, W, C] -> [rows, H, cols, W, C]
    pixels = pixels[: rows * cols].reshape(rows, cols, height, width, channels)
    pixels = pixels.transpose(0, 2, 1, 3, 4)
    return pixels.reshape(rows * height, cols * width, channels)


def write_png(path, grid, scale=2):
    """Writes a uint8 grid to `path` atomically, upscaled `scale` times."""
    image = Image.fromarray(grid)
    if scale > 1:
        image = image.resize(
            (grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST
        )
    temporary = f"{path}.tmp-{os.getpid()}.png"
    image.save(temporary)
    os.replace(temporary, path)
