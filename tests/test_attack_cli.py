"""`tfcv attack`: the adv / flip / false experiment (Elsayed et al. 2018).

One tiny run of the console script (16-pixel digits, one epoch, two
images per digit) checks the files, the tables and the keep rule; the
model folder it leaves is loaded in process; bad input runs in process.
"""

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO
from conftest import tfcv_command
from PIL import Image

from tfcv.adversarial import classifiers
from tfcv.adversarial import experiment
from tfcv.cli import attack as attack_cli
from tfcv.cli.main import run_command

TINY = [
    "--members=cnn,mlp,cnn_retina",
    "--heldout=lenet",
    "--image_size=16",
    "--epochs=1",
    "--images_per_class=2",
    "--examples=4",
]


def _tiny_config(**changes):
    """The `ExperimentConfig` of the `TINY` flags."""
    settings = dict(
        members=("cnn", "mlp", "cnn_retina"),
        heldout=("lenet",),
        image_size=16,
        epochs=1,
        images_per_class=2,
    )
    settings.update(changes)
    return experiment.ExperimentConfig(**settings)


def _table_rows(markdown, title):
    """`{model: [cells]}` of the Markdown table under `## <title>...`."""
    lines = markdown.split("## " + title, 1)[1].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert set(rows[1].replace("|", "")) == {"-"}
    table = {}
    for row in rows[2:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == len(header)
        table[cells[0]] = dict(zip(header[1:], cells[1:]))
    return table


def _numbers(cell):
    """`"100.0, -"` -> `[100.0, None]`."""
    return [
        None if item.strip() == "-" else float(item) for item in cell.split(",")
    ]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("attack")
    output, models = root / "run", root / "models"
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")

    result = subprocess.run(
        tfcv_command()
        + ["attack", f"--output_dir={output}", f"--model_dir={models}"]
        + TINY,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environment,
        timeout=240,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    return output, models, result


def test_tiny_run_writes_tables_grid_and_results(tiny_run):
    output, models, result = tiny_run

    report = json.loads((output / "results.json").read_text())
    tables = (output / "tables.md").read_text()

    assert sorted(os.listdir(output)) == [
        "grid.png",
        "results.json",
        "tables.md",
    ]
    assert "run time" in result.stdout
    # Progress bars on stderr for training and for the attacks.
    assert "step/s" in result.stderr and "kept_fraction" in result.stderr
    assert [g["group"] for g in report["groups"]] == ["1:7", "2:5"]
    for group in report["groups"]:
        # Two held-out images of each of the two digits; false cycles over
        # the groups: 6 other digits x 2 images, 6 per group.
        assert group["adv_attempted"] == 4
        assert group["false_attempted"] == 6
    assert report["settings"]["adv"]["epsilon"] == 32.0
    assert report["settings"]["false"]["epsilon"] == 40.0
    assert report["settings"]["false"]["min_fooled_fraction"] == 0.7
    roles = {name: m["role"] for name, m in report["models"].items()}
    assert roles == {
        "cnn": "member",
        "mlp": "member",
        "cnn_retina": "member",
        "lenet": "heldout",
    }
    members = _table_rows(tables, "Table 1")
    assert members["cnn_retina"]["retina"] == "yes"
    assert members["cnn"]["retina"] == "no"
    for title in ("Table 2", "Table 3", "Table 4", "Table 5"):
        table = _table_rows(tables, title)
        for cells in table.values():
            for cell in cells.values():
                for value in _numbers(cell):
                    assert value is None or 0.0 <= value <= 100.0
    with Image.open(output / "grid.png") as grid:
        assert grid.mode == "L"
        # 7 rows of 48-pixel tiles (image, adv, flip, δ, false x3).
        assert grid.size[1] > 7 * 48


def test_adv_fools_every_member_on_kept_examples(tiny_run):
    output, _, _ = tiny_run

    report = json.loads((output / "results.json").read_text())
    success = _table_rows((output / "tables.md").read_text(), "Table 4")
    accuracy = _table_rows((output / "tables.md").read_text(), "Table 2")

    kept = [group["adv_kept"] for group in report["groups"]]
    assert sum(kept) > 0
    assert set(success) == {"cnn", "mlp", "cnn_retina"}
    for name in success:
        adv = _numbers(success[name]["adv (%)"])
        expected = [100.0 if count else None for count in kept]
        assert adv == expected, (name, adv)
        assert _numbers(accuracy[name]["adv (%)"]) == [
            0.0 if count else None for count in kept
        ]
        pooled = report["models"][name]["pooled"]
        assert pooled["adv_success_pct"] == 100.0
        assert pooled["examples"] == sum(kept)


def test_model_dir_is_loaded_when_settings_match(tiny_run):
    output, models, _ = tiny_run
    report = json.loads((output / "results.json").read_text())
    data = experiment.load_data(16, images_per_class=2)

    loaded = classifiers.load_or_train(
        ["cnn_retina", "lenet"],
        _tiny_config(),
        data,
        model_dir=str(models),
        progress=False,
    )

    assert all(c.loaded for c in loaded)
    for classifier in loaded:
        saved = report["models"][classifier.name]
        assert 100 * classifier.accuracy == pytest.approx(saved["accuracy_pct"])
    # Another seed is another classifier: trained, not loaded.
    (retrained,) = classifiers.load_or_train(
        ["lenet"],
        _tiny_config(seed=5),
        data,
        model_dir=str(models),
        progress=False,
    )
    assert not retrained.loaded
    settings = json.loads((models / "lenet.json").read_text())["settings"]
    assert settings == _tiny_config(seed=5).model_settings("lenet")


def test_training_batches_hold_each_image_and_its_rescaled_copy():
    images = tf.constant([[[[0.0]]], [[[255.0]]]])
    add = classifiers._with_rescaled_copies((40.0, 215.0))

    both, labels = add(images, tf.constant([3, 8]))

    np.testing.assert_allclose(both.numpy().ravel(), [0.0, 40.0, 255.0, 215.0])
    np.testing.assert_array_equal(labels.numpy(), [3, 3, 8, 8])


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--epsilon=0"], "--epsilon must be a number > 0"),
        (["--epsilon=-4"], "--epsilon must be a number > 0"),
        (["--false_epsilon=0"], "--false_epsilon must be a number > 0"),
        (["--step_size=0"], "--step_size must be a number > 0"),
        (["--step_size=-2"], "--step_size must be a number > 0"),
        (["--false_keep_fraction=1.5"], "--false_keep_fraction"),
        (["--retina_alpha=0"], "--retina_alpha must be a number > 0"),
        (["--groups=3:8,8:1"], "must not overlap"),
        (["--groups=3:8,1:3"], "must not overlap"),
        (["--groups=3:3"], "in both classes of group 1"),
        (["--groups=3+3:8"], "twice in one class of group 1"),
        (["--groups=3:10"], "labels 0..9"),
        (["--groups=3-8"], "malformed group '3-8'"),
        (["--groups=3:8:1"], "malformed group '3:8:1'"),
        (["--groups=3:x"], "malformed group '3:x'"),
        (["--groups="], "malformed group ''"),
        (["--groups=0+1+2+3+4:5+6+7+8+9"], "outside every group"),
        (["--members="], "--members is empty"),
        (["--members=cnn,vgg"], "'vgg', which is not a classifier"),
        (["--members=cnn,cnn"], "lists a classifier twice"),
        (["--heldout=lenet,cnn"], "in both --members and --heldout"),
        (["--image_size=8"], "--image_size must be in 16..64"),
        (["--epochs=0"], "--epochs must be in"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(
    tmp_path, capsys, arguments, message
):
    output = tmp_path / "new" / "run"

    code = run_command("attack", [f"--output_dir={output}"] + arguments)

    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("below_a_file", [False, True])
def test_output_dir_that_is_a_file_is_refused(tmp_path, capsys, below_a_file):
    target = tmp_path / "file"
    target.write_text("keep me")
    output = target / "run" if below_a_file else target

    code = run_command("attack", [f"--output_dir={output}"])

    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    expected = "not a writable directory" if below_a_file else "is a file"
    assert len(lines) == 1 and expected in lines[0], lines
    assert target.read_text() == "keep me"


def test_model_dir_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "models"
    target.write_text("keep me")
    output = tmp_path / "new"

    code = run_command(
        "attack", [f"--output_dir={output}", f"--model_dir={target}"]
    )

    assert code == 2
    assert "--model_dir" in capsys.readouterr().err
    assert not output.exists() and target.read_text() == "keep me"


def _one_error_line(capsys):
    """The error line, the last on stderr (after the INFO lines, if any)."""
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("tfcv attack:")]
    assert errors == lines[-1:], lines
    return lines[-1]


def _save_weights_of(architecture, path):
    """Writes an untrained `architecture` backbone's weights to `path`."""
    _, backbone, _ = classifiers.build_classifier(architecture, _tiny_config())
    backbone.save_weights(str(path))


def _corrupt(path):
    path.write_bytes(b"not an HDF5 file at all")


def _truncated(path):
    _save_weights_of("mlp", path)
    path.write_bytes(path.read_bytes()[:3000])


def _other_architecture(path):
    _save_weights_of("lenet", path)


@pytest.mark.parametrize(
    "spoil",
    [_corrupt, _truncated, _other_architecture],
    ids=lambda f: f.__name__,
)
def test_unloadable_weights_name_the_file_and_the_fix(tmp_path, capsys, spoil):
    models = tmp_path / "models"
    models.mkdir()
    weights = models / "mlp.weights.h5"
    spoil(weights)
    before = weights.read_bytes()
    settings = _tiny_config(members=("mlp",), heldout=()).model_settings("mlp")
    (models / "mlp.json").write_text(json.dumps({"settings": settings}))

    code = run_command(
        "attack",
        [f"--output_dir={tmp_path / 'run'}", f"--model_dir={models}"]
        + ["--members=mlp", "--heldout="]
        + TINY[2:],
    )

    assert code == 2
    line = _one_error_line(capsys)
    assert f"{weights} cannot be loaded (" in line, line
    assert line.endswith(
        f"); delete it and {models / 'mlp.json'} to retrain."
    ), line
    # Refused before training: the file is untouched, nothing written.
    assert weights.read_bytes() == before
    assert sorted(os.listdir(models)) == ["mlp.json", "mlp.weights.h5"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "blocked", ["mlp.weights.h5", "mlp.json", ".tmp-mlp.weights.h5"]
)
def test_model_file_that_is_a_directory_is_refused_before_training(
    tmp_path, capsys, blocked
):
    models = tmp_path / "models"
    (models / blocked).mkdir(parents=True)

    code = run_command(
        "attack",
        [f"--output_dir={tmp_path / 'run'}", f"--model_dir={models}"]
        + ["--members=mlp", "--heldout="]
        + TINY[2:],
    )

    assert code == 2
    line = _one_error_line(capsys)
    assert f"{models / blocked} exists but is not a file" in line, line
    assert "remove it or pick another model folder" in line
    # No training ran: nothing was saved and no temporary file is left.
    assert os.listdir(models) == [blocked]


def test_failed_save_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "mlp.weights.h5"
    target.mkdir()
    temporary = tmp_path / ".tmp-mlp.weights.h5"

    with pytest.raises(OSError, match=f"{target} could not be written"):
        classifiers._replace(
            str(temporary), str(target), lambda path: _corrupt(Path(path))
        )

    assert sorted(os.listdir(tmp_path)) == ["mlp.weights.h5"]


def _attack_result(kept):
    return SimpleNamespace(kept=np.array(kept, bool))


def test_nothing_kept_warning_names_the_flags():
    line = attack_cli._nothing_kept_line(
        SimpleNamespace(
            adv=_attack_result([False] * 8),
            false=_attack_result([False] * 12),
        )
    )
    assert line == (
        "No example was kept for adv (0 of 8 attacked) and false (0 of 12 "
        "attacked); raise --epsilon / --false_epsilon (the number of steps "
        "grows with ε) or --step_size."
    )
    line = attack_cli._nothing_kept_line(
        SimpleNamespace(
            adv=_attack_result([False, False]), false=_attack_result([True])
        )
    )
    assert line.startswith("No example was kept for adv (0 of 2 attacked);")
    assert "--epsilon (" in line and "--false_epsilon" not in line
    assert (
        attack_cli._nothing_kept_line(
            SimpleNamespace(
                adv=_attack_result([True]), false=_attack_result([])
            )
        )
        is not None
    )
    assert (
        attack_cli._nothing_kept_line(
            SimpleNamespace(
                adv=_attack_result([True]), false=_attack_result([True])
            )
        )
        is None
    )


def test_plan_line_counts_loaded_and_trained(tiny_run):
    _, models, _ = tiny_run
    config = _tiny_config(heldout=())

    assert attack_cli._plan_line(config, str(models)) == (
        f"Loading all 3 members and 0 held-out classifiers from {models}."
    )
    assert attack_cli._plan_line(
        _tiny_config(heldout=("separable_cnn",)), str(models)
    ) == (
        "Of 3 members and 1 held-out classifiers, loading 3 from "
        f"{models} and training 1, 1 epochs each."
    )
    assert attack_cli._plan_line(config, None) == (
        "Training 3 members and 0 held-out classifiers, 1 epochs each."
    )


def test_loaded_run_that_keeps_nothing_warns_and_succeeds(
    tiny_run, tmp_path, capfd
):
    _, models, _ = tiny_run
    output = tmp_path / "run"

    code = run_command(
        "attack",
        [f"--output_dir={output}", f"--model_dir={models}"]
        + ["--members=cnn,mlp,cnn_retina", "--heldout="]
        + ["--epsilon=0.01", "--false_epsilon=0.01"]
        + TINY[2:],
    )

    assert code == 0
    err = capfd.readouterr().err
    assert "Loading all 3 members and 0 held-out classifiers" in err
    assert "Training" not in err
    groups = json.loads((output / "results.json").read_text())["groups"]
    empty = [
        condition
        for condition in ("adv", "false")
        if sum(group[f"{condition}_kept"] for group in groups) == 0
    ]
    warnings = [line for line in err.splitlines() if "was kept" in line]
    # ε = 0.01 keeps nothing unless a member is fooled without an attack.
    assert len(warnings) == (1 if empty else 0), warnings
    for condition in empty:
        assert f"{condition} (0 of " in warnings[0]
