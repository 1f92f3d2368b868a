"""BN vs GN as the batch per replica shrinks (Group Normalization Fig. 1).

Trains the reduced ResNet (tfcv.models.resnet) with batch normalization
(statistics per replica, not synchronized) and with group normalization at
each per-replica batch size, for each seed, with the learning rate scaled
linearly with the batch and the same number of epochs everywhere, then
writes to --output_dir:

  table2.md     Table-2-style test error (%) per normalization and batch
                (mean ± std over seeds), BN − GN, and the paper's values
  figure1.png   Figure-1-style plot: error against images per replica
  results.json  every run (error, final loss, steps, learning rate, time)
                and the summary

--groups and --channels_per_group add GN rows for Table 3's group sweep
(G = 64 ... 1, or 64 ... 1 channels per group); G = 64 and 64 channels
per group need --width=64 (the narrowest layers have `width` channels).

Measured with the defaults (digits, batches 32..2, 3 seeds, 10 epochs,
one device of a shared 2-core CPU, 3,085 s): error at batch 32 / 2, BN
2.97 / 32.68 %, GN 3.44 / 2.69 % (the paper's Figure 1 at CPU scale).

Example:
  tfcv groupnorm sweep --output_dir=runs/gn
  tfcv groupnorm sweep --output_dir=/tmp/quick --batch_sizes=32,2 \\
      --seeds=0 --epochs=1      # a smoke test: errors stay near chance;
                                # the Fig. 1 effect needs the 10 epochs
  tfcv groupnorm sweep --output_dir=runs/table3 --norms=gn \\
      --groups=32,16,8,4,2,1 --batch_sizes=32
"""

import json
import os
import time

from absl import flags
from absl import logging

from tfcv.cli.common import MAX_VIRTUAL_CPUS
from tfcv.cli.common import check_step_sizes
from tfcv.cli.common import check_writable_directory
from tfcv.cli.common import define_strategy_flags
from tfcv.cli.common import flag_definers
from tfcv.cli.common import parse_list
from tfcv.cli.common import write_outputs
from tfcv.cli.main import UsageError
from tfcv.groupnorm import sweep
from tfcv.models.resnet import NORMALIZATIONS
from tfcv.training.strategy import STRATEGIES

DEFAULTS = sweep.SweepConfig()
MAX_BATCH = 4096
MAX_EPOCHS = 10000


def define_flags(flag_values):
    string, integer, real = flag_definers(flag_values)
    string(
        "output_dir",
        None,
        "Directory for table2.md, figure1.png and results.json (required).",
    )
    string(
        "norms",
        "bn,gn",
        f"Comma-separated normalizations among {', '.join(NORMALIZATIONS)} "
        "(bn: per-replica batch statistics, sync_bn: global batch, "
        "frozen_bn: BN*, gn: group, ln: layer, in: instance).",
    )
    string(
        "batch_sizes",
        ",".join(str(b) for b in DEFAULTS.batch_sizes),
        "Comma-separated images per replica (Table 2: 32,16,8,4,2). The "
        "global batch is this times the replica count.",
    )
    string(
        "seeds",
        ",".join(str(s) for s in DEFAULTS.seeds),
        "Comma-separated seeds; every cell is trained once per seed.",
    )
    string(
        "groups",
        "32",
        "Comma-separated G for GN (Table 3 top: 64,32,16,8,4,2,1); one GN "
        "row per value.",
    )
    string(
        "channels_per_group",
        "",
        "Comma-separated channels per group for extra GN rows (Table 3 "
        "bottom: 64,32,16,8,4,2,1); empty for none.",
    )
    integer("epochs", DEFAULTS.epochs, "Passes over the training images.")
    real(
        "learning_rate",
        DEFAULTS.base_learning_rate,
        "SGD learning rate at a global batch of 32, scaled linearly with "
        "the batch; divided by 10 after 30%, 60% and 90% of the steps.",
    )
    real("weight_decay", DEFAULTS.weight_decay, "Weight decay λ (>= 0).")
    flags.DEFINE_bool(
        "decay_normalization",
        DEFAULTS.decay_normalization,
        "Apply the weight decay to γ and β too (the paper does on ImageNet, "
        "not for detection fine-tuning).",
        flag_values=flag_values,
    )
    integer(
        "width",
        DEFAULTS.width,
        "Bottleneck width of the reduced ResNet's first stage (stages use "
        "width, 2x, 4x, 8x and output 4x that).",
    )
    string(
        "image_folder",
        None,
        "Folder with one sub-folder of images per class (PNG/JPEG); "
        "default: scikit-learn's digits.",
    )
    integer(
        "image_size",
        8,
        "Side images are resized to (the digits are 8x8).",
    )
    # One device by default: the fastest; --strategy=mirrored runs real
    # replicas (BN statistics per replica, global batch = replicas × B).
    define_strategy_flags(flag_values, STRATEGIES, default="default")


