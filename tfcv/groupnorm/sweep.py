"""BN against GN as the batch per device shrinks (GN paper §4.1, Fig. 1).

Reference: Wu & He (2018), "Group Normalization", arXiv:1803.08494:
Figure 1 and Table 2 (error vs images per device for BN and GN, ResNet-50 on
ImageNet) and Table 3 (the number of groups, or of channels per group).

The experiment trains the reduced ResNet of `tfcv.models.resnet` once per
(normalization, per-replica batch, seed) and reports the test error:

  * BN's statistics are computed per replica, not synchronized (§4.1: "the
    batch mean and variance of BN are computed within each GPU");
  * the learning rate is scaled linearly with the global batch (§4.1,
    after Goyal et al. 2017): `lr = base_lr · B / reference_batch`;
  * every run sees the same number of epochs, so a smaller batch takes
    proportionally more steps (§4.1: "the same number of epochs");
  * SGD with momentum 0.9, weight decay 1e-4 on all weights including γ
    and β, the learning rate divided by 10 after 30 %, 60 % and 90 % of the
    steps (the paper's 30, 60 and 90 of 100 epochs);
  * zero-initialized γ in the last normalization of every block, He
    initialization, G = 32 (all §4.1).

Error is measured with BN's moving averages (inference mode), as the
paper's validation error is. The default data are scikit-learn's digits
(1,438 training and 359 held-out 8×8 images, `tfcv.data.digits`); an image
folder can replace them.

Deviations from the paper: the model is the reduced ResNet (one bottleneck
per stage, width 32, 3×3 stem, 2.0M parameters) on 8×8 digits instead of
ResNet-50 on 224×224 ImageNet crops; no data augmentation; 10 epochs;
the base learning rate is 0.025 at batch 32 (twice the paper's 0.1 per 256
images, which is too slow for 10 epochs; 0.1 at 32 diverged with GN) with
one epoch of linear warm-up (Goyal et al. 2017; the paper needs none at
its 256-image global batch); 3 seeds, mean and spread reported instead
of the median of the last 5 epochs.
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf
import tf_keras

from tfcv.models import resnet
from tfcv.training import supervised

# Table 2's columns: images per device.
PAPER_BATCH_SIZES = (32, 16, 8, 4, 2)
# Table 2 (ResNet-50, ImageNet validation error %), for the table's notes.
PAPER_TABLE2 = {
    "bn": {32: 23.6, 16: 23.7, 8: 24.8, 4: 27.3, 2: 34.7},
    "gn": {32: 24.1, 16: 24.2, 8: 24.0, 4: 24.2, 2: 24.1},
}
# Fractions of the run after which the learning rate drops 10x.
DECAY_POINTS = (0.3, 0.6, 0.9)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One normalization setting: a row of Table 2 or Table 3.

    Attributes:
      norm: a name of `tfcv.models.resnet.NORMALIZATIONS`.
      groups: G for `gn`.
      channels_per_group: if set, `gn` with this many channels per group.
    """

    norm: str
    groups: int = 32
    channels_per_group: int | None = None

    @property
    def label(self):
        if self.norm != "gn":
            return self.norm.upper().replace("_", " ")
        if self.channels_per_group:
            return f"GN C/G={self.channels_per_group}"
        if self.groups != 32:
            return f"GN G={self.groups}"
        return "GN"


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """What `run_sweep` trains.

    Attributes:
      variants: the normalizations compared.
      batch_sizes: images per replica.
      seeds: one run per seed and cell.
      epochs: passes over the training set, the same for every batch.
      base_learning_rate: the learning rate at a global batch of
        `reference_batch`.
      reference_batch: see `base_learning_rate`.
      warmup_epochs: epochs of linear learning-rate warm-up (Goyal et
        al. 2017); 0 for none.
      momentum: SGD momentum.
      weight_decay: λ of SGD's weight decay.
      decay_normalization: decay γ and β too (§4.1).
      width: bottleneck width of the reduced ResNet's first stage.
    """

    variants: tuple = (Variant("bn"), Variant("gn"))
    batch_sizes: tuple = PAPER_BATCH_SIZES
    seeds: tuple = (0, 1, 2)
    epochs: int = 10
    base_learning_rate: float = 0.025
    reference_batch: int = 32
    warmup_epochs: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    decay_normalization: bool = True
    width: int = 32

    def model_config(self, variant, num_classes):
        """The reduced ResNet's config for `variant`."""
        return resnet.reduced_config(
            variant.norm,
            num_classes,
            groups=variant.groups,
            channels_per_group=variant.channels_per_group,
            width=self.width,
            stem_width=self.width,
            weight_decay=self.weight_decay,
            decay_normalization=self.decay_normalization,
        )


