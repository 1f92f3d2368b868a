"""Spherical MNIST: the planar and spherical models of Table 1, trained.

Spherical CNNs (Cohen, Geiger, Köhler & Welling, 2018, "Spherical CNNs",
arXiv:1801.10130), §5.2 ("Rotated MNIST on the sphere") and Table 1: a
planar CNN and a spherical CNN are trained on non-rotated (NR) or rotated
(R) digits projected onto the sphere and tested on NR or R digits. The
spherical model integrates over SO(3) before its dense layer, so it is
rotation invariant and keeps its accuracy under rotation; the planar one
does not.

Models (the paper's sizes at `b = 30`):

* `planar_cnn`: conv 5×5 stride 3 (32) - ReLU - conv 5×5 stride 3 (64) -
  ReLU - dense (10): 68,106 parameters on `60 × 60` inputs with "valid"
  padding (60 → 19 → 5, so the dense layer sees 5·5·64 inputs); "same"
  padding would give 60 → 20 → 7 and 83,466 parameters, far from ≈ 68k.
* `spherical_cnn`: S² conv (b 30 → 10, 20) - ReLU - SO(3) conv (b 10 → 6,
  40) - ReLU - integrate over SO(3) - standardize - dense (10), with the
  24-point S² and 72-point SO(3) near-identity kernel grids: 500 + 57,640
  + 410 = 58,550 trainable parameters (≈ 58k), plus the 80 statistics of
  the standardization.

`train_and_evaluate` trains one model on NR or R training digits under a
`tf.distribute` strategy (global batch, Adam, softmax cross-entropy) and
tests it on NR and/or R test digits; `run_table` fills Table 1, training
each model once per training regime (NR/NR and NR/R share one model, as
in the paper).

Shape letters: `B` batch, `2b` grid side, `K` classes (10).

Deviations from the paper:
  - The data are scikit-learn's 1,797 8×8 digits (1,438 train / 359 test)
    by default, not MNIST's 70,000 28×28 digits; MNIST IDX files can be
    given with `source`.
  - The paper gives no optimizer, learning rate, batch size or epochs; we
    use Adam with a cosine-decayed step size and the defaults of
    `SphericalMnistConfig` (chosen by measuring on the digits).
  - For bandwidths other than 30 the inner bandwidths scale with it
    (`scaled_bandwidths`); the paper only uses 30, 10, 6.
  - The integrated features are standardized (batch normalization
    without scale or offset: no trainable parameters) before the dense
    layer, with exact training-set statistics set after training
    (`set_standardization_statistics`). The features vary little around
    a large shared mean (measured at initialization: mean 0.037, spread
    0.004 per feature, condition number ~1,200 of their covariance), so
    without it the dense layer needs tens of thousands of steps (the
    paper's MNIST budget) where the digits give a few hundred; measured
    at 10 epochs: 0.20-0.59 accuracy without, 0.90 with.
"""

import dataclasses
import time

import numpy as np
import tensorflow as tf
import tf_keras

from tfcv.data import spherical_mnist
from tfcv.layers.spherical import S2Convolution
from tfcv.layers.spherical import SO3Convolution
from tfcv.layers.spherical import SO3Integrate
from tfcv.training import supervised as _training

MODEL_NAMES = ("planar", "spherical")
REGIMES = ("NR/NR", "R/R", "NR/R", "R/NR")
TABLE1_REGIMES = ("NR/NR", "R/R", "NR/R")

# Table 1 of the paper (MNIST, 60,000 training images), for comparison.
PAPER_TABLE1 = {
    "planar": {"NR/NR": 0.98, "R/R": 0.23, "NR/R": 0.11},
    "spherical": {"NR/NR": 0.96, "R/R": 0.95, "NR/R": 0.94},
}

# The planar CNN's two valid 5×5 stride-3 convolutions need a grid side of
# at least 17 (side 17 -> 5 -> 1): bandwidth >= 9.
PLANAR_MIN_BANDWIDTH = 9


