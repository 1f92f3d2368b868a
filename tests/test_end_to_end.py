"""The main job through the `tfcv` command: train, export, reload, sample.

One tiny run (2 steps, ch 8) is trained by the real command line under
`mirrored` with 2 virtual CPUs; the tests then check the export as TF-Hub
and TF Serving users would use it, and the command's answers to bad input.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_hub as hub
import tf_keras

from conftest import tfcv_command

TINY_FLAGS = [
    "--steps=2",
    "--ch=8",
    "--batch_size=8",
    "--steps_per_call=1",
    "--eval_per_class=4",
    "--summary_every=1",
]


def _tfcv(*args, check=False):
    result = subprocess.run(
        tfcv_command() + list(args), capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise AssertionError(result.stdout + result.stderr)
    return result


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("run"))
    _tfcv("train", f"--model_dir={model_dir}", *TINY_FLAGS, check=True)
    return model_dir


@pytest.fixture(scope="module")
def exported(run_dir):
    export_dir = os.path.join(run_dir, "export")
    _tfcv(
        "export",
        f"--model_dir={run_dir}",
        f"--export_dir={export_dir}",
        check=True,
    )
    return os.path.join(export_dir, "1")


def test_train_writes_checkpoint_samples_summaries_and_evaluation(run_dir):
    files = os.listdir(run_dir)

    assert "checkpoint" in files and "samples.png" in files
    assert os.listdir(os.path.join(run_dir, "summaries"))
    with open(os.path.join(run_dir, "evaluation.json")) as handle:
        results = json.load(handle)
    assert len(results["conditional_accuracy_per_class"]) == 10
    assert results["judge_heldout_accuracy"] >= 0.95
    assert np.isfinite(results["frechet_distance"])


def test_rerun_resumes_instead_of_restarting(run_dir):
    result = _tfcv(
        "train",
        f"--model_dir={run_dir}",
        *TINY_FLAGS,
        "--evaluate=false",
        check=True,
    )

    assert "from step 2 to 2" in result.stderr


def test_export_is_a_hub_module_with_serving_signature(exported):
    module = hub.load(exported)
    z = tf.random.stateless_truncated_normal([3, 80], seed=[1, 2])
    y = tf.one_hot([0, 5, 9], 10)

    images = module({"z": z, "y": y, "truncation": tf.constant(1.0)})
    served = module.signatures["serving_default"](
        z=z, y=y, truncation=tf.constant(1.0)
    )["default"]

    assert images.shape == (3, 32, 32, 3) and images.dtype == tf.float32
    assert np.abs(images.numpy()).max() <= 1.0
    np.testing.assert_allclose(images.numpy(), served.numpy(), atol=1e-5)


def test_export_works_as_keras_layer(exported):
    z_input = tf_keras.Input([80])
    y_input = tf_keras.Input([10])
    images = hub.KerasLayer(exported)({"z": z_input, "y": y_input})
    model = tf_keras.Model([z_input, y_input], images)
    z = np.random.RandomState(0).randn(2, 80).astype(np.float32)

    outputs = model.predict([z, np.eye(10, dtype=np.float32)[:2]], verbose=0)

    assert outputs.shape == (2, 32, 32, 3)


def test_export_output_does_not_depend_on_the_batch(exported):
    module = hub.load(exported)
    z = tf.random.stateless_truncated_normal([16, 80], seed=[3, 4])
    y = tf.one_hot(np.arange(16) % 10, 10)
    inputs = {"z": z, "y": y, "truncation": tf.constant(0.7)}

    batch = module(inputs).numpy()
    alone = module(
        {"z": z[:1], "y": y[:1], "truncation": tf.constant(0.7)}
    ).numpy()

    np.testing.assert_allclose(alone[0], batch[0], atol=1e-5)


def test_export_rejects_wrong_shapes_and_dtypes(exported):
    serve = hub.load(exported).signatures["serving_default"]
    good_y = tf.one_hot([0], 10)

    with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError)):
        serve(z=tf.zeros([1, 79]), y=good_y, truncation=tf.constant(1.0))
    with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError)):
        serve(
            z=tf.zeros([1, 80], tf.float64),
            y=good_y,
            truncation=tf.constant(1.0),
        )
    with pytest.raises((ValueError, TypeError, tf.errors.InvalidArgumentError)):
        serve(z=tf.zeros([1, 80]), y=good_y, truncation=tf.constant([1.0]))


def test_export_has_only_ops_stock_serving_knows(exported):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")

    result = subprocess.run(
        [cli, "scan", "--dir", exported, "--tag_set", "serve"],
        capture_output=True,
        text=True,
        check=True,
    )

    assert "does not contain" in result.stdout, result.stdout


def test_sample_from_export_in_fresh_process_matches_checkpoint(
    run_dir, exported
):
    output = os.path.join(run_dir, "from_export.png")

    result = _tfcv(
        "sample",
        f"--module={exported}",
        f"--model_dir={run_dir}",
        f"--output={output}",
        check=True,
    )

    assert "agree" in result.stdout
    for name in (
        "from_export",
        "from_export_interp_z",
        "from_export_interp_class",
    ):
        assert os.path.getsize(os.path.join(run_dir, name + ".png")) > 0


def test_sample_truncation_strips_follow_classes(run_dir, exported):
    from PIL import Image

    output = os.path.join(run_dir, "truncated.png")

    _tfcv(
        "sample",
        f"--module={exported}",
        f"--output={output}",
        "--truncation=0.5",
        "--classes=3,1",
        "--per_class=5",
        "--interpolation_steps=6",
        check=True,
    )

    # 2 rows of 5 (grid) and 2 rows of 6 (strips) 32x32 images, shown 2x.
    assert Image.open(output).size == (5 * 64, 2 * 64)
    strip = Image.open(os.path.join(run_dir, "truncated_interp_class.png"))
    assert strip.size == (6 * 64, 2 * 64)


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--truncation=0", "--truncation must be a finite threshold >= 0.01"),
        ("--truncation=1e-8", "--truncation must be a finite threshold"),
        ("--truncation=nan", "--truncation must be a finite threshold"),
        ("--tolerance=nan", "--tolerance must be a number >= 0"),
        ("--interpolation_steps=1", "--interpolation_steps must be 0"),
        ("--classes=a", "--classes must be comma-separated class ids"),
        ("--classes=10", "the model has 10 classes (ids 0 to 9), got 10"),
    ],
)
def test_sample_bad_flags_are_one_line_errors(
    exported, tmp_path, flag, message
):
    result = _tfcv(
        "sample", f"--module={exported}", f"--output={tmp_path}/x.png", flag
    )

    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "x.png")


def test_interrupted_export_leaves_no_version_folder(
    run_dir, tmp_path, monkeypatch
):
    from export import hub_module
    from tfcv.training.checkpoints import load_ema_generator

    generator, _ = load_ema_generator(run_dir)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hub_module, "_check_export", crash)

    with pytest.raises(KeyboardInterrupt):
        hub_module.export_generator(generator, str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_export_never_overwrites_a_version(run_dir, exported):
    result = _tfcv(
        "export",
        f"--model_dir={run_dir}",
        f"--export_dir={os.path.dirname(exported)}",
        "--version=1",
    )

    assert result.returncode == 2
    assert "already exists" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model=stylegan"], "unknown --model='stylegan'"),
        (["--dataset=imagenet"], "unknown --dataset='imagenet'"),
        (["--strategy=horovod"], "--strategy=horovod"),
        (["--batch_size=7"], "not divisible by the 2 replicas"),
        (["--steps=0"], "--steps must be >= 1"),
    ],
)
def test_train_bad_input_gives_one_line_and_exit_2(tmp_path, args, message):
    result = _tfcv("train", f"--model_dir={tmp_path}/run", *args)

    assert result.returncode == 2
    assert not os.path.exists(tmp_path / "run")
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_train_refuses_model_dir_of_another_configuration(run_dir):
    result = _tfcv(
        "train",
        f"--model_dir={run_dir}",
        "--steps=2",
        "--ch=16",
        "--batch_size=8",
    )

    assert result.returncode == 2
    assert "different configuration: ch=8 (now 16)." in result.stderr


def test_train_refuses_unwritable_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")

    result = _tfcv("train", f"--model_dir={blocker}/run", "--steps=1")

    assert result.returncode == 2
    assert "not a writable directory" in result.stderr


def test_export_without_checkpoint_is_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()

    result = _tfcv(
        "export", f"--model_dir={empty}", f"--export_dir={tmp_path}/out"
    )

    assert result.returncode == 2
    assert "holds no training run" in result.stderr
    assert not os.path.exists(tmp_path / "out" / "1")


@pytest.mark.parametrize("command", ["train", "export", "sample", "evaluate"])
def test_every_command_explains_itself(command):
    result = _tfcv(command, "--help")

    assert result.returncode == 0
    assert f"usage: tfcv {command}" in result.stdout
    assert "--" in result.stdout


def test_unknown_command_is_one_line():
    result = _tfcv("fly")

    assert result.returncode == 2
    assert result.stderr.strip().startswith("tfcv: error: unknown command")


def test_sample_refuses_a_savedmodel_that_is_not_a_generator(tmp_path):
    other = tf.Module()
    other.double = tf.function(
        lambda x: {"out": 2 * x},
        input_signature=[tf.TensorSpec([None], tf.float32, name="x")],
    )
    tf.saved_model.save(other, str(tmp_path / "other"), signatures=other.double)

    result = _tfcv(
        "sample", f"--module={tmp_path}/other", f"--output={tmp_path}/x.png"
    )

    assert result.returncode == 2
    assert "not a tfcv generator export" in result.stderr.strip()


def test_sample_refuses_a_folder_as_output(tmp_path):
    (tmp_path / "x.png").mkdir()

    result = _tfcv(
        "sample", f"--module={tmp_path}", f"--output={tmp_path}/x.png"
    )

    assert result.returncode == 2
    assert "is a folder" in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["x.png"]


def test_sample_refuses_output_in_missing_folder(tmp_path):
    result = _tfcv(
        "sample", f"--module={tmp_path}", f"--output={tmp_path}/no/x.png"
    )

    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_train_refuses_a_file_as_model_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")

    result = _tfcv("train", f"--model_dir={blocker}", "--steps=1")

    assert result.returncode == 2
    assert "is a file, not a directory" in result.stderr
