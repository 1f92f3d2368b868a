"""Strategy names, the progress bar, EMA and sample grids."""

import io
import os
import signal

import numpy as np
import pytest
import tensorflow as tf

from tfcv.models import BigGANConfig
from tfcv.models import BigGANGenerator
from tfcv.training import ema
from tfcv.training.preemption import PreemptionFlag
from tfcv.training.progress import ProgressBar
from tfcv.training.samples import grid_latents
from tfcv.training.samples import image_grid
from tfcv.training.strategy import configure_virtual_cpus
from tfcv.training.strategy import make_strategy


def test_strategies_by_name(mirrored_strategy):
    assert make_strategy("default").num_replicas_in_sync == 1
    assert make_strategy("one_device").num_replicas_in_sync == 1
    assert mirrored_strategy.num_replicas_in_sync == 2


def test_strategy_rejects_unknown_names_and_counts():
    tf.constant(1.0).numpy()  # Devices are initialized from here on.

    with pytest.raises(ValueError, match="Unknown strategy 'horovod'"):
        make_strategy("horovod")
    with pytest.raises(ValueError, match="virtual_cpus"):
        configure_virtual_cpus(0)
    with pytest.raises(ValueError, match="already initialized"):
        configure_virtual_cpus(3)


def test_progress_bar_reports_step_rate_and_losses():
    stream = io.StringIO()
    bar = ProgressBar(10, stream=stream, line_every=0)

    bar.update(5, {"d_loss": 0.5})
    bar.update(10, {"d_loss": 0.25})
    bar.close()

    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("[" + "#" * 24 + "] 10/10")
    assert "step/s" in lines[-1] and "d_loss=0.250" in lines[-1]


def test_progress_bar_gives_no_eta_until_it_can_measure_a_rate():
    stream = io.StringIO()
    bar = ProgressBar(100, stream=stream, line_every=0)

    bar.update(10)  # The first call's time includes tracing.
    first = stream.getvalue().splitlines()[-1]
    bar.update(20)
    second = stream.getvalue().splitlines()[-1]

    assert "-- step/s" in first and "ETA --:--" in first
    assert "-- step/s" not in second and "ETA --:--" not in second


def test_progress_bar_log_ends_on_the_last_step():
    stream = io.StringIO()
    bar = ProgressBar(30, stream=stream, line_every=3600)

    for step in range(1, 31):
        bar.update(step)
    bar.close()

    lines = stream.getvalue().splitlines()
    assert lines[0].split()[1] == "1/30" and lines[-1].split()[1] == "30/30"


def test_preemption_flag_records_sigterm_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    stop = PreemptionFlag()

    stop.install()
    stop.install()  # Idempotent: the second install keeps the first's memory.
    os.kill(os.getpid(), signal.SIGTERM)
    requested = stop.requested
    stop.uninstall()

    assert requested
    assert signal.getsignal(signal.SIGTERM) == before


def test_ema_copies_before_start_and_averages_after():
    config = BigGANConfig(ch=8)
    source, target = BigGANGenerator(config), BigGANGenerator(config)
    inputs = (tf.zeros([1, config.dim_z]), tf.one_hot([0], 10))
    source(inputs)
    target(inputs)
    kernel = source.linear.layer.kernel
    target_kernel = target.linear.layer.kernel

    ema.update_ema(source, target, 0.9, step=0, start_step=1)
    copied = target_kernel.numpy()
    old = copied.copy()
    kernel.assign(kernel + 1.0)
    ema.update_ema(source, target, 0.9, step=5, start_step=1)

    np.testing.assert_allclose(copied, kernel.numpy() - 1.0, atol=1e-6)
    np.testing.assert_allclose(
        target_kernel.numpy(), 0.9 * old + 0.1 * kernel.numpy(), atol=1e-6
    )


def test_image_grid_puts_one_class_per_row():
    z, y = grid_latents(3, 2, 4)
    images = np.zeros([6, 2, 2, 3], np.float32)
    images[2:4] = 1.0

    grid = image_grid(images, rows=3)

    assert z.shape == (6, 4) and y.numpy().argmax(-1).tolist() == [
        0,
        0,
        1,
        1,
        2,
        2,
    ]
    assert grid.shape == (6, 4, 3)
    assert (grid[2:4] == 255).all() and (grid[:2] == 128).all()


def test_ema_refuses_models_of_different_architectures():
    source = BigGANGenerator(BigGANConfig(ch=8))
    source((tf.zeros([1, 80]), tf.one_hot([0], 10)))
    unbuilt = BigGANGenerator(BigGANConfig(ch=8))

    with pytest.raises(ValueError, match="different variables"):
        ema.copy_weights(source, unbuilt)


def test_load_ema_generator_needs_a_checkpoint(tmp_path):
    from tfcv.training.checkpoints import load_ema_generator
    from tfcv.training.gan_trainer import TrainConfig
    from tfcv.training.gan_trainer import save_run_config

    save_run_config(str(tmp_path), TrainConfig(), BigGANConfig())

    with pytest.raises(ValueError, match="holds no checkpoint"):
        load_ema_generator(str(tmp_path))


def test_export_rejects_bad_versions(tmp_path):
    from export import export_generator

    generator = BigGANGenerator(BigGANConfig(ch=8))

    with pytest.raises(ValueError, match="positive integer"):
        export_generator(generator, str(tmp_path), version=0)


def test_cli_log_filter_keeps_only_tfcv_info_lines():
    import logging

    from tfcv.cli import main

    def record(path, level=logging.INFO):
        return logging.LogRecord("absl", level, path, 1, "m", None, None)

    # A checkout folder named "tfcv" must not let TensorFlow's INFO through.
    foreign = "/home/user/tfcv/.venv/lib/tensorflow/python/saver.py"
    ours = os.path.join(main._PACKAGE_DIR, "cli", "train.py")

    assert not main._only_our_info(record(foreign))
    assert main._only_our_info(record(foreign, logging.WARNING))
    assert main._only_our_info(record(ours))


def test_portable_normal_is_normal_and_the_same_under_xla():
    from scipy import stats

    from tfcv.training.gan_trainer import portable_normal

    seed = tf.constant([3, 65], tf.int64)
    graph = portable_normal([50000], seed).numpy()
    xla = tf.function(portable_normal, jit_compile=True)([50000], seed)

    # TensorFlow's own stateless normal differs under XLA by O(1).
    np.testing.assert_allclose(xla.numpy(), graph, atol=1e-4)
    assert stats.kstest(graph, "norm").pvalue > 1e-3
    assert np.isfinite(graph).all()


def test_portable_normal_is_finite_at_the_extreme_levels():
    from tfcv.training.gan_trainer import levels_to_normal

    # A draw hits the top level about once in 2^23: it must stay finite.
    extremes = levels_to_normal(tf.constant([0, 2**23 - 1])).numpy()

    np.testing.assert_allclose(extremes, [-5.2947, 5.2947], atol=1e-3)