@dataclasses.dataclass(frozen=True)
class SphericalMnistConfig:
    """The models and training run of §5.2.

    Architecture fields carry the paper's values (§5.2, "Architecture and
    Hyperparameters"); the training fields are ours (the paper is silent)
    and reproduce Table 1's pattern on the digits with

        tfcv spherical mnist --output_dir=runs/table1

    (2-core CPU, `mirrored` over 2 virtual CPUs: see the module
    `tfcv.cli.spherical_mnist` for the measured run time).

    Attributes:
      bandwidth: `b` of the input grid `[2b, 2b]` (§5.2: 30).
      spherical_bandwidths: `(b_in, b_1, b_2)` of the S² and SO(3)
        convolutions (§5.2: 30, 10, 6); `b_in` must equal `bandwidth`.
      spherical_filters: channels of the S² and SO(3) convolutions (§5.2:
        20, 40).
      planar_filters: channels of the two planar convolutions (§5.2: 32, 64).
      planar_kernel_size: side of the planar filters (§5.2: 5).
      planar_strides: stride of both planar convolutions (§5.2: 3).
      num_classes: `K` (10 digits).
      epochs: passes over the training set (ours).
      batch_size: global batch size, split over the replicas (ours).
      learning_rate: Adam's initial step size for the spherical model,
        cosine-decayed to 0 over the run (ours, measured on the digits;
        Adam's other values are the Keras defaults).
      planar_learning_rate: the same for the planar model (ours; at 1e-2
        its R training set can leave it dead at chance level).
      seed: seed of initialization, shuffling and rotations.
    """

    bandwidth: int = 30
    spherical_bandwidths: tuple = (30, 10, 6)
    spherical_filters: tuple = (20, 40)
    planar_filters: tuple = (32, 64)
    planar_kernel_size: int = 5
    planar_strides: int = 3
    num_classes: int = 10
    epochs: int = 15
    batch_size: int = 32
    learning_rate: float = 5e-3
    planar_learning_rate: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        if self.spherical_bandwidths[0] != self.bandwidth:
            raise ValueError(
                f"`spherical_bandwidths[0]` must equal `bandwidth`, received "
                f"{self.spherical_bandwidths} with bandwidth="
                f"{self.bandwidth}; use `scaled_bandwidths(bandwidth)`."
            )


def scaled_bandwidths(bandwidth: int) -> tuple:
    """`(b, b_1, b_2)` with the paper's ratios 30 : 10 : 6, each >= 1.

    Example:
      >>> scaled_bandwidths(30), scaled_bandwidths(8)
      ((30, 10, 6), (8, 3, 2))
    """
    inner = max(1, round(bandwidth / 3))
    return (bandwidth, inner, max(1, min(inner, round(bandwidth / 5))))


def config_for_bandwidth(bandwidth: int, **overrides) -> SphericalMnistConfig:
    """A config at another input bandwidth, inner bandwidths scaled."""
    return SphericalMnistConfig(
        bandwidth=bandwidth,
        spherical_bandwidths=scaled_bandwidths(bandwidth),
        **overrides,
    )


def planar_cnn(config: SphericalMnistConfig = SphericalMnistConfig()):
    """The planar baseline of §5.2: conv-ReLU-conv-ReLU-dense (logits).

    Args:
      config: the sizes; `bandwidth >= 9` (a grid side of at least 17).

    Returns:
      A `tf_keras.Model` mapping `[B, 2b, 2b, 1]` to logits `[B, K]`.

    Raises:
      ValueError: if `config.bandwidth < 9`.

    Example:
      >>> count_trainable(planar_cnn())
      68106
    """
    if config.bandwidth < PLANAR_MIN_BANDWIDTH:
        raise ValueError(
            f"The planar CNN needs a bandwidth >= {PLANAR_MIN_BANDWIDTH} "
            f"(grid side >= 17 for two valid 5x5 stride-3 convolutions), "
            f"received bandwidth={config.bandwidth}; raise it."
        )
    side = 2 * config.bandwidth
    inputs = tf_keras.Input([side, side, 1], name="signal")
    x = inputs
    for index, filters in enumerate(config.planar_filters):
        # NOTE: the paper does not name the padding; "valid" gives its
        # ≈ 68k parameters (module docstring).
        x = tf_keras.layers.Conv2D(
            filters,
            config.planar_kernel_size,
            strides=config.planar_strides,
            padding="valid",
            activation="relu",
            name=f"conv_{index}",
        )(x)
    x = tf_keras.layers.Flatten()(x)
    logits = tf_keras.layers.Dense(config.num_classes, name="logits")(x)
    return tf_keras.Model(inputs, logits, name="planar_cnn")


