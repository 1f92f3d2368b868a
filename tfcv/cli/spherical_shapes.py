"""3D shapes on the sphere, Spherical CNNs §5.3: rotation-invariant classes.

Ray-casts meshes onto the sphere (6 channels: ray length, cos and sin of
the angle to the surface normal, for the mesh and its convex hull), trains
the paper's SHREC17 architecture at CPU size (S² conv - BN - ReLU, two
SO(3) conv - BN - ReLU blocks, max over SO(3), BN, dense) on rotated (R)
and non-rotated (NR) meshes under a tf.distribute strategy, tests both on
rotated meshes, and writes to --output_dir:

  results.md    accuracy R/R and NR/R (train/test) against chance
  results.json  the same, parameter counts (this model and the paper's
                full size), settings, times
  signals.png   one mesh per class (rows), its 6 channels (columns),
                equirectangular: north pole at the top

The meshes are synthetic solids of seven classes (cube, rod, plate,
cylinder, cone, torus, capsule) with random proportions, or a local
folder <source>/<class>/*.{obj,off,stl,ply} (e.g. SHREC17 converted).

Measured with the defaults (b 16 -> 8 -> 6 -> 4, 36,759 parameters, 112
training and 56 test meshes, 8 epochs, mirrored over 2 virtual CPUs on a
shared 2-core CPU): R/R 1.000 and NR/R 1.000 against chance 0.143, seeds
0 and 1, in about 65 s (16 s of ray casting, 13 s per training run). The
synthetic classes are easy; the NR/R column is the point: a model that
never saw a rotated mesh classifies rotated ones.

Example:
  tfcv spherical shapes --output_dir=runs/shapes
  tfcv spherical shapes --output_dir=/tmp/quick --bandwidth=8 --epochs=2
"""

import json
import os
import time

import numpy as np
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
from tfcv.data import spherical_shapes
from tfcv.spherical import shapes
from tfcv.training.strategy import STRATEGIES

DEFAULTS = shapes.CPU_CONFIG
# The inner bandwidths b/2, 3b/8, b/4 stay within the SO(3) limit of 64.
MAX_BANDWIDTH = 128


def define_flags(flag_values):
    string, integer, _ = flag_definers(flag_values)
    string(
        "output_dir",
        None,
        "Directory for results.md, results.json and signals.png (required).",
    )
    integer(
        "bandwidth",
        DEFAULTS.bandwidths[0],
        "b of the input grid 2b x 2b (the paper: 128); the inner bandwidths "
        "follow as b, b/2, 3b/8, b/4 (16 -> 8 -> 6 -> 4).",
    )
    string(
        "filters",
        ",".join(str(f) for f in DEFAULTS.filters),
        "Features of the S² and two SO(3) convolutions (the paper: 50,70,350).",
    )
    integer("epochs", DEFAULTS.epochs, "Passes over the training meshes.")
    integer(
        "batch_size",
        DEFAULTS.batch_size,
        "Global batch size (a multiple of the replica count).",
    )
    flags.DEFINE_float(
        "learning_rate",
        DEFAULTS.learning_rate,
        "Adam's initial step size (cosine-decayed to 0 over the run).",
        flag_values=flag_values,
    )
    integer("meshes_per_class", 16, "Synthetic training meshes per class.")
    integer("test_meshes_per_class", 8, "Synthetic test meshes per class.")
    string(
        "classes",
        ",".join(spherical_shapes.CLASS_NAMES),
        "Comma-separated synthetic classes among "
        f"{', '.join(spherical_shapes.CLASS_NAMES)}.",
    )
    string(
        "regimes",
        ",".join(shapes.REGIMES),
        "Comma-separated train/test regimes among "
        f"{', '.join(shapes.REGIMES)} (R = rotated, NR = non-rotated).",
    )
    string(
        "source",
        None,
        "Folder of meshes <source>/<class>/*.{obj,off,stl,ply}, split per "
        "class 3:1 (default: synthetic solids; --classes and the mesh "
        "counts then do not apply).",
    )
    define_strategy_flags(flag_values, STRATEGIES)
    integer("seed", DEFAULTS.seed, "Seed of meshes, rotations and training.")