def _integers(flag_values, name, minimum, maximum, allow_empty=False):
    text = flag_values[name].value.strip()
    if not text:
        if allow_empty:
            return []
        raise UsageError(f"--{name} must list at least one integer.")
    values = []
    for item in text.split(","):
        try:
            value = int(item)
        except ValueError:
            raise UsageError(
                f"--{name} must be comma-separated integers, got "
                f"{item.strip()!r} in {text!r}."
            ) from None
        if not minimum <= value <= maximum:
            raise UsageError(
                f"--{name} values must be in {minimum}..{maximum}, got {value}."
            )
        if value in values:
            raise UsageError(f"--{name} lists {value} twice.")
        values.append(value)
    return values


def sweep_config(flag_values):
    """The `SweepConfig` the flags describe (flags already validated)."""
    variants = []
    for norm in parse_list(flag_values, "norms", NORMALIZATIONS):
        if norm == "gn":
            for groups in _integers(flag_values, "groups", 1, 4096):
                variants.append(sweep.Variant("gn", groups=groups))
            continue
        variants.append(sweep.Variant(norm))
    for size in _integers(
        flag_values, "channels_per_group", 1, 4096, allow_empty=True
    ):
        variants.append(sweep.Variant("gn", channels_per_group=size))
    return sweep.SweepConfig(
        variants=tuple(variants),
        batch_sizes=tuple(_integers(flag_values, "batch_sizes", 1, MAX_BATCH)),
        seeds=tuple(_integers(flag_values, "seeds", 0, 2**31 - 1)),
        epochs=flag_values.epochs,
        base_learning_rate=flag_values.learning_rate,
        weight_decay=flag_values.weight_decay,
        decay_normalization=flag_values.decay_normalization,
        width=flag_values.width,
    )


def validate(flag_values):
    if not flag_values.output_dir:
        raise UsageError("--output_dir is required.")
    if not 1 <= flag_values.epochs <= MAX_EPOCHS:
        raise UsageError(
            f"--epochs must be in 1..{MAX_EPOCHS}, got {flag_values.epochs}."
        )
    check_step_sizes(flag_values, ("learning_rate",))
    decay = flag_values.weight_decay
    if not 0 <= decay < 1:
        raise UsageError(
            f"--weight_decay must be in [0, 1), got {decay:g} (the paper "
            "uses 1e-4)."
        )
    if not 1 <= flag_values.width <= 1024:
        raise UsageError(
            f"--width must be in 1..1024, got {flag_values.width}."
        )
    if not 4 <= flag_values.image_size <= 256:
        raise UsageError(
            f"--image_size must be in 4..256, got {flag_values.image_size}."
        )
    if (
        "gn" not in parse_list(flag_values, "norms", NORMALIZATIONS)
        and flag_values.groups != "32"
    ):
        raise UsageError("--groups is only used with gn in --norms.")
    replicas = flag_values.virtual_cpus
    if not 1 <= replicas <= MAX_VIRTUAL_CPUS:
        raise UsageError(
            f"--virtual_cpus must be in 1..{MAX_VIRTUAL_CPUS}, got {replicas}."
        )
    config = sweep_config(flag_values)
    # Model configs (GN divisibility naming the layer), BN at batch 1.
    folder = flag_values.image_folder
    if folder is not None and not os.path.isdir(folder):
        raise UsageError(
            f"--image_folder={folder} is not a directory; give a folder with "
            "one sub-folder of images per class, or leave it out for the "
            "digits."
        )
    replicas = (
        flag_values.virtual_cpus if flag_values.strategy == "mirrored" else 1
    )
    sweep.check_sweep(config, replicas, 10**9, 10)
    check_writable_directory(flag_values.output_dir, "output_dir")


def _load(flag_values):
    """`(train images, train labels, test images, test labels)`."""
    size = flag_values.image_size
    if flag_values.image_folder:
        from tfcv.data.image_folder import load_image_folder

        return load_image_folder(flag_values.image_folder, size)
    from tfcv.data.digits import load_digits

    train_images, train_labels = load_digits("train", image_size=size)
    test_images, test_labels = load_digits("heldout", image_size=size)
    # The digits are grey: one channel instead of three equal ones.
    return (
        train_images[..., :1],
        train_labels,
        test_images[..., :1],
        test_labels,
    )


def _command(flag_values):
    parts = ["tfcv groupnorm sweep"]
    for name in (
        "output_dir",
        "norms",
        "batch_sizes",
        "seeds",
        "groups",
        "channels_per_group",
        "epochs",
        "learning_rate",
        "weight_decay",
        "width",
        "image_folder",
        "image_size",
        "strategy",
        "virtual_cpus",
    ):
        flag = flag_values[name]
        if flag.present:
            parts.append(f"--{name}={flag.value}")
    if flag_values["decay_normalization"].present:
        prefix = "" if flag_values.decay_normalization else "no"
        parts.append(f"--{prefix}decay_normalization")
    return " ".join(parts)