def spherical_cnn(config: SphericalMnistConfig = SphericalMnistConfig()):
    """The spherical CNN of §5.2: S² conv-ReLU-SO(3) conv-ReLU-∫-dense.

    Args:
      config: the sizes.

    Returns:
      A `tf_keras.Model` mapping `[B, 2b, 2b, 1]` to logits `[B, K]`,
      invariant to rotations of band-limited inputs up to discretization.

    Example:
      >>> count_trainable(spherical_cnn())
      58550
    """
    b_in, b_1, b_2 = config.spherical_bandwidths
    filters_1, filters_2 = config.spherical_filters
    side = 2 * b_in
    inputs = tf_keras.Input([side, side, 1], name="signal")

    # [B, 2b, 2b, 1] -> [B, 2b_1, 2b_1, 2b_1, 20] -> [B, 2b_2, ..., 40]
    x = S2Convolution(filters_1, b_in, b_1, name="s2_conv")(inputs)
    x = tf_keras.layers.ReLU()(x)
    x = SO3Convolution(filters_2, b_1, b_2, name="so3_conv")(x)
    x = tf_keras.layers.ReLU()(x)

    # Haar integral over SO(3): [B, 2b_2, 2b_2, 2b_2, 40] -> [B, 40]
    x = SO3Integrate(name="integrate")(x)
    # Standardized features (module docstring); epsilon far below the
    # features' variance (~1e-5).
    x = tf_keras.layers.BatchNormalization(
        center=False, scale=False, epsilon=1e-8, name="standardize"
    )(x)
    logits = tf_keras.layers.Dense(config.num_classes, name="logits")(x)
    return tf_keras.Model(inputs, logits, name="spherical_cnn")


MODEL_BUILDERS = {"planar": planar_cnn, "spherical": spherical_cnn}


# Kept here for the docstring examples and callers of this module.
count_trainable = _training.count_trainable


def parameter_counts(config: SphericalMnistConfig, model_names=MODEL_NAMES):
    """`{name: trainable parameter count}` of the named models."""
    return {
        name: count_trainable(MODEL_BUILDERS[name](config))
        for name in model_names
    }


def load_data(config: SphericalMnistConfig, source=None) -> dict:
    """Projected digits: `{"train_NR": (x, y), "train_R", "test_NR", ...}`.

    `x` is float32 `[N, 2b, 2b, 1]`, `y` int32 `[N]`. The rotated sets hold
    the same images as the non-rotated ones, each with one Haar-random
    rotation drawn from `config.seed`.
    """
    data = {}
    for rotated, name in ((False, "NR"), (True, "R")):
        x_train, y_train, x_test, y_test = (
            spherical_mnist.load_spherical_digits(
                config.bandwidth,
                rotated_train=rotated,
                rotated_test=rotated,
                seed=config.seed,
                source=source,
            )
        )
        for subset, images in (("training", x_train), ("test", x_test)):
            if not len(images):
                raise ValueError(
                    f"The {subset} set holds no images (source: "
                    f"{source or 'scikit-learn digits'}); give files with "
                    f"{subset} images."
                )
        data[f"train_{name}"] = (x_train, y_train)
        data[f"test_{name}"] = (x_test, y_test)
    return data


