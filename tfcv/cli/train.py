"""Train a class-conditional BigGAN-style GAN under a tf.distribute strategy.

With the defaults it trains on scikit-learn's digits (1,438 training
images upsampled to 32x32) with `mirrored` over 2 virtual CPU devices, then
collects standing batch-norm statistics for the EMA generator, writes
`samples.png` (one row per class) and judges the samples (conditional
accuracy and Frechet distance, written to `evaluation.json`).

`--model` picks any preset of `tfcv.models` (BigGAN 128/256/512,
BigGAN-deep, SAGAN-128); flags left unset take that model's paper recipe
(e.g. `tfcv train --model=biggan_128 --ch=8 --batch_size=4 --steps=4`).

Rerunning the same command resumes from the latest checkpoint in
--model_dir; a different configuration there is an error. SIGTERM writes a
checkpoint and exits with status 143 (rerun to resume).

Example:
  tfcv train --model_dir=runs/digits --steps=2000
"""

import json
import os
import time

from absl import flags
from absl import logging

from tfcv.cli.common import MAX_VIRTUAL_CPUS
from tfcv.cli.common import check_writable_directory
from tfcv.cli.common import flag_definers
from tfcv.cli.main import UsageError
from tfcv.data import DATASETS
from tfcv.models import MODELS
from tfcv.training.gan_trainer import TrainConfig
from tfcv.training.gan_trainer import recipe_config
from tfcv.training.strategy import STRATEGIES

DEFAULTS = TrainConfig()
RECIPE_FLAGS = (
    "batch_size",
    "d_steps",
    "ch",
    "g_learning_rate",
    "d_learning_rate",
    "beta_1",
    "beta_2",
    "ema_decay",
    "ema_start",
    "orthogonal_regularization",
)

# 128 + SIGTERM: a preempted run is not a finished one, so that
# `tfcv train ... && tfcv export ...` does not export a partial model.
SIGTERM_EXIT_CODE = 143


def define_flags(flag_values):
    string, integer, real = flag_definers(flag_values)
    string(
        "model_dir",
        None,
        "Directory for checkpoints, summaries, "
        "samples.png and evaluation.json (required).",
    )
    string("model", DEFAULTS.model, f"Architecture: one of {sorted(MODELS)}.")
    string(
        "dataset",
        DEFAULTS.dataset,
        f"Training data: one of {sorted(DATASETS)}.",
    )
    integer(
        "steps",
        1750,
        "Train until this many G steps (total, so a "
        "resumed run continues to the same end).",
    )

    def recipe(define, name, help_text):
        # None = the --model's paper recipe (tfcv.training.RECIPES).
        define(
            name,
            None,
            f"{help_text} Default: the --model's recipe "
            f"(biggan_digits_32: {getattr(DEFAULTS, name)}).",
        )

    recipe(integer, "batch_size", "Global batch size of each D/G update.")
    recipe(integer, "d_steps", "D updates per G update.")
    recipe(integer, "ch", "Channel multiplier of G and D.")
    recipe(real, "g_learning_rate", "G's Adam rate.")
    recipe(real, "d_learning_rate", "D's Adam rate.")
    recipe(real, "beta_1", "Adam beta_1.")
    recipe(real, "beta_2", "Adam beta_2.")
    real(
        "adam_epsilon",
        DEFAULTS.adam_epsilon,
        "Adam's epsilon. Larger values damp the first steps' sign-like "
        "updates of near-zero gradients.",
    )
    recipe(real, "ema_decay", "Decay of G's weight EMA.")
    recipe(integer, "ema_start", "Step from which the EMA averages.")
    recipe(
        real,
        "orthogonal_regularization",
        "beta of BigGAN's orthogonal regularization of G (Eq. 3); 0 = off.",
    )
    integer("seed", DEFAULTS.seed, "Seed of initialization and sampling.")
    flags.DEFINE_enum(
        "strategy",
        "mirrored",
        list(STRATEGIES),
        "tf.distribute strategy: default (none), one_device, mirrored (all "
        "local GPUs, or --virtual_cpus logical CPUs), multi_worker (the "
        "cluster in the TF_CONFIG environment variable; see the README's "
        "Distribution section), tpu (needs --tpu).",
        flag_values=flag_values,
    )
    integer(
        "virtual_cpus",
        2,
        "Logical CPU devices for --strategy=mirrored "
        "on a machine without GPUs (1 to 64).",
    )
    string("tpu", "", "TPU name or grpc:// address for --strategy=tpu.")
    real(
        "cluster_timeout",
        900.0,
        "Seconds --strategy=multi_worker waits for every task of TF_CONFIG "
        "to start before giving up (exit status 1); 0 waits forever.",
    )
    flags.DEFINE_enum(
        "jit_compile",
        "auto",
        ["auto", "true", "false"],
        "Compile the train step with XLA. auto: on for default/one_device/"
        "tpu; off for mirrored/multi_worker on CPU, whose collective "
        "all-reduce XLA cannot compile there.",
        flag_values=flag_values,
    )
    flags.DEFINE_enum(
        "mixed_precision",
        "float32",
        ["float32", "bfloat16"],
        "Compute precision of G and D. bfloat16 (TPU's type): variables, "
        "batch-norm and spectral-norm statistics, losses and exports stay "
        "float32.",
        flag_values=flag_values,
    )
    flags.DEFINE_boolean(
        "deterministic",
        False,
        "Make every op deterministic (tf.config.experimental."
        "enable_op_determinism): a killed and resumed run then ends with "
        "exactly the weights of an uninterrupted one. Can be slower.",
        flag_values=flag_values,
    )
    integer("steps_per_call", 25, "Train steps per compiled call.")
    integer("checkpoint_every", 250, "Steps between checkpoints.")
    integer("summary_every", 100, "Steps between TensorBoard summaries.")
    flags.DEFINE_boolean(
        "evaluate",
        True,
        "Judge the samples at the end.",
        flag_values=flag_values,
    )
    integer("eval_per_class", 100, "Samples per class for the evaluation.")


