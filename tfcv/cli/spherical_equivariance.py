"""Measure the equivariance error Δ of S²/SO(3) convolution stacks.

Spherical CNNs (Cohen et al. 2018, arXiv:1801.10130) §5.1 and Fig. 3:
Δ = mean_i std(L_{R_i} Φ(f_i) - Φ(L_{R_i} f_i)) / std(Φ(f_i)) over
--samples Haar-random rotations R_i and random band-limited 10-channel
inputs f_i, for Φ an S² convolution followed by SO(3) convolutions (all
b → b, random filters), at each bandwidth of --bandwidths and each depth of
--layers, with and without a ReLU after every layer (--activations).

Linear stacks are equivariant up to float32 round-off (Δ ~ 1e-7). With
ReLU the feature maps are no longer band-limited: the rotation of the
output, exact only for degrees l < b, and the next layer's FFT see the
higher degrees aliased, so Δ is several orders larger (Fig. 3, bottom).

Writes equivariance.csv, equivariance.md (the table) and equivariance.png
(Δ against depth, one line per bandwidth, one panel per activation) to
--output_dir, all or nothing, and prints the table. The defaults took
4 minutes on two shared CPU cores, three quarters of it at b = 32
(0.75-2 s per sample with 3 layers, depending on the load).

Example:
  tfcv spherical equivariance --bandwidths=8,16,32 --layers=1,2,3
      --output_dir=runs/equivariance
"""

import csv
import io
import os
import time

from absl import flags
from absl import logging

from tfcv.cli.common import check_writable_directory
from tfcv.cli.main import UsageError

ACTIVATIONS = ("linear", "relu")
OUTPUTS = ("equivariance.csv", "equivariance.md", "equivariance.png")
# Below 2 the feature maps are constant (degree 0 only): Δ is undefined.
MIN_BANDWIDTH = 2
# Fig. 3 uses 1-3 layers; deeper random stacks only add run time and,
# with ReLU, can decay to constant maps.
MAX_LAYERS = 8
# The paper uses 500; more only narrows Δ's spread, at ~1 s per sample.
MAX_SAMPLES = 10000
# Largest seed: the filter seeds `seed + layer` stay within int32.
MAX_SEED = 2**31 - 1 - MAX_LAYERS


def define_flags(flag_values):
    flags.DEFINE_list(
        "bandwidths",
        ["8", "16", "32"],
        f"Bandwidths b (grid side 2b), integers {MIN_BANDWIDTH} to the ops' "
        "maximum (64).",
        flag_values=flag_values,
    )
    flags.DEFINE_list(
        "layers",
        ["1", "2", "3"],
        "Depths: numbers of convolution layers (S² then SO(3)), integers "
        f"1 to {MAX_LAYERS}.",
        flag_values=flag_values,
    )
    flags.DEFINE_list(
        "activations",
        list(ACTIVATIONS),
        "After each layer: linear (none), relu, or both.",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "samples",
        50,
        f"Rotation-input pairs per bandwidth and activation, 1 to "
        f"{MAX_SAMPLES} (the paper uses 500; Δ varies by a few percent "
        "between samples).",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "seed",
        0,
        f"Seed of the rotations, inputs and filters, 0 to {MAX_SEED}.",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "output_dir",
        None,
        "Folder for equivariance.csv, .md and .png (required; created).",
        flag_values=flag_values,
    )


def validate(flag_values):
    _parse(flag_values)
    seed = flag_values.seed
    if not 0 <= seed <= MAX_SEED:
        raise UsageError(f"--seed must be in 0..{MAX_SEED}, got {seed}.")
    output_dir = flag_values.output_dir
    if not output_dir:
        raise UsageError("--output_dir is required.")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UsageError(
            f"--output_dir={output_dir} is a file, not a folder; choose "
            "another path."
        )
    check_writable_directory(output_dir, "output_dir")


def _parse(flag_values) -> tuple:
    """`(bandwidths, layers, activations)` from the flags, or UsageError."""
    import tfcv_ops

    maximum = tfcv_ops.grids.SO3_MAX_BANDWIDTH
    bandwidths = _integers(
        flag_values.bandwidths, "bandwidths", MIN_BANDWIDTH, maximum
    )
    layers = _integers(
        flag_values.layers,
        "layers",
        1,
        MAX_LAYERS,
        " (the paper's Fig. 3 uses 1,2,3)",
    )
    activations = [value.strip().lower() for value in flag_values.activations]
    _check_list(activations, "activations")
    unknown = sorted(set(activations) - set(ACTIVATIONS))
    if unknown:
        raise UsageError(
            f"--activations: unknown {', '.join(unknown)}; expected "
            f"{' and/or '.join(ACTIVATIONS)}, e.g. --activations=linear,relu."
        )
    samples = flag_values.samples
    if not 1 <= samples <= MAX_SAMPLES:
        raise UsageError(
            f"--samples must be in 1..{MAX_SAMPLES}, got {samples} (the "
            "paper uses 500)."
        )
    return bandwidths, layers, activations


def _integers(values, name, low, high, hint="") -> list:
    """Sorted ints of a list flag within `[low, high]`, or UsageError."""
    _check_list(values, name)
    text = ",".join(values)
    try:
        numbers = [int(value) for value in values]
    except ValueError:
        raise UsageError(
            f"--{name} must be comma-separated integers, got {text!r}."
        ) from None
    bad = [n for n in numbers if n < low or (high is not None and n > high)]
    if bad:
        limit = f"{low}..{high}" if high is not None else f">= {low}"
        raise UsageError(
            f"--{name} must be integers in {limit}, got {bad[0]} in "
            f"{text!r}{hint}."
        )
    if len(set(numbers)) != len(numbers):
        raise UsageError(f"--{name} lists a value twice: {text!r}.")
    return sorted(numbers)


