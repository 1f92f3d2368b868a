"""Loading the EMA generator of a training run for sampling and export."""

import tensorflow as tf

from tfcv.models import generator_from_config
from tfcv.training.gan_trainer import load_run_config
from tfcv.training.restore import restore_newest_readable
from tfcv.training.standing_statistics import collect_standing_statistics


def load_ema_generator(model_dir):
    """Restores the latest EMA generator of `model_dir`, ready for inference.

    Standing batch-norm statistics are collected (deterministically, from
    the run's seed) if the checkpoint was written before they were.

    Returns:
      `(generator, step)`.

    Raises:
      ValueError: if `model_dir` holds no run or no checkpoint.
    """
    train_config, model_config = load_run_config(model_dir)
    state = tf.train.get_checkpoint_state(model_dir)
    if state is None or not state.all_model_checkpoint_paths:
        raise ValueError(
            f"--model_dir {model_dir} holds no checkpoint; train first with "
            f"`tfcv train --model_dir={model_dir}`."
        )
    generator = generator_from_config(
        train_config.model, model_config, name="ema"
    )
    config = generator.config
    generator(
        (tf.zeros([1, config.dim_z]), tf.one_hot([0], config.num_classes))
    )
    step = tf.Variable(0, dtype=tf.int64)
    standing_step = tf.Variable(-1, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(
        step=step, standing_step=standing_step, ema_generator=generator
    )
    # get_checkpoint_state already prefixes relative paths with model_dir.
    paths = list(state.all_model_checkpoint_paths)
    restore_newest_readable(checkpoint, paths, model_dir)
    if int(standing_step.numpy()) != int(step.numpy()):
        collect_standing_statistics(generator, seed=train_config.seed)
    return generator, int(step.numpy())