def validate(flag_values):
    if not flag_values.model_dir:
        raise UsageError("--model_dir is required.")
    if flag_values.model not in MODELS:
        raise UsageError(
            f"unknown --model={flag_values.model!r}; available: "
            f"{', '.join(sorted(MODELS))}."
        )
    if flag_values.dataset not in DATASETS:
        raise UsageError(
            f"unknown --dataset={flag_values.dataset!r}; available: "
            f"{', '.join(sorted(DATASETS))}."
        )
    for name in (
        "steps",
        "batch_size",
        "d_steps",
        "ch",
        "steps_per_call",
        "checkpoint_every",
        "summary_every",
        "virtual_cpus",
        "eval_per_class",
    ):
        value = flag_values[name].value
        if value is not None and value < 1:
            raise UsageError(
                f"--{name} must be >= 1, got {flag_values[name].value}."
            )
    timeout = flag_values.cluster_timeout
    if not (0 <= timeout < float("inf")):
        raise UsageError(
            f"--cluster_timeout must be a number of seconds >= 0 (0 waits "
            f"forever), got {timeout}."
        )
    if flag_values.virtual_cpus > MAX_VIRTUAL_CPUS:
        raise UsageError(
            f"--virtual_cpus must be at most {MAX_VIRTUAL_CPUS}, got "
            f"{flag_values.virtual_cpus}; it splits this CPU into that many "
            "logical devices (replicas)."
        )
    _check_tf_config_use(flag_values)
    _check_jit_compile(flag_values)


# Flags that may differ between the tasks of one multi-worker run (paths
# as each machine mounts them, local waits and devices); all others must
# agree, or the workers would silently train different things.
_PER_TASK_FLAGS = ("model_dir", "cluster_timeout", "virtual_cpus", "tpu")


def _run_flags(flag_values):
    """The flags every task of a multi-worker run must share."""
    return {
        name: flag.value
        for name, flag in sorted(flag_values._flags().items())
        if name not in _PER_TASK_FLAGS and not name.startswith("help")
    }


def _check_tf_config_use(flag_values):
    """TF_CONFIG naming a cluster means multi_worker; refuse otherwise."""
    raw = os.environ.get("TF_CONFIG")
    if flag_values.strategy in ("multi_worker", "tpu") or not raw:
        return
    try:
        cluster = json.loads(raw).get("cluster", {})
        tasks = sum(len(addresses) for addresses in cluster.values())
    except (ValueError, AttributeError, TypeError):
        tasks = 0
    if tasks > 1:
        raise UsageError(
            f"TF_CONFIG names a cluster of {tasks} tasks but "
            f"--strategy={flag_values.strategy} trains alone (and every "
            "machine would write the same --model_dir as its chief); pass "
            "--strategy=multi_worker, or unset TF_CONFIG."
        )


