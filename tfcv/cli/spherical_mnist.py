"""Spherical MNIST, Table 1 of Spherical CNNs (§5.2): planar vs spherical.

Projects scikit-learn's 1,797 digits (or MNIST IDX files from --source)
onto the sphere, trains the paper's planar CNN (68,106 parameters) and
spherical CNN (58,550 parameters) on non-rotated (NR) or rotated (R)
digits under a tf.distribute strategy, tests them on NR or R digits, and
writes to --output_dir:

  table1.md     the Table-1-style accuracies (paper's values in brackets)
  results.json  accuracy per model and regime, parameter counts, times
  examples.png  projected digits: top row non-rotated, bottom row rotated
                (equirectangular: north pole at the top)

NR/NR and NR/R share one trained model (as in the paper).

Measured with the defaults (digits, b = 30, 15 epochs, mirrored over 2
virtual CPUs on a shared 2-core CPU, 432 s): planar 0.972 / 0.145 / 0.095
and spherical 0.964 / 0.953 / 0.955 (NR/NR, R/R, NR/R); the paper's MNIST
values are 0.98 / 0.23 / 0.11 and 0.96 / 0.95 / 0.94.

Example:
  tfcv spherical mnist --output_dir=runs/table1
  tfcv spherical mnist --output_dir=/tmp/quick --bandwidth=10 --epochs=2
"""

import json
import os
import time

from absl import flags
from absl import logging

from tfcv.cli.common import check_step_sizes
from tfcv.cli.common import check_strategy_flags
from tfcv.cli.common import check_writable_directory
from tfcv.cli.common import define_strategy_flags
from tfcv.cli.common import flag_definers
from tfcv.cli.common import grey_tiles_png
from tfcv.cli.common import parse_list
from tfcv.cli.common import write_outputs
from tfcv.cli.main import UsageError
from tfcv.spherical import mnist
from tfcv.training.strategy import STRATEGIES

DEFAULTS = mnist.SphericalMnistConfig()
# Projected digits shown in examples.png.
NUM_EXAMPLES = 6


def define_flags(flag_values):
    string, integer, _ = flag_definers(flag_values)
    string(
        "output_dir",
        None,
        "Directory for table1.md, results.json and examples.png (required).",
    )
    integer("epochs", DEFAULTS.epochs, "Passes over the training digits.")
    integer(
        "batch_size",
        DEFAULTS.batch_size,
        "Global batch size (a multiple of the replica count).",
    )
    flags.DEFINE_float(
        "learning_rate",
        DEFAULTS.learning_rate,
        "Adam's initial step size for the spherical model (cosine-decayed "
        "to 0 over the run).",
        flag_values=flag_values,
    )
    flags.DEFINE_float(
        "planar_learning_rate",
        DEFAULTS.planar_learning_rate,
        "Adam's initial step size for the planar model (cosine-decayed).",
        flag_values=flag_values,
    )
    integer(
        "bandwidth",
        DEFAULTS.bandwidth,
        "b of the input grid 2b x 2b (the paper: 30); the spherical model's "
        "inner bandwidths scale with it (30 -> 10 -> 6). The planar model "
        f"needs >= {mnist.PLANAR_MIN_BANDWIDTH}.",
    )
    string(
        "models",
        ",".join(mnist.MODEL_NAMES),
        f"Comma-separated models among {', '.join(mnist.MODEL_NAMES)}.",
    )
    string(
        "regimes",
        ",".join(mnist.TABLE1_REGIMES),
        "Comma-separated train/test regimes among "
        f"{', '.join(mnist.REGIMES)} (R = rotated, NR = non-rotated).",
    )
    string(
        "source",
        None,
        "Folder with MNIST's four IDX files (optionally .gz); default: "
        "scikit-learn's digits.",
    )
    define_strategy_flags(flag_values, STRATEGIES)
    integer("seed", DEFAULTS.seed, "Seed of initialization and rotations.")


