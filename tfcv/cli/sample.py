"""Write sample grids and interpolation strips from a run or an export.

Give --model_dir (the latest checkpoint's EMA generator) or --module (a
version folder written by `tfcv export`). With both, every picture is made
from each with the same latents and the command fails unless they agree
to --tolerance: the check that an export reproduces its checkpoint.

--truncation is BigGAN's threshold θ (§4.1): latent values with |z| > θ
are resampled, so z is a standard normal truncated to [-θ, θ]. Smaller θ
trades variety for fidelity; θ = 2 is the published modules' default
sampling (their `truncation` input 1). The generator's standing batch-norm
statistics are chosen for the same θ
(`tfcv.training.truncation.module_truncation`).

Writes OUTPUT (one row per class, --per_class columns) and, unless
--interpolation_steps=0, two strips beside it (BigGAN Fig. 8 style), one
row for each of the grid's first four classes: OUTPUT_interp_z.png (each
row one class, z moving linearly between two latents) and
OUTPUT_interp_class.png (each row one fixed z, the class moving linearly to
the next class of the rows shown, the last back to the first).

Nothing is written unless every picture was made (and, with both
sources, they agree).

Example:
  tfcv sample --module=runs/digits/export/1 --model_dir=runs/digits
      --truncation=1.0 --output=runs/digits/samples_export.png
"""

import math
import os

import numpy as np
from absl import flags

from tfcv.cli.main import UsageError

# Grid rows drawn when the model has more classes than this (ImageNet's
# 1000) and --classes is not given.
MAX_DEFAULT_ROWS = 16
# Rows of the interpolation strips: the first classes of the grid.
STRIP_ROWS = 4
# Below this threshold every latent is ~0: nothing left to sample.
MIN_THRESHOLD = 0.01


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
        "Exported module (a version folder) to sample from.",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "output",
        None,
        "PNG to write (required); the strips go beside it.",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "per_class",
        10,
        "Grid columns: samples per class.",
        flag_values=flag_values,
    )
    flags.DEFINE_list(
        "classes",
        None,
        "Class ids, one grid row each (default: every class, or the first "
        f"{MAX_DEFAULT_ROWS} if there are more).",
        flag_values=flag_values,
    )
    flags.DEFINE_float(
        "truncation",
        2.0,
        "Truncation threshold θ >= 0.01: latent values beyond ±θ are "
        "resampled (BigGAN §4.1). 2 = the published modules' default "
        "sampling (a normal truncated at ±2; their truncation input 1).",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "interpolation_steps",
        8,
        "Images per interpolation strip row (>= 2; 0 writes no strips).",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "seed", 0, "Seed of the latents.", flag_values=flag_values
    )
    flags.DEFINE_float(
        "tolerance",
        1e-4,
        "Largest allowed |difference| between module and checkpoint images.",
        flag_values=flag_values,
    )


def validate(flag_values):
    if not flag_values.model_dir and not flag_values.module:
        raise UsageError("give --model_dir, --module, or both.")
    if not flag_values.output:
        raise UsageError("--output is required.")
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
    if os.path.isdir(flag_values.output):
        raise UsageError(
            f"--output={flag_values.output} is a folder; give a .png file path."
        )
    threshold = flag_values.truncation
    if not (math.isfinite(threshold) and threshold >= MIN_THRESHOLD):
        raise UsageError(
            f"--truncation must be a finite threshold >= {MIN_THRESHOLD} "
            f"(e.g. 0.5, 1, 2), got {threshold}."
        )
    tolerance = flag_values.tolerance
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise UsageError(f"--tolerance must be a number >= 0, got {tolerance}.")
    if flag_values.per_class < 1:
        raise UsageError(
            f"--per_class must be >= 1, got {flag_values.per_class}."
        )
    steps = flag_values.interpolation_steps
    if steps == 1 or steps < 0:
        raise UsageError(
            f"--interpolation_steps must be 0 (no strips) or >= 2, got {steps}."
        )
    _parse_classes(flag_values.classes)


def _parse_classes(values):
    if values is None:
        return None
    try:
        classes = [int(value) for value in values]
    except ValueError:
        raise UsageError(
            f"--classes must be comma-separated class ids, got "
            f"{','.join(values)!r}."
        ) from None
    if not classes or min(classes) < 0:
        raise UsageError(
            f"--classes must be non-negative class ids, got {classes}."
        )
    return classes


