"""`tfcv groupnorm sweep`: BN vs GN against the batch (GN paper Fig. 1)."""

import json
import os
import subprocess

import numpy as np
import pytest
from conftest import REPO
from conftest import tfcv_command
from PIL import Image

from tfcv.cli.main import run_command
from tfcv.data.image_folder import load_image_folder
from tfcv.groupnorm import sweep


def _run(arguments, timeout=300):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        tfcv_command() + ["groupnorm", "sweep"] + arguments,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environment,
        timeout=timeout,
    )


def _image_folder(root, classes=("a", "b"), per_class=6, size=10):
    rng = np.random.RandomState(0)
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for index in range(per_class):
            pixels = rng.randint(0, 60, [size, size, 3]) + 150 * label
            Image.fromarray(pixels.astype(np.uint8)).save(
                folder / f"{index}.png"
            )
    return root


def test_tiny_sweep_on_two_replicas_writes_table_plot_and_results(tmp_path):
    output = tmp_path / "run"
    folder = _image_folder(tmp_path / "images")

    result = _run(
        [
            f"--output_dir={output}",
            f"--image_folder={folder}",
            "--batch_sizes=4,2",
            "--seeds=3",
            "--epochs=1",
            "--strategy=mirrored",
            "--virtual_cpus=2",
        ]
    )

    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(output)) == [
        "figure1.png",
        "results.json",
        "table2.md",
    ]
    report = json.loads((output / "results.json").read_text())
    assert report["settings"]["replicas"] == 2
    runs = report["runs"]
    # 2 variants x 2 batches x 1 seed.
    assert len(runs) == 4 and {r["seed"] for r in runs} == {3}
    # Same epochs: 8 training images, global batch 8 -> 1 step, 4 -> 2.
    steps = {(r["variant"], r["batch_size"]): r["steps"] for r in runs}
    assert steps[("BN", 4)] == 1 and steps[("GN", 2)] == 2
    # Learning rate linear in the global batch (0.025 at 32).
    rates = {r["batch_size"]: r["learning_rate"] for r in runs}
    assert rates[4] == pytest.approx(0.025 * 8 / 32)
    assert rates[2] == pytest.approx(0.025 * 4 / 32)
    for run in runs:
        assert 0.0 <= run["error"] <= 100.0
    table = (output / "table2.md").read_text()
    assert "| BN |" in table and "| GN |" in table and "BN − GN" in table
    with Image.open(output / "figure1.png") as image:
        assert image.mode == "RGB" and image.size[0] > 300


def test_library_sweep_summarizes_mean_and_spread():
    results = [
        sweep.RunResult("GN", 2, seed, error, 0.1, 10, 0.01, 1.0)
        for seed, error in enumerate((4.0, 6.0))
    ] + [sweep.RunResult("GN", 32, 0, 3.0, 0.1, 1, 0.1, 1.0)]
    summary = sweep.summarize(results)
    mean, std, runs = summary["GN"][2]
    assert (mean, runs) == (5.0, 2)
    assert std == pytest.approx(np.std([4.0, 6.0], ddof=1))
    assert sweep.paired_batch_effects(results, "GN", 32, 2) == [1.0]


def test_image_folder_split_and_errors(tmp_path):
    folder = _image_folder(tmp_path / "images", per_class=5)
    train_x, train_y, test_x, test_y = load_image_folder(str(folder), 8)
    assert train_x.shape == (8, 8, 8, 3) and test_x.shape == (2, 8, 8, 3)
    assert sorted(test_y) == [0, 1]
    assert train_x.min() >= -1 and train_x.max() <= 1
    (folder / "a" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        load_image_folder(str(folder), 8)
    single = _image_folder(tmp_path / "single", classes=("only",))
    with pytest.raises(ValueError, match="at least 2"):
        load_image_folder(str(single), 8)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--norms=bn,batchnorm"], "unknown value 'batchnorm' in --norms"),
        (["--groups=24"], "'stem_norm' has 32 channels"),
        (["--norms=gn", "--channels_per_group=64"], "'stem_norm' has 32"),
        (["--batch_sizes=4,1"], "BN with 1 image per replica"),
        (["--batch_sizes=4,x"], "comma-separated integers"),
        (["--learning_rate=0"], "--learning_rate"),
        (["--weight_decay=-1"], "--weight_decay"),
        (["--epochs=0"], "--epochs"),
        (["--norms=frozen_bn"], "frozen_bn (BN*) normalizes with statistics"),
        (["--image_folder=/nonexistent/folder"], "not a directory"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(
    tmp_path, capsys, arguments, message
):
    output = tmp_path / "new" / "run"

    # In process (a subprocess per case would cost seconds of imports);
    # the exit path through the console script is tested below.
    code = run_command(
        "groupnorm sweep",
        [f"--output_dir={output}"] + arguments,
        module_name="groupnorm_sweep",
    )

    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "new").exists()


def test_output_dir_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("keep me")

    result = _run([f"--output_dir={target}"], timeout=120)

    assert result.returncode == 2
    assert "output_dir" in result.stderr
    assert target.read_text() == "keep me"


def test_warm_up_is_at_most_a_fifth_of_a_short_run():
    config = sweep.SweepConfig(epochs=1)
    rate, schedule = sweep._learning_rate_schedule(config, 32, 100)
    assert schedule.warmup == 20
    assert float(schedule(25)) == pytest.approx(rate)
