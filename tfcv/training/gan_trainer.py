"""Strategy-aware training of a class-conditional GAN (BigGAN recipe).

Reference: Brock et al. (2019), arXiv:1809.11096, §3 and Appendix C: hinge
loss, Adam with β1 = 0 and β2 = 0.999, two time-scale learning rates
(Heusel et al. 2017), several D steps per G step, an exponential moving
average of G's weights, batch-norm statistics over the global batch.

One call of the compiled step function runs `steps_per_call` training
steps; each step is `d_steps` discriminator updates then one generator
update, then the EMA update. All randomness is stateless and keyed on
(seed, step): real examples are drawn with replacement from the dataset,
latents from N(0, I), fake classes uniformly. The global batch is drawn
first and each replica takes its contiguous slice, so the examples a step
sees do not depend on the number of replicas, and a resumed run continues
exactly where the checkpoint left off (the data position is the step).

Losses are divided by the global batch size and gradients summed across
replicas by the optimizer; batch sizes given here are global.

Shapes: `B` global batch, `K` classes, images `[B, R, R, 3]` in [-1, 1].

Deviations from the paper: real batches are sampled with replacement
rather than by epoch permutation, which makes the data position a pure
function of the step (exact resumption with no iterator state).
"""

import contextlib
import dataclasses
import json
import os

import numpy as np
import tensorflow as tf
import tf_keras

from tfcv.data import DATASETS
from tfcv.data import get_dataset
from tfcv.losses import hinge_discriminator_loss
from tfcv.losses import hinge_generator_loss
from tfcv.models import MODELS
from tfcv.models import generator_from_config
from tfcv.regularizers import orthogonal_penalty
from tfcv.training import ema
from tfcv.training import samples
from tfcv.training.preemption import PreemptionFlag
from tfcv.training.restore import restore_newest_readable
from tfcv.training.standing_statistics import collect_standing_statistics
from tfcv.training.strategy import task_id

CONFIG_FILE = "config.json"
PRECISIONS = ("float32", "bfloat16")