def _module_generator(path):
    """`(generate(z, y, t), dim_z, num_classes)` from an exported module."""
    import tensorflow as tf

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

    def generate(z, y, truncation):
        outputs = serve(z=z, y=y, truncation=tf.constant(truncation))
        return outputs["default"].numpy()

    return generate, inputs["z"].shape[-1], inputs["y"].shape[-1]


def _checkpoint_generator(model_dir):
    """`(generate(z, y, t), dim_z, num_classes)` from a run's EMA weights."""
    from tfcv.training.checkpoints import load_ema_generator

    generator, _ = load_ema_generator(model_dir)
    config = generator.config

    def generate(z, y, truncation):
        images = generator((z, y), training=False, truncation=truncation)
        return images.numpy()

    return generate, config.dim_z, config.num_classes


def _pictures(flag_values, dim_z, num_classes):
    """`{name: (z, y, rows)}` for the grid and the strips."""
    import tensorflow as tf

    from tfcv.training import samples
    from tfcv.training.truncation import truncated_latents

    classes = _parse_classes(flag_values.classes)
    if classes is None:
        classes = list(range(min(num_classes, MAX_DEFAULT_ROWS)))
    if max(classes) >= num_classes:
        raise UsageError(
            f"--classes: the model has {num_classes} classes (ids 0 to "
            f"{num_classes - 1}), got {max(classes)}."
        )
    per_class, seed = flag_values.per_class, flag_values.seed
    threshold = flag_values.truncation
    rows = len(classes)
    z = truncated_latents([rows * per_class, dim_z], threshold, [seed, 1])
    y = tf.one_hot(np.repeat(classes, per_class), num_classes)
    pictures = {flag_values.output: (z, y, rows)}
    steps = flag_values.interpolation_steps
    if steps:
        stem = flag_values.output[: -len(".png")]
        strip_classes = classes[:STRIP_ROWS]
        for kind in ("z", "class"):
            z, y = samples.interpolation_latents(
                kind, strip_classes, steps, dim_z, num_classes, seed, threshold
            )
            pictures[f"{stem}_interp_{kind}.png"] = (z, y, len(strip_classes))
    return pictures


def main(flag_values):
    from tfcv.training.samples import image_grid
    from tfcv.training.samples import write_png
    from tfcv.training.truncation import module_truncation

    sources = []
    if flag_values.module:
        sources.append(_module_generator(flag_values.module))
    if flag_values.model_dir:
        sources.append(_checkpoint_generator(flag_values.model_dir))
    dims = {(dim_z, classes) for _, dim_z, classes in sources}
    if len(dims) > 1:
        raise UsageError(
            f"--module and --model_dir are different models (dim_z, classes "
            f"{sorted(dims)}); give a module exported from that run."
        )
    dim_z, num_classes = dims.pop()
    truncation = module_truncation(flag_values.truncation)
    pictures = {}
    worst = 0.0
    names = ["--module", "--model_dir"] if flag_values.module else []
    for path, (z, y, rows) in _pictures(
        flag_values, dim_z, num_classes
    ).items():
        images = [generate(z, y, truncation) for generate, _, _ in sources]
        for name, batch in zip(names or ["--model_dir"], images):
            if not np.isfinite(batch).all():
                raise ValueError(
                    f"the generator of {name} makes NaN or infinite pixels: "
                    "its weights are not finite (did training diverge?)."
                )
        if len(images) == 2:
            worst = max(worst, float(np.abs(images[0] - images[1]).max()))
        pictures[path] = image_grid(images[0], rows)
    if len(sources) == 2 and worst > flag_values.tolerance:
        raise ValueError(
            f"the module's images differ from the checkpoint's by up to "
            f"{worst:.3g} (> --tolerance={flag_values.tolerance}); nothing "
            "written."
        )
    for path, grid in pictures.items():
        write_png(path, grid)
        print(f"Wrote {path}")
    if len(sources) == 2:
        print(f"Module and checkpoint agree: max |difference| = {worst:.2g}")
    return 0