def _regime_name(rotated: bool) -> str:
    return "R" if rotated else "NR"


def train_and_evaluate(
    model_name: str,
    train_rotated: bool,
    test_rotated,
    config: SphericalMnistConfig,
    strategy: tf.distribute.Strategy,
    data: dict,
    progress: bool = True,
) -> dict:
    """Trains one model on NR or R digits and tests it.

    Args:
      model_name: `"planar"` or `"spherical"`.
      train_rotated: train on the rotated (R) or non-rotated (NR) digits.
      test_rotated: a bool or a tuple of bools: the test sets to score.
      config: sizes and training settings.
      strategy: the `tf.distribute` strategy; `config.batch_size` is the
        global batch and must be divisible by its replica count.
      data: the output of `load_data(config)`.
      progress: show a progress bar on stderr.

    Returns:
      `{"accuracy": {"NR" or "R": float}, "train_seconds": float,
      "final_loss": float}`.

    Raises:
      ValueError: for an unknown `model_name`, or a batch size that the
        replicas do not divide or that exceeds the training set.
    """
    if model_name not in MODEL_BUILDERS:
        raise ValueError(
            f"`model_name` must be one of {MODEL_NAMES}, received "
            f"{model_name!r}."
        )
    replicas = strategy.num_replicas_in_sync
    x_train, y_train = data[f"train_{_regime_name(train_rotated)}"]
    _training.check_batch_size(
        config.batch_size, replicas, len(x_train), "images"
    )
    tests = (test_rotated,) if isinstance(test_rotated, bool) else test_rotated
    steps_per_epoch = len(x_train) // config.batch_size

    learning_rate = config.learning_rate
    if model_name == "planar":
        learning_rate = config.planar_learning_rate

    # Model and optimizer live on every replica.
    model, optimizer = _training.model_and_optimizer(
        strategy,
        lambda: MODEL_BUILDERS[model_name](config),
        learning_rate,
        steps_per_epoch * config.epochs,
        config.seed,
    )
    dataset = _training.distributed_batches(
        strategy,
        x_train,
        y_train,
        config.batch_size,
        config.epochs,
        config.seed,
    )
    train_step = _training.make_train_step(
        model, optimizer, strategy, config.batch_size, _cross_entropy
    )

    # Train: one step per global batch, a progress bar over all steps.
    started = time.time()
    loss, _ = _training.run_steps(
        train_step, dataset, steps_per_epoch * config.epochs, progress
    )
    set_standardization_statistics(model, x_train)
    seconds = time.time() - started

    accuracy = {}
    for rotated in tests:
        x_test, y_test = data[f"test_{_regime_name(rotated)}"]
        accuracy[_regime_name(rotated)] = evaluate(model, x_test, y_test)
    return {
        "accuracy": accuracy,
        "train_seconds": seconds,
        "final_loss": loss,
    }


def set_standardization_statistics(model, images, batch_size: int = 64):
    """Sets the `standardize` layer's statistics to the exact ones.

    The moving averages of batch normalization lag features that drift
    while the convolutions train, and the integrated features vary little
    around a large mean, so a small lag misclassifies many digits. After
    training, the mean and variance of the features over all of `images`
    replace them. Models without a `standardize` layer are left alone.
    """
    names = [layer.name for layer in model.layers]
    if "standardize" not in names:
        return
    layer = model.get_layer("standardize")
    features = tf_keras.Model(model.inputs, layer.input)
    signature = tf.TensorSpec([None, *images.shape[1:]], tf.float32)
    compute = tf.function(
        lambda batch: features(batch, training=False),
        input_signature=[signature],
    )
    # [N, 2b, 2b, 1] -> [N, F] in float64
    values = np.concatenate(
        [
            compute(tf.constant(images[start : start + batch_size])).numpy()
            for start in range(0, len(images), batch_size)
        ]
    ).astype(np.float64)
    mean, variance = values.mean(0), values.var(0)
    if not (np.all(np.isfinite(values)) and variance.max() < 1e30):
        raise _training.TrainingDiverged(
            f"The trained model's features reach {np.abs(values).max():.3g}"
            " (their variance overflows float32): the training diverged; "
            "lower the learning rate (--learning_rate)."
        )
    layer.moving_mean.assign(mean.astype(np.float32))
    layer.moving_variance.assign(variance.astype(np.float32))


