"""Judge a trained generator: conditional accuracy and Frechet distance.

A digit classifier trained on the training split (cached in
<model_dir>/judge; its held-out accuracy is reported) labels --per_class
samples of each class from the EMA generator. Reports the fraction
classified as the requested class (per class and mean) and the Frechet
distance between the classifier's features of the samples and of the
held-out digits. Writes <model_dir>/evaluation.json.

Example:
  tfcv evaluate --model_dir=runs/digits
"""

import os

from absl import flags

from tfcv.cli.main import UsageError


def define_flags(flag_values):
    flags.DEFINE_string(
        "model_dir",
        None,
        "Training run to judge (required).",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "per_class", 100, "Samples per class.", flag_values=flag_values
    )


def validate(flag_values):
    if not flag_values.model_dir:
        raise UsageError("--model_dir is required.")
    if flag_values.per_class < 2:
        raise UsageError(
            f"--per_class must be >= 2, got {flag_values.per_class}."
        )


def main(flag_values):
    from tfcv.training import evaluation
    from tfcv.training.checkpoints import load_ema_generator
    from tfcv.training.gan_trainer import load_run_config

    train_config, _ = load_run_config(flag_values.model_dir)
    generator, step = load_ema_generator(flag_values.model_dir)
    results = evaluation.evaluate_generator(
        generator,
        os.path.join(flag_values.model_dir, "judge"),
        dataset=train_config.dataset,
        per_class=flag_values.per_class,
    )
    results["step"] = step
    evaluation.write_results(flag_values.model_dir, results)
    print(evaluation.format_results(results))
    return 0
