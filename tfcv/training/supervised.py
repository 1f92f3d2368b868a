"""The supervised training loop shared by the experiments.

The Spherical CNN experiments (§5.2-§5.4) and the Group Normalization
sweep train one model under a `tf.distribute` strategy with a global
batch and a per-example loss averaged over that batch; this module holds
the parts that do not depend on the task: the batch-size checks, the
distributed step (plus the model's regularization losses), the loop over
exactly the planned steps and top-1 accuracy.

Shape letters: `B` global batch, `K` classes.

Deviations from the paper:
  None (training settings are documented by each experiment).
"""

import math
import time

import numpy as np
import tensorflow as tf
import tf_keras

from tfcv.training.gan_trainer import TrainingDiverged
from tfcv.training.progress import ProgressBar

__all__ = [
    "TrainingDiverged",
    "check_batch_size",
    "classification_accuracy",
    "count_trainable",
    "distributed_batches",
    "make_train_step",
    "model_and_optimizer",
    "run_steps",
]


def count_trainable(model) -> int:
    """The number of trainable parameters of `model`."""
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def check_batch_size(batch_size: int, replicas: int, examples: int, unit: str):
    """Raises a one-line `ValueError` for a batch the run cannot use.

    Args:
      batch_size: the global batch size.
      replicas: the strategy's replica count; must divide `batch_size`.
      examples: training examples; `batch_size` may not exceed it.
      unit: what an example is, for the message ("images", "meshes").
    """
    if batch_size % replicas:
        raise ValueError(
            f"The global batch size {batch_size} is not divisible by the "
            f"{replicas} replicas; pick a multiple of {replicas}."
        )
    if batch_size > examples:
        raise ValueError(
            f"The batch size {batch_size} exceeds the {examples} training "
            f"{unit}; pick at most {examples}."
        )


def model_and_optimizer(strategy, build, learning_rate, total, seed):
    """`build()` and an Adam, cosine-decayed to 0 over `total` steps.

    Both are made under `strategy.scope()` (they live on every replica)
    after seeding Keras, NumPy and Python with `seed`.
    """
    tf_keras.utils.set_random_seed(seed)
    with strategy.scope():
        model = build()
        optimizer = tf_keras.optimizers.Adam(
            tf_keras.optimizers.schedules.CosineDecay(learning_rate, total)
        )
    return model, optimizer


def distributed_batches(strategy, inputs, targets, batch_size, epochs, seed):
    """Shuffled global batches of `(inputs, targets)` for all epochs."""
    dataset = (
        tf.data.Dataset.from_tensor_slices((inputs, targets))
        .shuffle(len(inputs), seed=seed)
        .batch(batch_size, drop_remainder=True)
        .repeat(epochs)
    )
    return strategy.experimental_distribute_dataset(dataset)


def make_train_step(model, optimizer, strategy, global_batch_size, loss_fn):
    """A `tf.function` running one optimizer step on every replica.

    Args:
      model: the model, built under `strategy.scope()`.
      optimizer: its optimizer, made under the same scope.
      strategy: the `tf.distribute` strategy.
      global_batch_size: the batch over all replicas (the loss's divisor).
      loss_fn: `(targets, outputs) -> [B/replicas]` per-example losses.

    Returns:
      `train_step(inputs, targets)` -> the global batch's mean loss.
    """

    def replica_step(inputs, targets):
        with tf.GradientTape() as tape:
            losses = loss_fn(targets, model(inputs, training=True))
            loss = tf.nn.compute_average_loss(
                losses, global_batch_size=global_batch_size
            )
            if model.losses:
                # Weight decay as L2 regularizers: counted once per step.
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    # NOTE: not jit-compiled: the tfcv_ops custom ops are CPU kernels, and
    # XLA cannot compile the cross-device all-reduce on CPU.
    @tf.function
    def train_step(inputs, targets):
        losses = strategy.run(replica_step, args=(inputs, targets))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    return train_step


def run_steps(
    train_step, dataset, total: int, progress: bool = True, check=None
):
    """Runs exactly `total` steps over a distributed dataset.

    NOTE: the loop never asks the iterator for the end of its data: on 2
    virtual CPUs that request sat idle for 30 s to minutes (TF 2.21,
    `MirroredStrategy`), so the dataset must hold at least `total`
    batches.

    Args:
      train_step: `(inputs, targets) -> loss`, e.g. `make_train_step`'s.
      dataset: a distributed dataset of `(inputs, targets)`.
      total: the number of steps.
      progress: show a progress bar on stderr.
      check: `None` or `check(step, loss)`, called after every step (it
        may raise to stop the run).

    Returns:
      `(final loss, seconds)`.

    Raises:
      TrainingDiverged: as soon as the loss is NaN or infinite (the
        command then exits with status 1 and writes nothing).
    """
    iterator = iter(dataset)
    bar = ProgressBar(total) if progress else None
    started = time.time()
    loss = float("nan")
    for step in range(1, total + 1):
        inputs, targets = next(iterator)
        loss = float(train_step(inputs, targets))
        if not math.isfinite(loss):
            if bar is not None:
                bar.close()
            raise TrainingDiverged(
                f"The training loss became {loss} at step {step}; lower "
                "the learning rate (--learning_rate)."
            )
        if check is not None:
            check(step, loss)
        if bar is not None:
            bar.update(step, {"loss": loss}, force=step == total)
    if bar is not None:
        bar.close()
    return loss, time.time() - started


def classification_accuracy(model, inputs, labels, batch_size: int = 64):
    """Top-1 accuracy of `model` (logits `[B, K]`) on NumPy `inputs`."""
    signature = tf.TensorSpec([None, *inputs.shape[1:]], tf.float32)

    @tf.function(input_signature=[signature])
    def predict(batch):
        # [B, ...] -> [B, K] -> [B]
        return tf.argmax(model(batch, training=False), axis=-1)

    correct = 0
    for start in range(0, len(inputs), batch_size):
        batch = tf.constant(inputs[start : start + batch_size], tf.float32)
        predicted = predict(batch).numpy()
        correct += int(np.sum(predicted == labels[start : start + batch_size]))
    return correct / max(len(inputs), 1)