def _cross_entropy(labels, logits):
    """Per-example softmax cross-entropy, `[B] x [B, K] -> [B]`."""
    return tf_keras.losses.sparse_categorical_crossentropy(
        labels, logits, from_logits=True
    )


def evaluate(model, images, labels, batch_size: int = 64) -> float:
    """Top-1 accuracy of `model` on `images [N, 2b, 2b, 1]`, `labels [N]`."""
    return _training.classification_accuracy(model, images, labels, batch_size)


def run_table(
    model_names,
    regimes,
    config: SphericalMnistConfig,
    strategy: tf.distribute.Strategy,
    source=None,
    progress: bool = True,
    log=None,
) -> dict:
    """Fills Table 1: accuracy per model and regime `"X/Y"`.

    Each model is trained once per training regime X and tested on every
    Y asked for with that X.

    Args:
      model_names: a sequence of `MODEL_NAMES`.
      regimes: a sequence of `REGIMES` ("train/test", e.g. "NR/R").
      config: sizes and training settings.
      strategy: the `tf.distribute` strategy.
      source: `None` (scikit-learn digits) or a folder of MNIST IDX files.
      progress: show progress bars.
      log: `None` or a callable taking one line of text per finished run.

    Returns:
      `{"accuracy": {model: {regime: float}}, "parameters": {model: int},
      "train_seconds": {model: {"NR" or "R": float}}}`.

    Raises:
      ValueError: for an unknown model or regime name.
    """
    unknown = [name for name in model_names if name not in MODEL_BUILDERS]
    unknown += [regime for regime in regimes if regime not in REGIMES]
    if unknown:
        raise ValueError(
            f"Unknown model or regime {unknown[0]!r}; expected models from "
            f"{MODEL_NAMES} and regimes from {REGIMES}."
        )
    data = load_data(config, source)
    results = {
        "accuracy": {},
        "parameters": parameter_counts(config, model_names),
        "train_seconds": {},
    }
    for model_name in model_names:
        results["accuracy"][model_name] = {}
        results["train_seconds"][model_name] = {}
        for train_name in ("NR", "R"):
            tests = [
                r.split("/")[1]
                for r in regimes
                if r.startswith(train_name + "/")
            ]
            if not tests:
                continue
            run = train_and_evaluate(
                model_name,
                train_name == "R",
                tuple(name == "R" for name in tests),
                config,
                strategy,
                data,
                progress,
            )
            results["train_seconds"][model_name][train_name] = run[
                "train_seconds"
            ]
            for test_name in tests:
                regime = f"{train_name}/{test_name}"
                accuracy = run["accuracy"][test_name]
                results["accuracy"][model_name][regime] = accuracy
                if log is not None:
                    log(
                        f"{model_name} {regime}: accuracy {accuracy:.3f} "
                        f"(trained {run['train_seconds']:.0f} s, final loss "
                        f"{run['final_loss']:.3f})"
                    )
    return results


def format_table(accuracy: dict, regimes, paper: bool = True) -> str:
    """Table 1 in Markdown: one row per model, one column per regime.

    With `paper=True` the paper's numbers follow in parentheses where
    Table 1 has them.
    """
    lines = [
        "| model | " + " | ".join(regimes) + " |",
        "|---|" + "---|" * len(regimes),
    ]
    for model_name, row in accuracy.items():
        cells = []
        for regime in regimes:
            cell = f"{row[regime]:.3f}" if regime in row else "-"
            reference = PAPER_TABLE1.get(model_name, {}).get(regime)
            if paper and reference is not None:
                cell += f" ({reference:.2f})"
            cells.append(cell)
        lines.append(f"| {model_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