@dataclasses.dataclass(frozen=True)
class RunResult:
    """One trained model's outcome."""

    variant: str
    batch_size: int
    seed: int
    error: float
    train_loss: float
    steps: int
    learning_rate: float
    seconds: float


def check_sweep(config, replicas, train_examples, num_classes):
    """Raises a one-line ValueError for a sweep that cannot run.

    Checks every model config (unknown norms, GN groups that do not divide
    a layer's channels, naming the layer), BN with one image per replica,
    and batches larger than the training set.
    """
    for variant in config.variants:
        config.model_config(variant, num_classes)
        if variant.norm == "frozen_bn":
            raise ValueError(
                "frozen_bn (BN*) normalizes with statistics loaded from a "
                "trained BN model; trained from scratch it has none (μ = 0, "
                "σ = 1), so the sweep cannot compare it. Use bn, sync_bn, "
                "gn, ln or in."
            )
        alone = variant.norm == "bn" or (
            variant.norm == "sync_bn" and replicas == 1
        )
        if alone and 1 in config.batch_sizes:
            raise ValueError(
                f"{variant.label} with 1 image per replica is meaningless: "
                "its batch statistics would be one image's own, so it "
                "cannot normalize across examples. Drop batch size 1 or "
                "compare GN alone (--norms=gn)."
            )
    for batch in config.batch_sizes:
        if batch * replicas > train_examples:
            raise ValueError(
                f"A per-replica batch of {batch} on {replicas} replicas "
                f"needs {batch * replicas} images per step, but the "
                f"training set has {train_examples}; use smaller batches."
            )