def _filters(flag_values):
    raw = flag_values.filters or ""
    try:
        values = [int(value) for value in raw.split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or min(values) < 1:
        raise UsageError(
            f"--filters={raw} must be 3 comma-separated integers >= 1 (the "
            "paper: 50,70,350)."
        )
    return tuple(values)


def validate(flag_values):
    if not flag_values.output_dir:
        raise UsageError("--output_dir is required.")
    for name in (
        "epochs",
        "batch_size",
        "meshes_per_class",
        "test_meshes_per_class",
    ):
        if flag_values[name].value < 1:
            raise UsageError(
                f"--{name} must be >= 1, got {flag_values[name].value}."
            )
    if flag_values.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {flag_values.seed}.")
    check_step_sizes(flag_values, ("learning_rate",))
    bandwidth = flag_values.bandwidth
    if not 4 <= bandwidth <= MAX_BANDWIDTH:
        raise UsageError(
            f"--bandwidth must be in 4..{MAX_BANDWIDTH}, got {bandwidth} "
            "(the paper uses 128; 16 trains in about a minute on a CPU)."
        )
    _filters(flag_values)
    parse_list(flag_values, "regimes", shapes.REGIMES)
    classes = parse_list(flag_values, "classes", spherical_shapes.CLASS_NAMES)
    if flag_values.source is None and len(classes) < 2:
        raise UsageError(
            f"--classes={flag_values.classes} names one class; give at "
            "least two."
        )
    check_strategy_flags(flag_values)
    training = flag_values.meshes_per_class * len(classes)
    if flag_values.source is None and flag_values.batch_size > training:
        raise UsageError(
            f"--batch_size={flag_values.batch_size} exceeds the {training} "
            "training meshes (--meshes_per_class x classes); lower it."
        )
    source = flag_values.source
    if source is not None and not os.path.isdir(source):
        raise UsageError(
            f"--source={source} is not a directory; give a folder of "
            "<class>/*.obj|off|stl|ply meshes, or leave it out."
        )
    check_writable_directory(flag_values.output_dir, "output_dir")


def signals_png(data: dict, count: int = 7) -> bytes:
    """PNG bytes: one test mesh per class (rows) x 6 channels (columns)."""
    from tfcv.data.spherical_mnist import sphere_preview

    signals, labels = data["test_R"]
    rows = []
    for label in np.unique(labels)[:count]:
        signal = signals[np.flatnonzero(labels == label)[0]]  # [2b, 2b, 6]
        scale = max(1, 64 // signal.shape[0])
        rows.append(
            [
                sphere_preview(signal[..., channel], scale)
                for channel in range(signal.shape[-1])
            ]
        )
    return grey_tiles_png(rows)


def main(flag_values):
    from tfcv.training.strategy import make_strategy

    started = time.time()
    regimes = parse_list(flag_values, "regimes", shapes.REGIMES)
    classes = parse_list(flag_values, "classes", spherical_shapes.CLASS_NAMES)
    strategy = make_strategy(
        flag_values.strategy, flag_values.virtual_cpus, flag_values.tpu
    )

    # Ray casting: the training sets the regimes need, rotated test meshes.
    sets = sorted({"train_" + regime.split("/")[0] for regime in regimes})
    data = spherical_shapes.load_shapes(
        flag_values.bandwidth,
        classes,
        flag_values.meshes_per_class,
        flag_values.test_meshes_per_class,
        flag_values.seed,
        flag_values.source,
        sets=tuple(sets) + ("test_R",),
    )
    class_names = data["class_names"]
    cast_seconds = time.time() - started
    config = shapes.cpu_config(
        flag_values.bandwidth,
        filters=_filters(flag_values),
        num_classes=len(class_names),
        epochs=flag_values.epochs,
        batch_size=flag_values.batch_size,
        learning_rate=flag_values.learning_rate,
        seed=flag_values.seed,
    )
    train_count = len(data[sets[0]][1])
    if config.batch_size > train_count:
        raise UsageError(
            f"--batch_size={config.batch_size} exceeds the {train_count} "
            "training meshes; lower it."
        )
    parameters = shapes.parameter_count(config)["trainable"]
    paper_parameters = shapes.parameter_count()["trainable"]
    logging.info(
        "Ray-cast %d classes at b=%d in %.0f s; model %s, %d parameters; "
        "%d replica(s), global batch %d, %d epochs, Adam %.3g.",
        len(class_names),
        flag_values.bandwidth,
        cast_seconds,
        config.bandwidths,
        parameters,
        strategy.num_replicas_in_sync,
        config.batch_size,
        config.epochs,
        config.learning_rate,
    )

    # One model per training regime, each tested on rotated meshes.
    accuracy, train_seconds = {}, {}
    for regime in regimes:
        train_name = regime.split("/")[0]
        run = shapes.train_and_evaluate(
            train_name == "R", config, strategy, data, ("test_R",)
        )
        accuracy[regime] = run["accuracy"]["test_R"]
        train_seconds[regime] = run["train_seconds"]
        logging.info(
            "%s: accuracy %.3f (trained %.0f s, final loss %.3f)",
            regime,
            accuracy[regime],
            run["train_seconds"],
            run["final_loss"],
        )
    seconds = time.time() - started
    chance = 1.0 / len(class_names)
    table = shapes.format_table(accuracy, chance)

    # Outputs, each written whole or not at all.
    output_dir = flag_values.output_dir
    settings = {
        "bandwidths": list(config.bandwidths),
        "filters": list(config.filters),
        "classes": class_names,
        "train_meshes": train_count,
        "test_meshes": len(data["test_R"][1]),
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "optimizer": "Adam, cosine decay to 0",
        "seed": config.seed,
        "strategy": flag_values.strategy,
        "replicas": strategy.num_replicas_in_sync,
        "source": flag_values.source or "synthetic solids",
    }
    report = {
        "accuracy": accuracy,
        "chance": chance,
        "parameters": parameters,
        "paper_parameters": paper_parameters,
        "settings": settings,
        "train_seconds": train_seconds,
        "ray_cast_seconds": cast_seconds,
        "run_seconds": seconds,
    }
    markdown = (
        f"# 3D shapes on the sphere (Spherical CNNs §5.3)\n\n"
        f"Accuracy on rotated test meshes, by training set (R = rotated, "
        f"NR = non-rotated); {len(class_names)} classes.\n\n{table}\n"
        f"Model {parameters:,} parameters (the paper's full size: "
        f"{paper_parameters:,}); bandwidths {config.bandwidths}, features "
        f"{config.filters}; {train_count} training and "
        f"{settings['test_meshes']} test meshes; {config.epochs} epochs, "
        f"global batch {config.batch_size}, Adam (cosine) "
        f"{config.learning_rate:g}, {strategy.num_replicas_in_sync} "
        f"replica(s); run time {seconds:.0f} s.\n"
    )
    write_outputs(
        output_dir,
        {
            "results.json": (
                json.dumps(report, indent=2, sort_keys=True) + "\n"
            ).encode(),
            "results.md": markdown.encode(),
            "signals.png": signals_png(data),
        },
    )
    print(table, end="")
    print(f"run time {seconds:.0f} s; wrote {output_dir}")
    return 0
