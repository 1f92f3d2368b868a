"""Equivariance error Δ of S²/SO(3) stacks; `tfcv spherical equivariance`."""

import os
import re
import subprocess

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from conftest import tfcv_command
from PIL import Image

import tfcv_ops
from tfcv.cli import main as cli_main
from tfcv.cli import spherical_equivariance as command
from tfcv.spherical import equivariance
from tfcv.spherical import line_plot

BANDWIDTH = 8
SAMPLES = 3


def _reference_delta(plain, turned, rotation):
    """Oracle: Δ_i of SO(3) outputs `[2b, 2b, 2b, O]`, NumPy after rotating."""
    moved = np.moveaxis(np.asarray(plain, np.float64), -1, 0)
    moved = tfcv_ops.so3_rotate(moved, *rotation).numpy()
    difference = np.moveaxis(moved, 0, -1) - np.asarray(turned, np.float64)
    return difference.std() / np.std(plain)


@pytest.fixture(scope="module")
def linear_errors():
    stack = equivariance.make_stack(2, BANDWIDTH)
    return equivariance.equivariance_errors(
        stack, BANDWIDTH, rotations=SAMPLES, seed=1
    )


def test_linear_stacks_are_equivariant_in_float32(linear_errors):
    deltas = linear_errors.mean(axis=1)

    assert linear_errors.shape == (2, SAMPLES)
    assert np.all(deltas <= 1e-4), deltas
    assert np.all(deltas > 0)


def test_linear_stacks_are_equivariant_to_round_off_in_float64():
    stack = equivariance.make_stack(2, BANDWIDTH, dtype="float64")

    errors = equivariance.equivariance_errors(
        stack, BANDWIDTH, rotations=2, dtype="float64"
    )

    assert np.all(errors <= 1e-11), errors


def test_relu_error_exceeds_linear_error(linear_errors):
    stack = equivariance.make_stack(2, BANDWIDTH, relu=True)

    relu_errors = equivariance.equivariance_errors(
        stack, BANDWIDTH, rotations=SAMPLES, seed=1
    )

    assert np.all(relu_errors.mean(axis=1) > 100 * linear_errors.mean(axis=1))
    assert np.all(relu_errors < 1.0)


def test_delta_matches_numpy_oracle_for_a_non_equivariant_layer():
    # A layer that weighs β rows unevenly is not rotation equivariant.
    layer = equivariance.make_stack(1, 4)[0]
    weights = tf.reshape(tf.linspace(0.5, 1.5, 8), [1, 8, 1, 1, 1])
    rotation = np.array([[0.3, 1.1, -0.7]])
    signals = equivariance.random_band_limited_signals(1, 4, seed=5)
    moved = tf.transpose(signals[0], [2, 0, 1])  # [C, 2b, 2b]
    turned = tf.transpose(tfcv_ops.s2_rotate(moved, *rotation[0]), [1, 2, 0])
    outputs = layer(tf.stack([signals[0], turned])) * weights

    delta = equivariance.equivariance_error(
        lambda x: layer(x) * weights, 4, rotations=rotation, seed=5
    )

    expected = _reference_delta(outputs[0], outputs[1], rotation[0])
    assert delta == pytest.approx(expected, rel=1e-5)
    assert delta > 1e-2


def test_random_rotations_are_haar_distributed():
    angles = equivariance.random_rotations(4000, seed=3)

    # α, γ uniform on [0, 2π); cos β uniform on [-1, 1] (mean 0, var 1/3).
    assert angles.shape == (4000, 3)
    assert np.all((angles[:, [0, 2]] >= 0) & (angles[:, [0, 2]] < 2 * np.pi))
    assert abs(np.cos(angles[:, 1]).mean()) < 0.05
    assert np.cos(angles[:, 1]).var() == pytest.approx(1 / 3, abs=0.03)


def test_random_signals_are_band_limited_real_and_unit_variance():
    signals = equivariance.random_band_limited_signals(2, 6, channels=3)

    # [2, 12, 12, 3] -> [2, 3, 12, 12]; grid -> spectrum -> grid is exact.
    moved = tf.transpose(signals, [0, 3, 1, 2])
    again = tfcv_ops.s2_ifft(tfcv_ops.s2_fft(moved), real_output=True)
    assert signals.shape == (2, 12, 12, 3) and signals.dtype == tf.float32
    np.testing.assert_allclose(again, moved, atol=1e-5)
    np.testing.assert_allclose(np.std(signals, axis=(1, 2, 3)), 1, rtol=1e-5)


