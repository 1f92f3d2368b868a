"""Export the EMA generator of a training run as a TF-Hub module.

Writes a TF2 Reusable SavedModel into <export_dir>/<version>/ (the next
free number unless --version is given): `hub.load(path)` gives a callable
taking {"z", "y", "truncation"}, `hub.KerasLayer(path)` works in a tf_keras
model, and the `serving_default` signature (z [B, dim_z], y [B, K] one-hot,
truncation scalar -> "default": images [B, R, R, 3] in [-1, 1]) is what TF
Serving serves. EMA weights and standing batch-norm statistics are baked
in. The folder appears only once the export is complete and checked.

Example:
  tfcv export --model_dir=runs/digits --export_dir=runs/digits/export
"""

from absl import flags

from tfcv.cli.common import check_writable_directory
from tfcv.cli.main import UsageError


def define_flags(flag_values):
    flags.DEFINE_string(
        "model_dir",
        None,
        "Training run to export (required).",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "export_dir",
        None,
        "Parent folder of the numbered versions (required).",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "version",
        None,
        "Version number (default: next free).",
        flag_values=flag_values,
    )


def validate(flag_values):
    for name in ("model_dir", "export_dir"):
        if not flag_values[name].value:
            raise UsageError(f"--{name} is required.")
    if flag_values.version is not None and flag_values.version < 1:
        raise UsageError(
            f"--version must be a positive integer, got {flag_values.version}."
        )


def main(flag_values):
    from export import export_generator
    from tfcv.training.checkpoints import load_ema_generator

    generator, step = load_ema_generator(flag_values.model_dir)
    check_writable_directory(flag_values.export_dir, "export_dir")
    path = export_generator(
        generator, flag_values.export_dir, version=flag_values.version
    )
    print(f"Exported the EMA generator at step {step} to {path}")
    return 0