def validate(flag_values):
    if not flag_values.output_dir:
        raise UsageError("--output_dir is required.")
    for name in ("epochs", "batch_size"):
        if flag_values[name].value < 1:
            raise UsageError(
                f"--{name} must be >= 1, got {flag_values[name].value}."
            )
    if flag_values.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {flag_values.seed}.")
    check_step_sizes(flag_values, ("learning_rate", "planar_learning_rate"))
    bandwidth = flag_values.bandwidth
    if not 2 <= bandwidth <= 64:
        raise UsageError(
            f"--bandwidth must be in 2..64, got {bandwidth} (the paper "
            "uses 30; try 10 for a quick run)."
        )
    models = parse_list(flag_values, "models", mnist.MODEL_NAMES)
    parse_list(flag_values, "regimes", mnist.REGIMES)
    inner = mnist.scaled_bandwidths(bandwidth)
    if "spherical" in models and min(inner) < 2:
        raise UsageError(
            f"--bandwidth={bandwidth} leaves the spherical CNN inner "
            f"bandwidths {inner}: a bandwidth of 1 keeps only degree 0 "
            "(a constant), so it cannot learn; use --bandwidth>=8."
        )
    if "planar" in models and bandwidth < mnist.PLANAR_MIN_BANDWIDTH:
        raise UsageError(
            f"--bandwidth={bandwidth} is too small for the planar CNN (two "
            "valid 5x5 stride-3 convolutions need a grid side >= 17): use "
            f"--bandwidth>={mnist.PLANAR_MIN_BANDWIDTH} or "
            "--models=spherical."
        )
    check_strategy_flags(flag_values)
    source = flag_values.source
    if source is not None and not os.path.isdir(source):
        raise UsageError(
            f"--source={source} is not a directory; give the folder holding "
            "the MNIST IDX files, or leave it out for the digits."
        )
    check_writable_directory(flag_values.output_dir, "output_dir")


def examples_png(bandwidth: int, seed: int, source=None) -> bytes:
    """PNG bytes: a few projected digits, non-rotated over rotated."""

    from tfcv.data import spherical_mnist

    rows = []
    for rotated in (False, True):
        _, _, x_test, _ = spherical_mnist.load_spherical_digits(
            bandwidth,
            rotated_test=rotated,
            seed=seed,
            source=source,
        )
        scale = max(1, 120 // (2 * bandwidth))
        rows.append(
            [
                spherical_mnist.sphere_preview(x_test[index, ..., 0], scale)
                for index in range(min(NUM_EXAMPLES, len(x_test)))
            ]
        )
    return grey_tiles_png(rows)


def main(flag_values):
    from tfcv.training.strategy import make_strategy

    started = time.time()
    models = parse_list(flag_values, "models", mnist.MODEL_NAMES)
    regimes = parse_list(flag_values, "regimes", mnist.REGIMES)
    config = mnist.config_for_bandwidth(
        flag_values.bandwidth,
        epochs=flag_values.epochs,
        batch_size=flag_values.batch_size,
        learning_rate=flag_values.learning_rate,
        planar_learning_rate=flag_values.planar_learning_rate,
        seed=flag_values.seed,
    )
    strategy = make_strategy(
        flag_values.strategy, flag_values.virtual_cpus, flag_values.tpu
    )
    logging.info(
        "Spherical MNIST at b=%d, %d replica(s), global batch %d, %d "
        "epochs, Adam %.3g.",
        config.bandwidth,
        strategy.num_replicas_in_sync,
        config.batch_size,
        config.epochs,
        config.learning_rate,
    )
    for name, count in mnist.parameter_counts(config, models).items():
        print(f"{name} CNN: {count:,} parameters")

    results = mnist.run_table(
        models,
        regimes,
        config,
        strategy,
        source=flag_values.source,
        log=lambda line: logging.info("%s", line),
    )
    seconds = time.time() - started
    table = mnist.format_table(results["accuracy"], regimes)

    # Outputs, each written whole or not at all.
    output_dir = flag_values.output_dir
    settings = {
        "bandwidths": list(config.spherical_bandwidths),
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "planar_learning_rate": config.planar_learning_rate,
        "optimizer": "Adam, cosine decay to 0",
        "seed": config.seed,
        "strategy": flag_values.strategy,
        "replicas": strategy.num_replicas_in_sync,
        "source": flag_values.source or "scikit-learn digits",
    }
    report = dict(results, settings=settings, run_seconds=seconds)
    report["paper_table1"] = mnist.PAPER_TABLE1
    markdown = (
        f"# Spherical MNIST (Spherical CNNs §5.2, Table 1)\n\n"
        f"Test accuracy, train/test (R = rotated, NR = non-rotated); the "
        f"paper's MNIST numbers in brackets.\n\n{table}\n"
        f"Parameters: "
        + ", ".join(f"{k} {v:,}" for k, v in results["parameters"].items())
        + f". Bandwidths {config.spherical_bandwidths}, {config.epochs} "
        f"epochs, global batch {config.batch_size}, Adam (cosine) "
        f"{config.learning_rate:g} (planar {config.planar_learning_rate:g}), "
        f"{strategy.num_replicas_in_sync} "
        f"replica(s); run time {seconds:.0f} s.\n"
    )
    png = examples_png(config.bandwidth, config.seed, flag_values.source)
    write_outputs(
        output_dir,
        {
            "results.json": (
                json.dumps(report, indent=2, sort_keys=True) + "\n"
            ).encode(),
            "table1.md": markdown.encode(),
            "examples.png": png,
        },
    )
    print(table, end="")
    print(f"run time {seconds:.0f} s; wrote {output_dir}")
    return 0
