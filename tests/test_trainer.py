"""The GAN trainer: replica-count invariance and exact resumption."""

import dataclasses
import glob
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tfcv.training.gan_trainer import GANTrainer
from tfcv.training.gan_trainer import TrainingDiverged
from tfcv.training.gan_trainer import TrainConfig
from tfcv.training.gan_trainer import load_run_config
from tfcv.training.gan_trainer import save_run_config

# Adam's first updates are lr · g / (|g| + ε): with the default ε = 1e-8 a
# gradient entry of 1e-9 moves its weight by lr/10, so float rounding of
# near-zero gradients (different summation orders on 1 or 2 replicas)
# would dominate the comparison. A larger ε keeps the comparison about the
# gradients themselves.
TINY = TrainConfig(ch=8, batch_size=8, ema_start=1, seed=3, adam_epsilon=1e-3)


def _weights(trainer):
    return [
        np.array(v.numpy())
        for model in (
            trainer.generator,
            trainer.discriminator,
            trainer.ema_generator,
        )
        for v in model.variables
    ]


def _assert_close(first, second, atol):
    assert len(first) == len(second)
    worst = max(np.abs(a - b).max() for a, b in zip(first, second))
    assert worst <= atol, worst


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mirrored_strategy):
    """Trains the tiny GAN the ways the tests compare."""
    results = {}

    # Mirrored, 2 replicas, uninterrupted: weights after step 1 and 3.
    straight = GANTrainer(
        TINY,
        mirrored_strategy,
        str(tmp_path_factory.mktemp("straight")),
    )
    straight.train(1, steps_per_call=1)
    results["mirrored_step_1"] = _weights(straight)
    straight.train(3, steps_per_call=2)
    results["mirrored_step_3"] = _weights(straight)

    # One replica, one step.
    single = GANTrainer(
        TINY,
        tf.distribute.OneDeviceStrategy("/cpu:0"),
        str(tmp_path_factory.mktemp("single")),
    )
    single.train(1, steps_per_call=1)
    results["single_step_1"] = _weights(single)

    # Mirrored, stopped at step 2, resumed by a new trainer to step 3.
    resumed_dir = str(tmp_path_factory.mktemp("resumed"))
    first = GANTrainer(TINY, mirrored_strategy, resumed_dir)
    first.train(2, steps_per_call=2, checkpoint_every=2)
    second = GANTrainer(TINY, mirrored_strategy, resumed_dir)
    results["resumed_from"] = second.restore()
    second.train(3, steps_per_call=1)
    results["resumed_step_3"] = _weights(second)
    results["resumed_dir"] = resumed_dir
    return results


def test_one_step_is_the_same_on_one_and_two_replicas(runs):
    _assert_close(runs["single_step_1"], runs["mirrored_step_1"], atol=1e-4)


def test_training_changes_the_weights(runs):
    changes = [
        np.abs(a - b).max()
        for a, b in zip(runs["mirrored_step_1"], runs["mirrored_step_3"])
    ]
    assert max(changes) > 1e-3


def test_resumed_run_ends_with_the_uninterrupted_weights(runs):
    assert runs["resumed_from"] == 2
    _assert_close(runs["resumed_step_3"], runs["mirrored_step_3"], atol=1e-6)


def test_model_dir_with_another_configuration_is_refused(runs):
    other = dataclasses.replace(TINY, ch=16)
    _, model_config = load_run_config(runs["resumed_dir"])

    from tfcv.models import BigGANConfig

    with pytest.raises(ValueError, match=r"ch=8 \(now 16\)"):
        save_run_config(
            runs["resumed_dir"], other, BigGANConfig.from_dict(model_config)
        )


def test_global_batch_must_divide_across_replicas(tmp_path, mirrored_strategy):
    strategy = mirrored_strategy
    config = TrainConfig(ch=8, batch_size=7)

    with pytest.raises(ValueError, match="not divisible by the 2 replicas"):
        GANTrainer(config, strategy, str(tmp_path))


def test_train_config_rejects_bad_values():
    with pytest.raises(ValueError, match="Unknown model"):
        TrainConfig(model="stylegan")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="`d_learning_rate` must be a finite"):
        TrainConfig(d_learning_rate=float("inf"))
    with pytest.raises(ValueError, match="`beta_2` must be in"):
        TrainConfig(beta_2=1.0)
    with pytest.raises(ValueError, match="orthogonal_regularization"):
        TrainConfig(orthogonal_regularization=float("nan"))


