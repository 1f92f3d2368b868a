"""QM7 atomization energies, Table 3 of Spherical CNNs (§5.4).

Reads QM7 from --source (the published qm7.mat; it is not shipped and
never downloaded: get it from http://quantum-machine.org/datasets/),
turns every atom into a sphere of T=5 potential channels (H, C, N, O, S)
on the SOFT grid, fits a linear first stage on the atom-type counts, trains
the paper's spherical ResNet + DeepSets model (about 1.4M parameters) on
the residual under a tf.distribute strategy, tests on the cross-validation
fold P[--fold], and writes to --output_dir:

  table3.md      our RMSE (kcal/mol) next to Table 3's (paper: 8.47)
  results.json   RMSEs, parameter count, radius, scales, settings, times
  potentials.png one test molecule's per-atom potential spheres: a row per
                 atom, a column per channel H C N O S (equirectangular,
                 north pole at the top, each picture scaled to its range;
                 black where the molecule has no other atom of that type)

Example:
  tfcv spherical molecules --source=qm7.mat --output_dir=runs/qm7
  tfcv spherical molecules --source=qm7.mat --output_dir=/tmp/quick \\
      --bandwidth=4 --epochs=1 --max_molecules=200
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
from tfcv.cli.common import write_outputs
from tfcv.cli.main import UsageError
from tfcv.data import qm7
from tfcv.spherical import molecules
from tfcv.training.strategy import STRATEGIES

DEFAULTS = molecules.MoleculeConfig()
# Atoms (rows) shown in potentials.png.
MAX_PREVIEW_ATOMS = 8


def define_flags(flag_values):
    string, integer, _ = flag_definers(flag_values)
    string(
        "source",
        None,
        "Path of QM7's qm7.mat (required; download it yourself from "
        f"{qm7.QM7_URL}).",
    )
    string(
        "output_dir",
        None,
        "Directory for table3.md, results.json and potentials.png (required).",
    )
    integer("fold", 0, "Test fold: the row of QM7's P splits, 0..4.")
    integer(
        "bandwidth",
        DEFAULTS.bandwidth,
        "b of the per-atom spheres 2b x 2b (the paper: 10); the blocks' "
        "bandwidths scale with it (10 -> 8 -> 6 -> 4 -> 2).",
    )
    integer("epochs", DEFAULTS.epochs, "Passes over the training molecules.")
    integer(
        "batch_size",
        DEFAULTS.batch_size,
        "Global batch of molecules (a multiple of the replica count; the "
        "paper: 20).",
    )
    flags.DEFINE_float(
        "learning_rate",
        DEFAULTS.learning_rate,
        "Adam's initial step size (cosine-decayed to 0 over the run).",
        flag_values=flag_values,
    )
    integer(
        "max_molecules",
        0,
        "Use only molecules 0..N-1 of the file (0: all), for quick runs.",
    )
    define_strategy_flags(flag_values, STRATEGIES)
    integer("seed", DEFAULTS.seed, "Seed of initialization and shuffling.")


def validate(flag_values):
    if not flag_values.source:
        raise UsageError(
            "--source is required: the path of qm7.mat (QM7 is not shipped; "
            f"download it from {qm7.QM7_URL})."
        )
    if not flag_values.output_dir:
        raise UsageError("--output_dir is required.")
    for name in ("epochs", "batch_size"):
        if flag_values[name].value < 1:
            raise UsageError(
                f"--{name} must be >= 1, got {flag_values[name].value}."
            )
    for name in ("seed", "max_molecules"):
        if flag_values[name].value < 0:
            raise UsageError(
                f"--{name} must be >= 0, got {flag_values[name].value}."
            )
    check_step_sizes(flag_values, ("learning_rate",))
    if not 2 <= flag_values.bandwidth <= 64:
        raise UsageError(
            f"--bandwidth must be in 2..64, got {flag_values.bandwidth} (the "
            "paper uses 10; try 4 for a quick run)."
        )
    check_strategy_flags(flag_values)

    # The file, read in full: a bad one fails here, before any output.
    data = qm7.read_qm7(flag_values.source)
    folds = data.splits.shape[0]
    if not 0 <= flag_values.fold < folds:
        raise UsageError(
            f"--fold must be in 0..{folds - 1} (the rows of P in "
            f"{flag_values.source}), got {flag_values.fold}."
        )
    train, test = qm7.fold_indices(
        data, flag_values.fold, flag_values.max_molecules or None
    )
    if len(test) == 0 or len(train) < flag_values.batch_size:
        raise UsageError(
            f"fold {flag_values.fold} of the first "
            f"{flag_values.max_molecules or data.num_molecules} molecules "
            f"has {len(train)} training and {len(test)} test molecules; "
            f"need >= --batch_size={flag_values.batch_size} and >= 1: raise "
            "--max_molecules or lower --batch_size."
        )
    check_writable_directory(flag_values.output_dir, "output_dir")


def potentials_png(signals, charges) -> bytes:
    """PNG bytes: a row per atom, a column per potential channel.

    Args:
      signals: `[N, 2b, 2b, T]` one molecule's spheres.
      charges: `[N]` its charges (padding atoms are left out).
    """
    import io

    from PIL import Image
    from PIL import ImageDraw

    from tfcv.data.spherical_mnist import sphere_preview

    atoms = np.flatnonzero(np.asarray(charges) > 0)[:MAX_PREVIEW_ATOMS]
    side = signals.shape[1]
    scale = max(1, 80 // side)
    cell = side * scale
    gap, margin = 4, 16
    width = margin + signals.shape[-1] * (2 * cell + gap)
    height = margin + len(atoms) * (cell + gap)
    picture = Image.new("L", (width, height), 128)
    draw = ImageDraw.Draw(picture)

    # Column titles (channel types), row titles (the atom's own type).
    for channel, name in enumerate(qm7.ATOM_NAMES):
        draw.text((margin + channel * (2 * cell + gap) + cell, 2), name, 255)
    for row, atom in enumerate(atoms):
        top = margin + row * (cell + gap)
        name = qm7.ATOM_NAMES[qm7.ATOM_CHARGES.index(int(charges[atom]))]
        draw.text((3, top + cell // 2 - 5), name, 255)
        for channel in range(signals.shape[-1]):
            # [2b s, 2b s] -> [2b s, 4b s]: α spans 2π, β only π.
            tile = sphere_preview(signals[atom, ..., channel], scale)
            tile = np.repeat(tile, 2, axis=1)
            left = margin + channel * (2 * cell + gap)
            picture.paste(Image.fromarray(tile, mode="L"), (left, top))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def main(flag_values):
    from tfcv.training.strategy import make_strategy

    started = time.time()
    data = qm7.read_qm7(flag_values.source)
    config = molecules.config_for_bandwidth(
        flag_values.bandwidth,
        epochs=flag_values.epochs,
        batch_size=flag_values.batch_size,
        learning_rate=flag_values.learning_rate,
        seed=flag_values.seed,
    )
    strategy = make_strategy(
        flag_values.strategy, flag_values.virtual_cpus, flag_values.tpu
    )
    max_molecules = flag_values.max_molecules or None
    train, test = qm7.fold_indices(data, flag_values.fold, max_molecules)
    logging.info(
        "QM7 fold %d: %d training / %d test molecules, b=%d, %d "
        "replica(s), global batch %d, %d epochs, Adam %.3g.",
        flag_values.fold,
        len(train),
        len(test),
        config.bandwidth,
        strategy.num_replicas_in_sync,
        config.batch_size,
        config.epochs,
        config.learning_rate,
    )
    print(
        f"spherical model: {molecules.parameter_count(config):,} parameters "
        "(the paper: about 1.4M)"
    )

    results = molecules.train_and_evaluate(
        data, flag_values.fold, config, strategy, max_molecules
    )
    seconds = time.time() - started
    table = molecules.format_table(results)

    # One test molecule's spheres, as the network sees them (unscaled).
    example = int(test[0])
    signals = qm7.potential_signals(
        data.positions[example : example + 1],
        data.charges[example : example + 1],
        results["radius"],
        config.bandwidth,
    )[0]
    png = potentials_png(signals, data.charges[example])

    # Outputs, each written whole or not at all.
    output_dir = flag_values.output_dir
    report = {key: value for key, value in results.items() if key != "model"}
    report.update(
        paper_rmse=molecules.PAPER_RMSE,
        paper_table3={row[0]: row[2] for row in molecules.PAPER_TABLE3},
        preview_molecule=example,
        run_seconds=seconds,
        settings={
            "source": os.path.abspath(flag_values.source),
            "fold": flag_values.fold,
            "max_molecules": max_molecules,
            "bandwidths": [config.bandwidth, *config.block_bandwidths],
            "filters": list(config.block_filters),
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "learning_rate": config.learning_rate,
            "optimizer": "Adam, cosine decay to 0",
            "seed": config.seed,
            "strategy": flag_values.strategy,
            "replicas": strategy.num_replicas_in_sync,
        },
    )
    markdown = (
        "# QM7 atomization energies (Spherical CNNs §5.4, Table 3)\n\n"
        f"Test RMSE in kcal/mol on fold {flag_values.fold} "
        f"({results['test_molecules']} molecules, trained on "
        f"{results['train_molecules']}); the paper's rows first.\n\n"
        f"{table}\n"
        f"{results['parameters']:,} parameters; b = {config.bandwidth}, "
        f"blocks {config.block_bandwidths}, sphere radius "
        f"{results['radius']:.3f} Bohr, {config.epochs} epochs, global "
        f"batch {config.batch_size}, Adam (cosine) "
        f"{config.learning_rate:g}, {strategy.num_replicas_in_sync} "
        f"replica(s); run time {seconds:.0f} s.\n"
    )
    write_outputs(
        output_dir,
        {
            "results.json": (
                json.dumps(report, indent=2, sort_keys=True) + "\n"
            ).encode(),
            "table3.md": markdown.encode(),
            "potentials.png": png,
        },
    )
    print(table, end="")
    print(
        f"RMSE {results['rmse']:.2f} kcal/mol (paper {molecules.PAPER_RMSE});"
        f" run time {seconds:.0f} s; wrote {output_dir}"
    )
    return 0
