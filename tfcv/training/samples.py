"""Sample grids: fixed latents, one row per class, written as PNG."""

import os

import numpy as np
import tensorflow as tf
from PIL import Image


def grid_latents(num_classes, per_class, dim_z, seed=0, truncation=1.0):
    """Fixed `(z [K·n, dim_z], y [K·n, K])` for a grid with a row per class.

    z is `truncation` times a normal truncated at ±2 (the published
    modules' convention; `truncated_latents` is the paper's). The same
    arguments always give the same latents, so grids made from a
    checkpoint and from an exported module can be compared.
    """
    z = tf.random.stateless_truncated_normal(
        [num_classes * per_class, dim_z], seed=[seed, 12345], alg="philox"
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
    try:
        image.save(temporary)
        os.replace(temporary, path)
    except OSError as error:
        raise OSError(
            error.errno, f"cannot write {path} ({error.strerror})"
        ) from None
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _mix(start, end, steps):
    """`[R, ...]` endpoints -> `[R·steps, ...]` rows of linear blends."""
    weights = tf.reshape(tf.linspace(0.0, 1.0, steps), [1, steps, 1])
    blend = start[:, None] + weights * (end[:, None] - start[:, None])
    return tf.reshape(blend, [-1, start.shape[-1]])


def interpolation_latents(
    kind, classes, steps, dim_z, num_classes, seed, threshold
):
    """Latents for an interpolation strip: a row per class, `steps` columns.

    Args:
      kind: "z" (row r: class `classes[r]`, z moving linearly from one
        resampled latent to another) or "class" (row r: one latent held
        fixed, y moving linearly from one-hot `classes[r]` to the next id of
        `classes`, cyclically; to class + 1 if only one is given).
      classes: class ids, one row each.
      steps: images per row, `>= 2`.
      dim_z, num_classes: the generator's input sizes.
      seed: integer seed.
      threshold: truncation threshold θ of the latents (BigGAN §4.1).

    Returns:
      `(z [rows·steps, dim_z], y [rows·steps, K])`.
    """
    from tfcv.training.truncation import truncated_latents

    rows = len(classes)
    latents = truncated_latents([2, rows, dim_z], threshold, seed=[seed, 4242])
    first = tf.one_hot(classes, num_classes)
    if kind == "z":
        return _mix(latents[0], latents[1], steps), _mix(first, first, steps)
    if kind == "class":
        following = list(classes[1:]) + [classes[0]]
        if rows == 1:
            following = [(classes[0] + 1) % num_classes]
        second = tf.one_hot(following, num_classes)
        return _mix(latents[0], latents[0], steps), _mix(first, second, steps)
    raise ValueError(f"`kind` must be 'z' or 'class', got {kind!r}.")