def test_load_run_config_needs_a_run(tmp_path):
    with pytest.raises(ValueError, match="holds no training run"):
        load_run_config(str(tmp_path))


def _copy_run(runs, tmp_path):
    """A copy of the resumed run (checkpoints at steps 2 and 3)."""
    copy = str(tmp_path / "run")
    shutil.copytree(runs["resumed_dir"], copy)
    return copy


def _corrupt(model_dir, step):
    for path in glob.glob(os.path.join(model_dir, f"ckpt-{step}.data-*")):
        with open(path, "r+b") as handle:
            handle.truncate(os.path.getsize(path) // 2)


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(
    runs, tmp_path, mirrored_strategy, caplog
):
    model_dir = _copy_run(runs, tmp_path)
    _corrupt(model_dir, 3)

    trainer = GANTrainer(TINY, mirrored_strategy, model_dir)
    with caplog.at_level("WARNING"):
        step = trainer.restore()
        trainer.train(2)  # Resumes from what restore() found, silently.

    assert step == 2
    assert caplog.text.count("ckpt-3 cannot be read") == 1
    reference = GANTrainer(TINY, mirrored_strategy, str(tmp_path / "empty"))
    reference.checkpoint.restore(os.path.join(model_dir, "ckpt-2"))
    _assert_close(_weights(trainer), _weights(reference), atol=0.0)


def test_export_loads_the_newest_readable_checkpoint(
    runs, tmp_path, monkeypatch
):
    from tfcv.training.checkpoints import load_ema_generator

    model_dir = _copy_run(runs, tmp_path)
    _corrupt(model_dir, 3)
    monkeypatch.chdir(tmp_path)  # a relative --model_dir, as users type it

    _, step = load_ema_generator(os.path.basename(model_dir))

    assert step == 2


def test_no_readable_checkpoint_is_an_error(runs, tmp_path, mirrored_strategy):
    model_dir = _copy_run(runs, tmp_path)
    _corrupt(model_dir, 2)
    _corrupt(model_dir, 3)

    trainer = GANTrainer(TINY, mirrored_strategy, model_dir)
    with pytest.raises(ValueError, match="none of its checkpoints"):
        trainer.restore()


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(
    runs, tmp_path, mirrored_strategy
):
    model_dir = _copy_run(runs, tmp_path)
    trainer = GANTrainer(TINY, mirrored_strategy, model_dir)
    trainer.restore()
    # D's output bias: its logits, and so both losses, become NaN. (A NaN
    # inside a block can be swallowed by a ReLU, whose max(x, 0) maps NaN
    # to 0 on CPU.)
    (bias,) = [
        v
        for v in trainer.discriminator.trainable_variables
        if "linear" in v.name and "bias" in v.name
    ]
    bias.assign(np.full(bias.shape, np.nan, np.float32))
    step = trainer.step.numpy()
    trainer.restore = lambda: step  # train() would undo the damage

    with pytest.raises(
        TrainingDiverged, match=r"a loss became NaN or infinite at step 4"
    ):
        trainer.train(6, steps_per_call=1, checkpoint_every=1)

    assert os.path.basename(trainer.manager.latest_checkpoint) == "ckpt-3"
    assert not glob.glob(os.path.join(model_dir, "ckpt-4*"))


def test_nan_weights_that_the_losses_hide_stop_training(
    runs, tmp_path, mirrored_strategy
):
    model_dir = _copy_run(runs, tmp_path)
    trainer = GANTrainer(TINY, mirrored_strategy, model_dir)
    trainer.restore()
    # A NaN in D's first kernel: the ReLUs map it to 0, the losses stay
    # finite, the weights do not.
    kernel = trainer.discriminator.trainable_variables[0]
    kernel.assign(np.full(kernel.shape, np.nan, np.float32))
    step = trainer.step.numpy()
    trainer.restore = lambda: step

    with pytest.raises(
        TrainingDiverged, match=r"weights hold NaN .* after steps 4-5"
    ):
        trainer.train(5, steps_per_call=2, checkpoint_every=10)

    assert os.path.basename(trainer.manager.latest_checkpoint) == "ckpt-3"