def test_make_stack_layers_keep_the_bandwidth():
    stack = equivariance.make_stack(3, 4, relu=True, channels=5)

    outputs = tf.zeros([1, 8, 8, 5])
    for block in stack:
        outputs = block(outputs)

    assert len(stack) == 3
    assert outputs.shape == (1, 8, 8, 8, 5)
    assert isinstance(stack[0], tf_keras.Sequential)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: equivariance.random_rotations(0), "`num_rotations` must"),
        (lambda: equivariance.make_stack(1, 0), "`bandwidth` must be"),
        (lambda: equivariance.make_stack(1, 65), "`bandwidth` must be"),
        (lambda: equivariance.make_stack(1, 4, dtype="int32"), "`dtype`"),
        (lambda: equivariance.make_stack(1, 4, channels=0), "`channels`"),
        (
            lambda: equivariance.equivariance_errors([], 4),
            "`layers_or_model` must be a callable",
        ),
        (
            lambda: equivariance.equivariance_errors(
                equivariance.make_stack(1, 4), 4, rotations=np.zeros([2, 2])
            ),
            "`rotations` must be a count",
        ),
        (
            lambda: equivariance.equivariance_errors(
                lambda x: x, 4, rotations=1
            ),
            "must return SO(3) maps",
        ),
        (
            lambda: equivariance.equivariance_errors(
                lambda x: tf.zeros([2, 8, 8, 8, 1]), 4, rotations=1
            ),
            "constant",
        ),
    ],
)
def test_bad_arguments_raise_value_error(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


@pytest.mark.parametrize(
    "panels, message",
    [
        ([], "`panels` must be a non-empty list"),
        ([("a", [line_plot.Series("b", [1], [0.0])])], "no positive finite"),
    ],
)
def test_line_plot_rejects_what_it_cannot_draw(panels, message):
    with pytest.raises(ValueError, match=message):
        line_plot.log_line_plot(panels, "x", "y")


def test_command_writes_table_csv_and_plot(tmp_path):
    output_dir = tmp_path / "out"

    result = subprocess.run(
        tfcv_command()
        + [
            "spherical",
            "equivariance",
            "--bandwidths=4",
            "--layers=1,2",
            "--samples=2",
            f"--output_dir={output_dir}",
        ],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(output_dir)) == sorted(command.OUTPUTS)
    rows = (output_dir / "equivariance.csv").read_text().splitlines()
    assert rows[0].startswith("bandwidth,layers,activation,delta_mean")
    assert len(rows) == 1 + 4
    assert "| 4 | 2 | relu |" in (output_dir / "equivariance.md").read_text()
    assert "| 4 | 1 | linear |" in result.stdout
    with Image.open(output_dir / "equivariance.png") as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[0] > 200 and pixels.shape[1] > 400
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--bandwidths=0,8", "--bandwidths must be integers in 2..64, got 0"),
        ("--bandwidths=-4", "got -4"),
        ("--bandwidths=8.5", "--bandwidths must be comma-separated integers"),
        ("--bandwidths=128", "got 128"),
        ("--bandwidths=", "--bandwidths is empty"),
        ("--bandwidths=8,8", "--bandwidths lists a value twice"),
        ("--layers=", "--layers is empty"),
        ("--layers=0", "--layers must be integers in 1..8, got 0"),
        ("--layers=9", "--layers must be integers in 1..8, got 9"),
        ("--layers=1,01", "--layers lists a value twice"),
        ("--bandwidths=8,08", "--bandwidths lists a value twice"),
        ("--samples=10001", "--samples must be in 1..10000, got 10001"),
        ("--seed=-1", "--seed must be in 0..2147483639, got -1"),
        ("--seed=2147483640", "--seed must be in 0..2147483639"),
        ("--activations=tanh", "--activations: unknown tanh"),
        ("--activations=", "--activations is empty"),
        ("--samples=0", "--samples must be in 1..10000, got 0"),
    ],
)
def test_bad_flags_are_one_line_errors(tmp_path, capsys, flag, message):
    output_dir = tmp_path / "out"

    status = cli_main.run_command(
        "spherical equivariance",
        [f"--output_dir={output_dir}", flag],
        module_name="spherical_equivariance",
    )

    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(lines) == 1 and message in lines[0], lines
    assert not output_dir.exists()


def test_missing_output_dir_is_a_one_line_error(capsys):
    status = cli_main.run_command(
        "spherical equivariance",
        ["--bandwidths=4"],
        module_name="spherical_equivariance",
    )

    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert lines == [
        "tfcv spherical equivariance: error: --output_dir is required."
    ]


def test_output_dir_that_is_a_file_is_refused_by_the_console_script(
    tmp_path,
):
    path = tmp_path / "taken"
    path.write_text("keep")

    result = subprocess.run(
        tfcv_command() + ["spherical", "equivariance", f"--output_dir={path}"],
        capture_output=True,
        text=True,
    )

    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert len(lines) == 1 and "is a file, not a folder" in lines[0]
    assert path.read_text() == "keep"


def test_failure_during_measurement_writes_nothing(
    tmp_path, capsys, monkeypatch
):
    def fail(*args, **kwargs):
        raise ValueError("measurement failed")

    monkeypatch.setattr(equivariance, "equivariance_errors", fail)
    output_dir = tmp_path / "out"

    status = cli_main.run_command(
        "spherical equivariance",
        ["--bandwidths=4", "--layers=1", f"--output_dir={output_dir}"],
        module_name="spherical_equivariance",
    )

    assert status == 2
    assert "measurement failed" in capsys.readouterr().err
    assert not output_dir.exists()


def test_interrupted_write_leaves_no_partial_outputs(tmp_path, monkeypatch):
    real_replace = os.replace
    calls = []

    def replace_then_fail(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace_then_fail)
    contents = {name: b"x" for name in command.OUTPUTS}

    with pytest.raises(OSError):
        command.write_outputs(str(tmp_path), contents)

    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--output_dir=/proc/x"], "--output_dir=/proc/x is not a writable"),
        (["--layers=1000"], "--layers must be integers in 1..8, got 1000"),
    ],
)
def test_bad_input_exits_2_before_any_work(tmp_path, flags, message):
    if "--layers=1000" in flags:
        flags = flags + [f"--output_dir={tmp_path / 'out'}"]

    result = subprocess.run(
        tfcv_command() + ["spherical", "equivariance"] + flags,
        capture_output=True,
        text=True,
        timeout=120,
    )

    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "out").exists()