@contextlib.contextmanager
def _precision_policy(precision):
    """Keras' global dtype policy set for the models built inside."""
    previous = tf_keras.mixed_precision.global_policy()
    policy = "mixed_bfloat16" if precision == "bfloat16" else "float32"
    tf_keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        tf_keras.mixed_precision.set_global_policy(previous)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What defines a training run; a model_dir holds exactly one.

    Attributes:
      model: a name in `tfcv.models.MODELS`.
      dataset: a name in `tfcv.data.DATASETS`.
      ch: the model's channel multiplier (BigGAN: 96 at 128x128; 16 is
        enough for 32x32 digits and trains in minutes on 2 CPU cores).
      batch_size: global batch size `B` per D or G update (BigGAN: 2048;
        32 here, for the same reason).
      d_steps: D updates per G update (Appendix C: 2).
      g_learning_rate: G's Adam learning rate (Appendix C: 5e-5 at B=2048).
      d_learning_rate: D's Adam learning rate (Appendix C: 2e-4).
      beta_1, beta_2: Adam moments (Appendix C: 0 and 0.999).
      adam_epsilon: Adam's ε (1e-8, the Adam paper's).
      ema_decay: decay of G's weight average (Appendix C: 0.9999 over
        hundreds of thousands of steps; 0.999 suits short runs).
      ema_start: steps before the average starts (Appendix C: 20k).
      orthogonal_regularization: β of the off-diagonal orthogonal
        regularization of G's kernels (§3.1, Eq. 3: 1e-4); 0 turns it off.
        The shared class embedding is exempt, as in the authors' code.
      seed: seeds initialization and every random draw.
      mixed_precision: "float32", or "bfloat16" to compute G and D in
        bfloat16 (TPU's native type) with float32 variables, batch-norm
        and spectral-norm statistics, losses and optimizer state.
    """

    model: str = "biggan_digits_32"
    dataset: str = "digits"
    ch: int = 16
    batch_size: int = 32
    d_steps: int = 2
    g_learning_rate: float = 2e-4
    d_learning_rate: float = 4e-4
    beta_1: float = 0.0
    beta_2: float = 0.999
    adam_epsilon: float = 1e-8
    ema_decay: float = 0.999
    ema_start: int = 500
    orthogonal_regularization: float = 1e-4
    seed: int = 0
    mixed_precision: str = "float32"

    def __post_init__(self):
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(
                f"`mixed_precision` must be one of {PRECISIONS}, got "
                f"{self.mixed_precision!r}."
            )
        if self.model not in MODELS:
            raise ValueError(
                f"Unknown model {self.model!r}; available: {sorted(MODELS)}."
            )
        for name in ("ch", "batch_size", "d_steps"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"`{name}` must be >= 1, got {getattr(self, name)}."
                )
        if not self.orthogonal_regularization >= 0:  # also refuses NaN
            raise ValueError(
                "`orthogonal_regularization` must be >= 0, got "
                f"{self.orthogonal_regularization}."
            )
        for name in ("g_learning_rate", "d_learning_rate", "adam_epsilon"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(
                    f"`{name}` must be a finite number > 0, got {value}."
                )
        for name in ("beta_1", "beta_2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(
                    f"`{name}` must be in [0, 1), got {getattr(self, name)}."
                )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(
                f"`ema_decay` must be in [0, 1), got {self.ema_decay}."
            )


# The papers' optimisation per preset, as overrides of TrainConfig's digits
# defaults. BigGAN and BigGAN-deep: Appendix C (batch 2048 from Table 1).
# SAGAN: §5 (Adam β = (0, 0.9), TTUR 1e-4 / 4e-4, 1:1 updates); its batch
# of 256 and the absence of orthogonal regularization are the authors' code.
_BIGGAN_RECIPE = {
    "ch": 96,
    "batch_size": 2048,
    "d_steps": 2,
    "g_learning_rate": 5e-5,
    "d_learning_rate": 2e-4,
    "beta_1": 0.0,
    "beta_2": 0.999,
    "ema_decay": 0.9999,
    "ema_start": 20_000,
    "orthogonal_regularization": 1e-4,
}
RECIPES = {
    "biggan_digits_32": {},
    "biggan_128": _BIGGAN_RECIPE,
    "biggan_256": _BIGGAN_RECIPE,
    "biggan_512": _BIGGAN_RECIPE,
    "biggan_deep_128": {**_BIGGAN_RECIPE, "ch": 128},
    "biggan_deep_256": {**_BIGGAN_RECIPE, "ch": 128},
    "biggan_deep_512": {**_BIGGAN_RECIPE, "ch": 128},
    "sagan_128": {
        "ch": 64,
        "batch_size": 256,
        "d_steps": 1,
        "g_learning_rate": 1e-4,
        "d_learning_rate": 4e-4,
        "beta_1": 0.0,
        "beta_2": 0.9,
        "ema_decay": 0.9999,
        "ema_start": 20_000,
        "orthogonal_regularization": 0.0,
    },
}


def recipe_config(model, **overrides):
    """`TrainConfig` for `model` with its paper recipe, then `overrides`.

    Raises:
      ValueError: if `model` is not a name in `tfcv.models.MODELS`.
    """
    if model not in RECIPES:
        raise ValueError(
            f"Unknown model {model!r}; available: {sorted(RECIPES)}."
        )
    return TrainConfig(model=model, **{**RECIPES[model], **overrides})


def check_global_batch(batch_size, replicas):
    """Raises ValueError unless the global batch splits evenly.

    Raises:
      ValueError: if `batch_size` is not a multiple of `replicas`.
    """
    if batch_size % replicas:
        raise ValueError(
            f"--batch_size={batch_size} (global) is not divisible by the "
            f"{replicas} replicas of the strategy; use a multiple of "
            f"{replicas}."
        )


def save_run_config(model_dir, config, model_config):
    """Writes (or checks against) `<model_dir>/config.json`.

    Raises:
      ValueError: if the directory already holds a run whose configuration
        differs; the message lists the differing fields.
    """
    path = os.path.join(model_dir, CONFIG_FILE)
    record = {
        "train": dataclasses.asdict(config),
        "model": model_config.to_dict(),
    }
    record = json.loads(json.dumps(record))
    if os.path.exists(path):
        with open(path) as handle:
            existing = json.load(handle)
        # Fields added to TrainConfig since the run began take defaults.
        defaults = dataclasses.asdict(TrainConfig(model=config.model))
        existing["train"] = {**defaults, **existing.get("train", {})}
        existing = json.loads(json.dumps(existing))
        if existing != record:
            differences = []
            for part in ("train", "model"):
                old, new = existing.get(part, {}), record[part]
                for key in sorted(set(old) | set(new)):
                    text = f"{key}={old.get(key)!r} (now {new.get(key)!r})"
                    if old.get(key) != new.get(key) and text not in differences:
                        differences.append(text)
            raise ValueError(
                f"--model_dir {model_dir} holds a run with a different "
                f"configuration: {', '.join(differences)}. Use a new "
                "--model_dir or the original flags."
            )
        return
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w") as handle:
        json.dump(record, handle, indent=2, sort_keys=True)
    os.replace(temporary, path)


def load_run_config(model_dir):
    """Reads `(TrainConfig, model config dict)` from a model_dir.

    Raises:
      ValueError: if the directory holds no run.
    """
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise ValueError(
            f"--model_dir {model_dir} holds no training run (no "
            f"{CONFIG_FILE}); train one first with `tfcv train`."
        )
    with open(path) as handle:
        record = json.load(handle)
    return TrainConfig(**record["train"]), record["model"]


class GANTrainer:
    """Trains G and D under a strategy and keeps the EMA generator.

    Args:
      config: a `TrainConfig`.
      strategy: the `tf.distribute.Strategy` to train under.
      model_dir: directory for checkpoints, summaries and samples.
      jit_compile: compile the step function with XLA.
      is_chief: whether this process writes files.

    Raises:
      ValueError: if the global batch is not divisible by the replicas, or
        `model_dir` holds a run of another configuration.
    """

    def __init__(
        self, config, strategy, model_dir, jit_compile=False, is_chief=True
    ):
        check_global_batch(config.batch_size, strategy.num_replicas_in_sync)
        self.config = config
        self.strategy = strategy
        self.model_dir = model_dir
        self.is_chief = is_chief
        self.interrupted = False
        self.stopped_by_peer = False  # Another worker got the SIGTERM.
        self._restored = None  # The step restore() found, once it ran.
        self.num_classes = num_classes = DATASETS[config.dataset][1]

        tf_keras.utils.set_random_seed(config.seed)
        with strategy.scope():
            builder = MODELS[config.model]
            # G and D compute in the run's precision; their variables (and
            # the EMA generator, built below in float32) stay float32.
            with _precision_policy(config.mixed_precision):
                generator, discriminator, model_config = builder(
                    ch=config.ch, num_classes=num_classes
                )
            self.model_config = model_config
            images, labels, _ = get_dataset(
                config.dataset, "train", image_size=model_config.resolution
            )
            self.images = tf.constant(images)
            self.labels = tf.constant(labels)
            self.generator = generator
            self.discriminator = discriminator
            self.ema_generator = generator_from_config(
                config.model, model_config, name="ema"
            )
            self._build_models()
            self.g_optimizer = self._adam(config.g_learning_rate, "g_adam")
            self.d_optimizer = self._adam(config.d_learning_rate, "d_adam")
            self.g_optimizer.build(generator.trainable_variables)
            self.d_optimizer.build(discriminator.trainable_variables)
            self.step = tf.Variable(
                0,
                dtype=tf.int64,
                trainable=False,
                name="step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
            # The step at which the EMA generator's standing statistics
            # were collected (-1: never).
            self.standing_step = tf.Variable(
                -1,
                dtype=tf.int64,
                trainable=False,
                name="standing_step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
        if is_chief:
            os.makedirs(model_dir, exist_ok=True)
            save_run_config(model_dir, config, model_config)
        self.checkpoint = tf.train.Checkpoint(
            step=self.step,
            standing_step=self.standing_step,
            generator=generator,
            discriminator=discriminator,
            ema_generator=self.ema_generator,
            g_optimizer=self.g_optimizer,
            d_optimizer=self.d_optimizer,
        )
        # Every worker restores the chief's checkpoints (model_dir must be
        # storage they all see) and every worker saves, as multi-worker
        # saving requires; the others save to a scratch folder of their
        # own, never to model_dir.
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, model_dir, max_to_keep=3
        )
        self.save_manager = self.manager
        if not is_chief:
            self.save_manager = tf.train.CheckpointManager(
                self.checkpoint,
                os.path.join(model_dir, f".worker-{task_id(strategy)}"),
                max_to_keep=1,
            )
        self.train_function = tf.function(
            self._train_steps, jit_compile=jit_compile
        )

    def _adam(self, learning_rate, name):
        return tf_keras.optimizers.Adam(
            learning_rate,
            beta_1=self.config.beta_1,
            beta_2=self.config.beta_2,
            epsilon=self.config.adam_epsilon,
            name=name,
        )

    def _build_models(self):
        config = self.model_config
        z = tf.zeros([2, config.dim_z])
        y = tf.one_hot([0, 1], config.num_classes)
        side = config.resolution
        # Layers made at build time take the policy in force then.
        with _precision_policy(self.config.mixed_precision):
            self.generator((z, y))
            self.discriminator((tf.zeros([2, side, side, 3]), y))
        self.ema_generator((z, y))
        ema.copy_weights(self.generator, self.ema_generator)

    def restore(self):
        """Restores the newest readable checkpoint, if any; returns the step.

        A newest checkpoint that cannot be read (truncated or corrupt
        files, e.g. from a crash during the save) is reported as a warning
        and the previous one is tried, down to the oldest kept.

        Raises:
          ValueError: if checkpoints exist but none can be read.
        """
        restore_newest_readable(
            self.checkpoint, self.manager.checkpoints, self.model_dir
        )
        self._restored = self._agreed_step()
        return self._restored

    def _agreed_step(self):
        """The restored step, checked to be the same on every worker.

        Raises:
          ValueError: if workers restored different steps (their model_dir
            is not one shared folder).
        """
        step = int(self.step.numpy())
        if task_id(self.strategy) is None:
            return step
        replicas = self.strategy.num_replicas_in_sync

        @tf.function  # Collectives run eagerly would warn about overhead.
        def total_over_replicas(value):
            per_replica = self.strategy.run(lambda: tf.identity(value))
            return self.strategy.reduce("SUM", per_replica, axis=None)

        total = int(total_over_replicas(tf.constant(step, tf.int64)))
        if total != step * replicas:
            raise ValueError(
                f"the workers restored different checkpoints (this one: step "
                f"{step}; mean over replicas {total / replicas:g}); "
                f"--model_dir={self.model_dir} must be one folder every "
                "worker sees (a shared file system or gs://)."
            )
        return step

    # The training step.

    def _draw(self, step, purpose, shape, kind, maxval=None):
        """Stateless draw of the *global* batch for (seed, step, purpose)."""
        seed = tf.stack(
            [
                tf.constant(self.config.seed, tf.int64),
                step * 64 + purpose,
            ]
        )
        if kind == "normal":
            return portable_normal(shape, seed)
        return tf.random.stateless_uniform(
            shape, seed=seed, maxval=maxval, dtype=tf.int32, alg="philox"
        )

    def _replica_slice(self, tensor):
        """This replica's contiguous slice of a global-batch tensor."""
        context = tf.distribute.get_replica_context()
        per_replica = self.config.batch_size // context.num_replicas_in_sync
        start = context.replica_id_in_sync_group * per_replica
        begin = tf.concat(
            [[start], tf.zeros([tensor.shape.rank - 1], tf.int32)], 0
        )
        size = [per_replica] + tensor.shape[1:].as_list()
        return tf.slice(tensor, begin, size)

    def _fake_inputs(self, step, purpose):
        batch = self.config.batch_size
        z = self._draw(
            step, purpose, [batch, self.model_config.dim_z], "normal"
        )
        classes = self._draw(
            step, purpose + 1, [batch], "uniform", self.num_classes
        )
        z = self._replica_slice(z)
        y = tf.one_hot(self._replica_slice(classes), self.num_classes)
        return z, y

    def _discriminator_step(self, step, index):
        batch = self.config.batch_size
        purpose = 4 * index
        indices = self._draw(
            step, purpose, [batch], "uniform", int(self.images.shape[0])
        )
        indices = self._replica_slice(indices)
        real = tf.gather(self.images, indices)
        real_y = tf.one_hot(tf.gather(self.labels, indices), self.num_classes)
        z, fake_y = self._fake_inputs(step, purpose + 1)
        fake = tf.cast(self.generator((z, fake_y), training=True), real.dtype)

        # One D pass over [real; fake] (D has no batch norm).
        with tf.GradientTape() as tape:
            logits = self.discriminator(
                (tf.concat([real, fake], 0), tf.concat([real_y, fake_y], 0)),
                training=True,
            )
            real_logits, fake_logits = tf.split(tf.cast(logits, tf.float32), 2)
            loss = tf.nn.compute_average_loss(
                hinge_discriminator_loss(real_logits, fake_logits),
                global_batch_size=batch,
            )
        variables = self.discriminator.trainable_variables
        gradients = tape.gradient(loss, variables)
        self.d_optimizer.apply_gradients(zip(gradients, variables))
        return loss

    def _generator_step(self, step):
        z, y = self._fake_inputs(step, 60)
        with tf.GradientTape() as tape:
            fake = self.generator((z, y), training=True)
            logits = self.discriminator((fake, y), training=True)
            logits = tf.cast(logits, tf.float32)
            loss = tf.nn.compute_average_loss(
                hinge_generator_loss(logits),
                global_batch_size=self.config.batch_size,
            )
            objective = loss + self._orthogonal_penalty()
        variables = self.generator.trainable_variables
        gradients = tape.gradient(objective, variables)
        self.g_optimizer.apply_gradients(zip(gradients, variables))
        return loss

    def _orthogonal_penalty(self):
        """Eq. 3 over G's kernels, split so that the replicas sum to it."""
        beta = self.config.orthogonal_regularization
        if not beta:
            return 0.0
        penalty = tf.add_n(
            [
                orthogonal_penalty(variable, beta)
                for variable in (
                    self.generator.orthogonal_regularization_variables()
                )
            ]
        )
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        return penalty / replicas

    def _replica_step(self, step):
        d_loss = 0.0
        for index in range(self.config.d_steps):
            d_loss = self._discriminator_step(step, index)
        g_loss = self._generator_step(step)
        return d_loss, g_loss

    def _train_steps(self, num_steps, stop_requested=False):
        d_loss = g_loss = tf.constant(0.0)
        # The first step (1-based) whose losses were not finite; -1: none.
        bad_step = tf.constant(-1, tf.int64)
        for _ in tf.range(num_steps):
            step = self.step.read_value()
            per_replica = self.strategy.run(self._replica_step, args=(step,))
            d_loss, g_loss = [
                self.strategy.reduce("SUM", value, axis=None)
                for value in per_replica
            ]
            finite = tf.logical_and(
                tf.math.is_finite(d_loss), tf.math.is_finite(g_loss)
            )
            bad_step = tf.where(
                tf.logical_and(bad_step < 0, tf.logical_not(finite)),
                step + 1,
                bad_step,
            )
            self.step.assign_add(1)
            ema.update_ema(
                self.generator,
                self.ema_generator,
                self.config.ema_decay,
                self.step,
                self.config.ema_start,
            )
        # A NaN can hide from the losses (ReLU and the hinge map NaN to 0
        # on CPU), so the weights are checked too: one pass per call.
        weights_finite = tf.reduce_all(
            [
                tf.reduce_all(tf.math.is_finite(variable))
                for model in (self.generator, self.discriminator)
                for variable in model.trainable_variables
            ]
        )
        # Whether any worker was asked to stop (SIGTERM): all of them stop
        # after this call, at the same step, and the chief saves it.
        stop_value = tf.cast(stop_requested, tf.float32)
        per_replica_stop = self.strategy.run(lambda: tf.identity(stop_value))
        any_stop = self.strategy.reduce("SUM", per_replica_stop, axis=None)
        return {
            "d_loss": d_loss,
            "g_loss": g_loss,
            "bad_step": bad_step,
            "weights_finite": weights_finite,
            "stop": any_stop > 0,
        }

    # The loop around it.

    def train(
        self,
        total_steps,
        steps_per_call=10,
        checkpoint_every=500,
        summary_every=50,
        progress=None,
        stop=None,
    ):
        """Trains until `step == total_steps`, resuming from a checkpoint.

        Args:
          total_steps: the step to stop at.
          steps_per_call: steps per compiled call (host round trips).
          checkpoint_every: steps between checkpoints (a killed run loses
            at most this many).
          summary_every: steps between TensorBoard summaries.
          progress: a `ProgressBar`-like object, or None.
          stop: a `PreemptionFlag` the caller installed (so that a SIGTERM
            before this call counts too); None installs one for the
            duration of the call. When it is set, training writes a
            checkpoint and returns at the next call boundary.

        Returns:
          The last losses as a dict of floats.
        """
        step = (
            # Restored once already (by the caller, or an earlier train()):
            # go on from the current step, without a second warning.
            int(self.step.numpy())
            if self._restored is not None
            else self.restore()
        )
        writer = (
            tf.summary.create_file_writer(
                os.path.join(self.model_dir, "summaries")
            )
            if self.is_chief
            else tf.summary.create_noop_writer()
        )
        own_flag = stop is None
        if own_flag:
            stop = PreemptionFlag()
        stop.install()
        losses = {}
        # Workers of one cluster must stop together (a lone worker would
        # leave the others waiting in a collective): they agree on a stop
        # in each call. A single process stops at once.
        cluster = task_id(self.strategy) is not None
        stopping = False
        try:
            while step < total_steps and not stopping:
                if stop.requested and not cluster:
                    break
                count = min(
                    steps_per_call,
                    total_steps - step,
                    _until_next(step, checkpoint_every),
                    _until_next(step, summary_every),
                )
                outputs = self.train_function(
                    tf.constant(count), tf.constant(stop.requested)
                )
                stopping = bool(outputs["stop"])
                step += count
                losses = {
                    name: float(outputs[name]) for name in ("d_loss", "g_loss")
                }
                _check_finite(outputs, step, count, self.manager)
                if progress is not None:
                    progress.update(step, losses)
                if step % summary_every == 0 or step == total_steps:
                    self._write_summaries(writer, step, losses)
                if step % checkpoint_every == 0:
                    self.save()
            self.save()
        finally:
            if own_flag:
                stop.uninstall()
            if progress is not None:
                progress.close()
        self.interrupted = stop.requested or stopping
        self.stopped_by_peer = stopping and not stop.requested
        return losses

    def save(self):
        """Writes a checkpoint at the current step (others: to scratch)."""
        self.save_manager.save(checkpoint_number=int(self.step.numpy()))

    def _write_summaries(self, writer, step, losses):
        if not self.is_chief:
            return
        with writer.as_default(step=step):
            for name, value in losses.items():
                tf.summary.scalar(name, value)
            z, y = samples.grid_latents(
                self.num_classes, 8, self.model_config.dim_z, seed=0
            )
            images = self.ema_generator(
                (z, y), training=False, batch_statistics=True
            )
            grid = samples.image_grid(images.numpy(), self.num_classes)
            tf.summary.image("ema_samples", grid[None], max_outputs=1)
        writer.flush()

    def finalize(self, per_class=10, seed=0):
        """Collects standing statistics for the EMA generator, saves a
        checkpoint with them and writes `samples.png` (a row per class).

        Returns:
          The path of the sample grid.
        """
        collect_standing_statistics(self.ema_generator, seed=self.config.seed)
        self.standing_step.assign(self.step)
        self.save()
        path = os.path.join(self.model_dir, "samples.png")
        if self.is_chief:
            grid = sample_grid(self.ema_generator, per_class, seed=seed)
            samples.write_png(path, grid)
        return path


def sample_grid(generator, per_class=10, seed=0, truncation=1.0):
    """A uint8 grid from `generator` at inference, one row per class."""
    config = generator.config
    z, y = samples.grid_latents(
        config.num_classes, per_class, config.dim_z, seed, truncation
    )
    images = generator((z, y), training=False, truncation=truncation)
    return samples.image_grid(images.numpy(), config.num_classes)


# Resolution of `portable_normal`'s uniform grid: 2^23 levels, so that
# k + 1/2 is exact in float32 for every level k (with 2^24 levels the top
# one rounds to 2^24, u to 1 and Φ⁻¹(u) to +inf).
_NORMAL_LEVELS = 2**23


def portable_normal(shape, seed):
    """Standard-normal draws that XLA and the TF kernels agree on.

    TensorFlow's stateless normal (and float uniform) ops give other
    numbers when compiled with XLA, even with `alg="philox"`; its integer
    uniform op gives the same ones. So: integers `k` uniform in `[0, 2^23)`,
    `u = (k + 1/2) / 2^23` in (0, 1) exactly, and `Φ⁻¹(u)` (all values
    within ±5.4, finite).

    Args:
      shape: output shape.
      seed: shape-[2] integer seed.
    """
    levels = tf.random.stateless_uniform(
        shape, seed=seed, maxval=_NORMAL_LEVELS, dtype=tf.int32, alg="philox"
    )
    return levels_to_normal(levels)


def levels_to_normal(levels):
    """Integer levels in `[0, 2^23)` -> Φ⁻¹((k + 1/2) / 2^23), finite."""
    uniform = (tf.cast(levels, tf.float32) + 0.5) / _NORMAL_LEVELS
    return tf.math.ndtri(uniform)


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; nothing after the last good
    checkpoint was saved."""


def _check_finite(outputs, step, count, manager):
    """Raises `TrainingDiverged` if a loss or a weight is NaN or infinite.

    Args:
      outputs: the train function's results (losses of the last step,
        `bad_step`, `weights_finite`).
      step: the step reached; `count` steps ran in this call.
      manager: the checkpoint manager, to name the last good checkpoint.
    """
    bad_step = int(outputs["bad_step"])
    if bad_step < 0 and bool(outputs["weights_finite"]):
        return
    latest = manager.latest_checkpoint
    kept = (
        f"the newest checkpoint, {os.path.basename(latest)}, is the last "
        "good one"
        if latest
        else "no checkpoint was written"
    )
    if bad_step >= 0:
        what = f"a loss became NaN or infinite at step {bad_step}"
        losses = ", ".join(
            f"{name} {float(outputs[name]):.4g}"
            for name in ("d_loss", "g_loss")
        )
        what += f" (at step {step}: {losses})"
    else:
        steps = (
            f"step {step}" if count == 1 else f"steps {step - count + 1}-{step}"
        )
        what = f"G's or D's weights hold NaN or infinite values after {steps}"
    raise TrainingDiverged(
        f"training diverged: {what}; stopped without saving, {kept}. Lower "
        "the learning rates, or rerun with --steps_per_call=1 to find the "
        "first bad step."
    )


def _until_next(step, every):
    return every - step % every


def generate(generator, labels, seed=0, truncation=1.0, batch_size=200):
    """Generates images `[N, R, R, 3]` for class `labels [N]` at inference."""
    config = generator.config
    labels = np.asarray(labels)
    z = truncation * tf.random.stateless_truncated_normal(
        [len(labels), config.dim_z], seed=[seed, 777], alg="philox"
    )
    y = tf.one_hot(labels, config.num_classes)
    call = tf.function(
        lambda z, y: generator((z, y), training=False, truncation=truncation)
    )
    outputs = []
    for start in range(0, len(labels), batch_size):
        outputs.append(
            call(
                z[start : start + batch_size], y[start : start + batch_size]
            ).numpy()
        )
    return np.concatenate(outputs)