class WarmupStepDecay(tf_keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `rate` over `warmup` steps, then 10x drops.

    Goyal et al. (2017), arXiv:1706.02677, §2.2 (gradual warm-up, the
    companion of the linear scaling rule), then the GN paper's schedule:
    ÷10 at each of `boundaries`.
    """

    def __init__(self, rate, warmup, boundaries):
        super().__init__()
        self.rate = float(rate)
        self.warmup = int(warmup)
        self.boundaries = [int(b) for b in boundaries]

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        drops = tf.add_n(
            [tf.cast(step >= b, tf.float32) for b in self.boundaries]
        )
        rate = self.rate * tf.pow(0.1, drops)
        if self.warmup > 0:
            ramp = tf.minimum(1.0, (step + 1.0) / float(self.warmup))
            rate = rate * ramp
        return rate

    def get_config(self):
        return {
            "rate": self.rate,
            "warmup": self.warmup,
            "boundaries": self.boundaries,
        }


def _learning_rate_schedule(config, global_batch, total_steps):
    rate = config.base_learning_rate * global_batch / config.reference_batch
    boundaries = sorted(
        {max(1, int(round(total_steps * point))) for point in DECAY_POINTS}
    )
    # At most a fifth of the run, so that a short run still reaches `rate`.
    fraction = min(config.warmup_epochs / config.epochs, 0.2)
    warmup = int(round(total_steps * fraction))
    return rate, WarmupStepDecay(rate, warmup, boundaries)


def _sparse_cross_entropy(labels, logits):
    # [B, K] logits, [B] labels -> [B] losses (float32 under any policy).
    return tf_keras.losses.sparse_categorical_crossentropy(
        labels, tf.cast(logits, tf.float32), from_logits=True
    )


def train_once(
    config,
    variant,
    batch_size,
    seed,
    data,
    strategy,
    on_step=None,
):
    """Trains one reduced ResNet; returns its `RunResult`.

    Args:
      config: the `SweepConfig`.
      variant: the `Variant` to train.
      batch_size: images per replica.
      seed: seeds the weights and the shuffling.
      data: `(train_images, train_labels, test_images, test_labels)`,
        images `[N, H, W, C]` float32, labels `[N]` int32.
      strategy: the `tf.distribute` strategy.
      on_step: optional `on_step(step, loss)` after every training step
        (progress display).

    Raises:
      TrainingDiverged: if the loss becomes NaN or infinite.
    """
    train_images, train_labels, test_images, test_labels = data
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    replicas = strategy.num_replicas_in_sync
    global_batch = batch_size * replicas
    steps_per_epoch = len(train_images) // global_batch
    total = steps_per_epoch * config.epochs
    rate, schedule = _learning_rate_schedule(config, global_batch, total)

    tf_keras.utils.set_random_seed(seed)
    with strategy.scope():
        model = resnet.resnet(
            config.model_config(variant, num_classes),
            input_shape=train_images.shape[1:],
        )
        optimizer = tf_keras.optimizers.SGD(schedule, momentum=config.momentum)
    step = supervised.make_train_step(
        model, optimizer, strategy, global_batch, _sparse_cross_entropy
    )
    batches = supervised.distributed_batches(
        strategy, train_images, train_labels, global_batch, config.epochs, seed
    )
    loss, seconds = supervised.run_steps(
        step, batches, total, progress=False, check=on_step
    )
    accuracy = supervised.classification_accuracy(
        model, test_images, test_labels
    )
    return RunResult(
        variant=variant.label,
        batch_size=batch_size,
        seed=seed,
        error=100.0 * (1.0 - accuracy),
        train_loss=loss,
        steps=total,
        learning_rate=rate,
        seconds=seconds,
    )


def run_sweep(config, data, strategy, report=None, on_step=None):
    """Trains every (variant, batch, seed); returns the `RunResult`s.

    Args:
      config: the `SweepConfig`.
      data: as for `train_once`.
      strategy: the `tf.distribute` strategy.
      report: optional `report(result, done, total)` after each run.
      on_step: optional `on_step(step, loss)` after every training step.
    """
    results = []
    cells = [
        (variant, batch, seed)
        for seed in config.seeds
        for variant in config.variants
        for batch in config.batch_sizes
    ]
    for index, (variant, batch, seed) in enumerate(cells, 1):
        result = train_once(
            config, variant, batch, seed, data, strategy, on_step=on_step
        )
        results.append(result)
        if report is not None:
            report(result, index, len(cells))
    return results


def summarize(results):
    """`{variant: {batch: (mean error, std error, runs)}}` in percent."""
    table = {}
    for result in results:
        cell = table.setdefault(result.variant, {}).setdefault(
            result.batch_size, []
        )
        cell.append(result.error)
    return {
        variant: {
            batch: (
                float(np.mean(errors)),
                float(np.std(errors, ddof=1)) if len(errors) > 1 else 0.0,
                len(errors),
            )
            for batch, errors in cells.items()
        }
        for variant, cells in table.items()
    }


def paired_batch_effects(results, variant, large, small):
    """Per-seed `error(small) - error(large)` of `variant`, by seed."""
    errors = {
        (r.batch_size, r.seed): r.error for r in results if r.variant == variant
    }
    seeds = sorted({seed for batch, seed in errors if batch == large})
    return [
        errors[(small, seed)] - errors[(large, seed)]
        for seed in seeds
        if (small, seed) in errors
    ]


def markdown_table(summary, batch_sizes, command="", seconds=None):
    """Table 2 in Markdown: error (%) per variant and images per replica."""
    header = "| images per replica | " + " | ".join(str(b) for b in batch_sizes)
    lines = [header + " |", "|---" * (len(batch_sizes) + 1) + "|"]
    for variant, cells in summary.items():
        row = [variant]
        for batch in batch_sizes:
            if batch in cells:
                mean, std, runs = cells[batch]
                row.append(
                    f"{mean:.2f} ± {std:.2f}" if runs > 1 else f"{mean:.2f}"
                )
            else:
                row.append("–")
        lines.append("| " + " | ".join(row) + " |")
    if "BN" in summary and "GN" in summary:
        row = ["BN − GN"]
        for batch in batch_sizes:
            if batch in summary["BN"] and batch in summary["GN"]:
                difference = summary["BN"][batch][0] - summary["GN"][batch][0]
                row.append(f"{difference:+.2f}")
            else:
                row.append("–")
        lines.append("| " + " | ".join(row) + " |")
    paper = ", ".join(
        f"{norm.upper()} " + "/".join(f"{v:g}" for v in values.values())
        for norm, values in PAPER_TABLE2.items()
    )
    runs = max(
        (cell[2] for cells in summary.values() for cell in cells.values()),
        default=0,
    )
    text = (
        "Test error (%), mean ± standard deviation over "
        f"{runs} seed(s).\n\n" + "\n".join(lines) + "\n\n"
        f"Paper (ResNet-50, ImageNet, batch 32/16/8/4/2): {paper}.\n"
    )
    if command:
        text += f"\nCommand: `{command}`"
        if seconds is not None:
            text += f" ({seconds:.0f} s)"
        text += ".\n"
    return text


def figure1_png(summary, batch_sizes):
    """Figure 1: error against images per replica, one line per variant."""
    import io

    from tfcv.plots import Series
    from tfcv.plots import line_plot

    labels = [str(b) for b in batch_sizes]
    series = []
    for variant, cells in summary.items():
        series.append(
            Series(
                variant,
                list(range(len(batch_sizes))),
                [cells.get(b, (math.nan,))[0] for b in batch_sizes],
                [cells.get(b, (0, 0.0))[1] for b in batch_sizes],
            )
        )
    runs = max(
        (cell[2] for cells in summary.values() for cell in cells.values()),
        default=0,
    )
    title = f"test error, mean ± std over {runs} seed(s)"
    image = line_plot(
        [(title, series)],
        "images per replica",
        "error (%)",
        x_tick_labels=labels,
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