def main(flag_values):
    from tfcv.training.progress import ProgressBar
    from tfcv.training.strategy import make_strategy

    started = time.time()
    config = sweep_config(flag_values)
    data = _load(flag_values)
    num_classes = int(max(data[1].max(), data[3].max())) + 1
    strategy = make_strategy(
        flag_values.strategy, flag_values.virtual_cpus, flag_values.tpu
    )
    replicas = strategy.num_replicas_in_sync
    sweep.check_sweep(config, replicas, len(data[0]), num_classes)
    logging.info(
        "%d train / %d test images of %s, %d classes; %d replica(s); "
        "%d variant(s) x %d batch size(s) x %d seed(s), %d epochs each.",
        len(data[0]),
        len(data[2]),
        tuple(data[0].shape[1:]),
        num_classes,
        replicas,
        len(config.variants),
        len(config.batch_sizes),
        len(config.seeds),
        config.epochs,
    )
    # Progress in training steps over the whole sweep.
    steps_per_seed = sum(
        (len(data[0]) // (batch * replicas)) * config.epochs
        for batch in config.batch_sizes
    ) * len(config.variants)
    bar = ProgressBar(steps_per_seed * len(config.seeds))
    done = [0]
    last = {}

    def on_step(step, loss):
        done[0] += 1
        bar.update(done[0], dict(last, loss=loss))

    def report(result, index, total):
        last.update(runs_done=index, last_error_pct=result.error)
        bar.update(done[0], dict(last), force=index == total)
        logging.info(
            "%s batch %d seed %d: error %.2f%% (%d steps, lr %.4g, %.0f s)",
            result.variant,
            result.batch_size,
            result.seed,
            result.error,
            result.steps,
            result.learning_rate,
            result.seconds,
        )

    results = sweep.run_sweep(
        config, data, strategy, report=report, on_step=on_step
    )
    bar.close()
    seconds = time.time() - started
    summary = sweep.summarize(results)
    command = _command(flag_values)
    table = sweep.markdown_table(
        summary, config.batch_sizes, command=command, seconds=seconds
    )
    effects = {}
    large, small = max(config.batch_sizes), min(config.batch_sizes)
    for variant in summary:
        per_seed = sweep.paired_batch_effects(results, variant, large, small)
        if per_seed and large != small:
            effects[variant] = {
                "large_batch": large,
                "small_batch": small,
                "per_seed_increase": per_seed,
            }
    lines = [
        f"- {variant}: error at batch {e['small_batch']} minus at "
        f"{e['large_batch']}: "
        + ", ".join(f"{d:+.2f}" for d in e["per_seed_increase"])
        + " points per seed"
        for variant, e in effects.items()
    ]
    markdown = (
        "# Normalizations against the batch per replica (Group "
        "Normalization Table 2 and Fig. 1; Table 3 for group sweeps)\n\n"
        f"Reduced ResNet, {config.epochs} epochs, SGD momentum "
        f"{config.momentum} with lr {config.base_learning_rate:g} x B/32, "
        f"weight decay {config.weight_decay:g}, {replicas} replica(s); "
        f"BN statistics per replica.\n\n{table}\n" + "\n".join(lines) + "\n"
    )
    report_json = {
        "runs": [run.__dict__ for run in results],
        "summary": {
            variant: {
                str(batch): {"mean_error": m, "std_error": s, "runs": n}
                for batch, (m, s, n) in cells.items()
            }
            for variant, cells in summary.items()
        },
        "batch_effects": effects,
        "settings": {
            "variants": [v.label for v in config.variants],
            "batch_sizes": list(config.batch_sizes),
            "seeds": list(config.seeds),
            "epochs": config.epochs,
            "learning_rate_at_32": config.base_learning_rate,
            "weight_decay": config.weight_decay,
            "decay_normalization": config.decay_normalization,
            "width": config.width,
            "replicas": replicas,
            "strategy": flag_values.strategy,
            "data": flag_values.image_folder or "scikit-learn digits",
        },
        "paper_table2": sweep.PAPER_TABLE2,
        "command": command,
        "run_seconds": seconds,
    }
    write_outputs(
        flag_values.output_dir,
        {
            "results.json": (
                json.dumps(report_json, indent=2, sort_keys=True) + "\n"
            ).encode(),
            "table2.md": markdown.encode(),
            "figure1.png": sweep.figure1_png(summary, config.batch_sizes),
        },
    )
    print(table, end="")
    print("\n".join(lines))
    print(f"run time {seconds:.0f} s; wrote {flag_values.output_dir}")
    return 0