def _check_list(values, name):
    if not values:
        raise UsageError(f"--{name} is empty; give at least one value.")
    if len(set(values)) != len(values):
        raise UsageError(f"--{name} lists a value twice: {','.join(values)!r}.")


def measure(bandwidths, layers, activations, samples, seed, progress=None):
    """Rows `{bandwidth, layers, activation, delta_mean, delta_std,
    samples}` for every combination; `progress(done)` after each sample."""
    from tfcv.spherical import equivariance

    rows = []
    done = 0
    for bandwidth in bandwidths:
        for activation in activations:
            start = time.time()

            # One stack of the largest depth; each depth is a prefix of it.
            stack = equivariance.make_stack(
                max(layers), bandwidth, activation == "relu", seed=seed
            )
            errors = equivariance.equivariance_errors(
                stack,
                bandwidth,
                rotations=samples,
                seed=seed,
                callback=lambda step: progress and progress(done + step),
            )
            done += samples
            logging.info(
                "b=%d %s: %d samples in %.1f s",
                bandwidth,
                activation,
                samples,
                time.time() - start,
            )
            for depth in layers:
                mean, std = equivariance.summarize(errors[depth - 1])
                rows.append(
                    {
                        "bandwidth": bandwidth,
                        "layers": depth,
                        "activation": activation,
                        "delta_mean": mean,
                        "delta_std": std,
                        "samples": samples,
                    }
                )
    return rows


def format_table(rows) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| b | layers | activation | Δ mean | Δ std |",
        "|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['bandwidth']} | {row['layers']} | {row['activation']} "
            f"| {row['delta_mean']:.3e} | {row['delta_std']:.2e} |"
        )
    return "\n".join(lines)


def _csv_text(rows) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                **row,
                "delta_mean": f"{row['delta_mean']:.6e}",
                "delta_std": f"{row['delta_std']:.6e}",
            }
        )
    return text.getvalue()


def _markdown_text(rows, command, seconds) -> str:
    return (
        "# Equivariance error of S²/SO(3) convolution stacks\n\n"
        "Spherical CNNs (Cohen et al. 2018) §5.1, Fig. 3: Δ = mean_i "
        "std(L_R Φ(f) − Φ(L_R f)) / std(Φ(f)), float32, "
        f"{rows[0]['samples']} rotation-input pairs per row (Δ std is "
        "over them).\n\n"
        f"{format_table(rows)}\n\n"
        "Linear stacks are equivariant up to float32 round-off. A ReLU "
        "makes each feature map leave the band l < b; `so3_rotate` and the "
        "next layer's FFT see those degrees aliased onto l < b, so Δ "
        "measures the rotation of non-band-limited maps rather than the "
        "layers (the paper's reading of Fig. 3, bottom).\n\n"
        f"Command: `{command}` ({seconds:.0f} s).\n"
    )


def _png_bytes(rows, activations) -> bytes:
    from tfcv.spherical.line_plot import Series
    from tfcv.spherical.line_plot import log_line_plot

    panels = []
    for activation in activations:
        series = []
        for bandwidth in sorted({row["bandwidth"] for row in rows}):
            chosen = [
                row
                for row in rows
                if row["bandwidth"] == bandwidth
                and row["activation"] == activation
            ]
            series.append(
                Series(
                    f"b = {bandwidth}",
                    [row["layers"] for row in chosen],
                    [row["delta_mean"] for row in chosen],
                    [row["delta_std"] for row in chosen],
                )
            )
        title = "ReLU after each layer" if activation == "relu" else "linear"
        panels.append((title, series))
    image = log_line_plot(
        panels, "number of layers", "equivariance error Delta"
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_outputs(output_dir, contents):
    """Writes `{name: bytes}` into `output_dir`, all or none of them.

    Every file is first written in full under a hidden temporary name,
    then renamed; if a rename fails, the files already renamed are removed
    again, so the folder never holds a mixture of two runs.
    """
    os.makedirs(output_dir, exist_ok=True)
    temporary, renamed = {}, []
    try:
        for name, data in contents.items():
            path = os.path.join(output_dir, f".{name}.tmp-{os.getpid()}")
            temporary[name] = path
            with open(path, "wb") as stream:
                stream.write(data)
        for name, path in temporary.items():
            target = os.path.join(output_dir, name)
            os.replace(path, target)
            renamed.append(target)
    except BaseException:
        for target in renamed:
            os.remove(target)
        raise
    finally:
        for path in temporary.values():
            if os.path.exists(path):
                os.remove(path)


def main(flag_values):
    from tfcv.training.progress import ProgressBar

    bandwidths, layers, activations = _parse(flag_values)
    samples = flag_values.samples
    start = time.time()
    bar = ProgressBar(len(bandwidths) * len(activations) * samples)
    rows = measure(
        bandwidths,
        layers,
        activations,
        samples,
        flag_values.seed,
        progress=bar.update,
    )
    bar.update(bar.total, force=True)
    bar.close()
    seconds = time.time() - start

    command = (
        f"tfcv spherical equivariance "
        f"--bandwidths={','.join(map(str, bandwidths))} "
        f"--layers={','.join(map(str, layers))} "
        f"--activations={','.join(activations)} --samples={samples} "
        f"--seed={flag_values.seed}"
    )
    contents = {
        "equivariance.csv": _csv_text(rows).encode(),
        "equivariance.md": _markdown_text(rows, command, seconds).encode(),
        "equivariance.png": _png_bytes(rows, activations),
    }
    write_outputs(flag_values.output_dir, contents)
    print(format_table(rows))
    print(
        f"Wrote {', '.join(OUTPUTS)} to {flag_values.output_dir} "
        f"({seconds:.0f} s)."
    )
    return 0
