"""Write a sample grid (one row per class) from a run or an exported module.

Give --model_dir (the latest checkpoint's EMA generator) or --module (a
version folder written by `tfcv export`). With both, the grid is made from
each with the same latents and the command fails unless they agree to
--tolerance: the check that an export reproduces its checkpoint.

Example:
  tfcv sample --module=runs/digits/export/1 --model_dir=runs/digits
      --output=runs/digits/samples_export.png
"""

import numpy as np
from absl import flags

from tfcv.cli.main import UsageError


def define_flags(flag_values):
    flags.DEFINE_string(
        "model_dir",
        None,
        "Training run to sample from.",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "module",
        None,
        "Exported module (a version folder) " "to sample from.",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "output", None, "PNG to write (required).", flag_values=flag_values
    )
    flags.DEFINE_integer(
        "per_class", 10, "Columns: samples per class.", flag_values=flag_values
    )
    flags.DEFINE_float(
        "truncation",
        1.0,
        "Truncation of the latents, in " "(0, 1].",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "seed", 0, "Seed of the latents.", flag_values=flag_values
    )
    flags.DEFINE_float(
        "tolerance",
        1e-4,
        "Largest allowed |difference| " "between module and checkpoint grids.",
        flag_values=flag_values,
    )


def validate(flag_values):
    if not flag_values.model_dir and not flag_values.module:
        raise UsageError("give --model_dir, --module, or both.")
    if not flag_values.output:
        raise UsageError("--output is required.")
    import os

    folder = os.path.dirname(os.path.abspath(flag_values.output))
    if not os.path.isdir(folder):
        raise UsageError(
            f"--output={flag_values.output}: folder {folder} does not exist; "
            "create it first or choose another path."
        )
    if not flag_values.output.endswith(".png"):
        raise UsageError(
            f"--output must end in .png, got {flag_values.output}."
        )
    if not 0.0 < flag_values.truncation <= 1.0:
        raise UsageError(
            f"--truncation must be in (0, 1], got {flag_values.truncation}."
        )
    if flag_values.per_class < 1:
        raise UsageError(
            f"--per_class must be >= 1, got {flag_values.per_class}."
        )


def _module_images(path, per_class, seed, truncation):
    import os

    import tensorflow as tf

    from tfcv.training.samples import grid_latents

    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise UsageError(
            f"--module={path} is not an exported module (no saved_model.pb); "
            "pass a version folder such as <export_dir>/1."
        )
    module = tf.saved_model.load(path)
    serve = getattr(module, "signatures", {}).get("serving_default")
    inputs = serve.structured_input_signature[1] if serve else {}
    if not {"z", "y", "truncation"} <= set(inputs):
        raise UsageError(
            f"--module={path} is a SavedModel but not a tfcv generator export "
            "(its serving_default signature must take z, y and truncation); "
            "pass a folder written by `tfcv export`."
        )
    dim_z = inputs["z"].shape[-1]
    num_classes = inputs["y"].shape[-1]
    z, y = grid_latents(num_classes, per_class, dim_z, seed, truncation)
    outputs = serve(z=z, y=y, truncation=tf.constant(truncation))
    return outputs["default"].numpy(), num_classes


def _checkpoint_images(model_dir, per_class, seed, truncation):
    from tfcv.training.checkpoints import load_ema_generator
    from tfcv.training.samples import grid_latents

    generator, _ = load_ema_generator(model_dir)
    config = generator.config
    z, y = grid_latents(
        config.num_classes, per_class, config.dim_z, seed, truncation
    )
    images = generator((z, y), training=False, truncation=truncation)
    return images.numpy(), config.num_classes


def main(flag_values):
    from tfcv.training.samples import image_grid
    from tfcv.training.samples import write_png

    args = (flag_values.per_class, flag_values.seed, flag_values.truncation)
    images = reference = None
    if flag_values.module:
        images, rows = _module_images(flag_values.module, *args)
    if flag_values.model_dir:
        reference, rows = _checkpoint_images(flag_values.model_dir, *args)
    if images is None:
        images = reference
    write_png(flag_values.output, image_grid(images, rows))
    print(f"Wrote {flag_values.output}")
    if flag_values.module and flag_values.model_dir:
        difference = float(np.abs(images - reference).max())
        if difference > flag_values.tolerance:
            raise ValueError(
                f"the module's grid differs from the checkpoint's by up to "
                f"{difference:.3g} (> --tolerance={flag_values.tolerance})."
            )
        print(
            f"Module and checkpoint agree: max |difference| = "
            f"{difference:.2g}"
        )
    return 0