def _check_jit_compile(flag_values):
    """XLA cannot compile the cross-device all-reduce of CPU replicas."""
    if flag_values.jit_compile != "true" or flag_values.strategy not in (
        "mirrored",
        "multi_worker",
    ):
        return
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        raise UsageError(
            f"--jit_compile=true cannot compile --strategy="
            f"{flag_values.strategy} on CPU devices (XLA cannot place the "
            "cross-device all-reduce there); use --jit_compile=auto, or "
            "--strategy=default / one_device with XLA."
        )


def train_config_from_flags(flag_values):
    overrides = {
        name: flag_values[name].value
        for name in RECIPE_FLAGS
        if flag_values[name].value is not None
    }
    return recipe_config(
        flag_values.model,
        dataset=flag_values.dataset,
        seed=flag_values.seed,
        adam_epsilon=flag_values.adam_epsilon,
        mixed_precision=flag_values.mixed_precision,
        **overrides,
    )


def main(flag_values):
    started = time.time()

    # First: a SIGTERM from here on (while the cluster forms, the models
    # build or the first step traces) ends the run at the next step with a
    # checkpoint, instead of being lost.
    from tfcv.training.preemption import PreemptionFlag

    stop = PreemptionFlag()
    stop.install()
    try:
        return _train(flag_values, started, stop)
    finally:
        stop.uninstall()


def _train(flag_values, started, stop):
    config = train_config_from_flags(flag_values)
    model_dir = flag_values.model_dir

    if flag_values.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()

    # The strategy first: virtual CPUs must exist before any op runs.
    from tfcv.training.strategy import is_chief
    from tfcv.training.strategy import make_strategy

    strategy = make_strategy(
        flag_values.strategy,
        flag_values.virtual_cpus,
        flag_values.tpu,
        cluster_timeout=flag_values.cluster_timeout,
        stop=stop,
        run_flags=_run_flags(flag_values),
    )
    stop.install()  # Strategies may have replaced the SIGTERM handler.
    chief = is_chief(strategy)
    # Before creating --model_dir, so a rejected run leaves nothing behind.
    from tfcv.training.gan_trainer import check_global_batch

    check_global_batch(config.batch_size, strategy.num_replicas_in_sync)
    if chief:
        check_writable_directory(model_dir, "model_dir")
    jit = flag_values.jit_compile
    if jit == "auto":
        jit_compile = flag_values.strategy in ("default", "one_device", "tpu")
    else:
        jit_compile = jit == "true"

    from tfcv.training.gan_trainer import GANTrainer
    from tfcv.training.progress import ProgressBar

    trainer = GANTrainer(
        config, strategy, model_dir, jit_compile=jit_compile, is_chief=chief
    )
    start = trainer.restore()
    logging.info(
        "Training %s on %s with %s (%d replicas, jit_compile=%s) from step "
        "%d to %d.",
        config.model,
        config.dataset,
        flag_values.strategy,
        strategy.num_replicas_in_sync,
        jit_compile,
        start,
        flag_values.steps,
    )
    trainer.train(
        flag_values.steps,
        steps_per_call=flag_values.steps_per_call,
        checkpoint_every=flag_values.checkpoint_every,
        summary_every=flag_values.summary_every,
        progress=(
            ProgressBar(flag_values.steps, initial=start) if chief else None
        ),
        stop=stop,
    )
    if trainer.interrupted:
        where = (
            "checkpoint written"
            if chief
            else "the chief wrote the run's checkpoint"
        )
        cause = (
            "another worker was stopped by SIGTERM"
            if trainer.stopped_by_peer
            else "stopped by SIGTERM"
        )
        print(
            f"Stopped at step {int(trainer.step.numpy())} ({cause}); "
            f"{where}. Rerun the same command to resume."
        )
        return SIGTERM_EXIT_CODE
    samples_path = trainer.finalize()
    done = f"Trained to step {int(trainer.step.numpy())} in "
    done += f"{time.time() - started:.0f} s"
    print(f"{done}; samples: {samples_path}" if chief else done)
    if flag_values.evaluate and chief:
        import os

        from tfcv.training import evaluation

        results = evaluation.evaluate_generator(
            trainer.ema_generator,
            os.path.join(model_dir, "judge"),
            dataset=config.dataset,
            per_class=flag_values.eval_per_class,
        )
        results["step"] = int(trainer.step.numpy())
        evaluation.write_results(model_dir, results)
        print(evaluation.format_results(results))
    print(f"Total time: {time.time() - started:.0f} s")
    return 0
