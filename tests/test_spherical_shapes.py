"""3D shapes (Spherical CNNs §5.3): ray casting, model size, command line."""

import json
import logging
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf
import trimesh
from conftest import REPO
from conftest import tfcv_command

from tfcv.data import spherical_shapes as ss
from tfcv.spherical import shapes


def _asymmetric_mesh():
    """A torus and an off-centre box: no symmetry, not convex."""
    torus = trimesh.creation.torus(
        0.8, 0.25, major_sections=20, minor_sections=10
    )
    box = trimesh.creation.box([0.3, 0.5, 0.7])
    box.apply_translation([0.9, 0.3, 0.4])
    mesh = trimesh.util.concatenate([torus, box])
    mesh.apply_transform(
        trimesh.transformations.rotation_matrix(0.3, [1.0, 2.0, 3.0])
    )
    return mesh


def test_centred_sphere_gives_constant_distance_and_normal_incidence():
    radius = 0.5
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    points = ss.grid_points(8).reshape(-1, 3)

    values = ss.cast_rays(sphere, points, radius=1.0)

    # Ray length 1 - r over the diameter 2; flat facets sit slightly inside.
    np.testing.assert_allclose(values[:, 0], (1 - radius) / 2, atol=1e-3)
    np.testing.assert_allclose(values[:, 1], 1.0, atol=2e-3)
    assert np.all(values[:, 2] < 0.07)


def test_box_distances_and_angles_match_the_analytic_hit():
    half = np.array([0.3, 0.5, 0.8])
    box = trimesh.creation.box(2 * half)
    points = ss.grid_points(8).reshape(-1, 3)
    casting_radius = 2.0

    values = ss.cast_rays(box, points, radius=casting_radius)

    # The ray s·x (s decreasing from R) enters the box at
    # s* = min_i h_i / |x_i|, through the face normal to axis argmin.
    ratios = half / np.maximum(np.abs(points), 1e-300)
    entry = np.min(ratios, axis=1)
    axis = np.argmin(ratios, axis=1)
    expected_cos = np.abs(points[np.arange(len(points)), axis])
    expected_distance = (casting_radius - entry) / (2 * casting_radius)
    np.testing.assert_allclose(values[:, 0], expected_distance, atol=1e-6)
    np.testing.assert_allclose(values[:, 1], expected_cos, atol=1e-6)
    np.testing.assert_allclose(
        values[:, 2], np.sqrt(1 - expected_cos**2), atol=1e-6
    )


def test_signal_has_six_channels_with_the_documented_misses():
    torus = trimesh.creation.torus(0.8, 0.2)
    bandwidth = 8

    signal = ss.mesh_to_signal(torus, bandwidth)
    box_signal = ss.mesh_to_signal(trimesh.creation.box([1, 2, 3]), bandwidth)

    assert signal.shape == (16, 16, 6) and signal.dtype == np.float32
    assert ss.CHANNEL_NAMES[0] == "distance"
    assert ss.CHANNEL_NAMES[3] == "hull_distance"

    # Polar rays pass through the torus' hole: distance 1, cos = sin = 0.
    np.testing.assert_array_equal(signal[0, :, :3], [[1, 0, 0]] * 16)
    missed = signal[..., 0] == 1.0
    assert 0 < np.mean(missed) < 1
    hits = ~missed
    norm = signal[..., 1] ** 2 + signal[..., 2] ** 2
    np.testing.assert_allclose(norm[hits], 1.0, atol=1e-5)

    # The hull (a convex disc) is hit everywhere; a box is its own hull.
    assert np.all(signal[..., 3] < 1.0)
    np.testing.assert_allclose(box_signal[..., :3], box_signal[..., 3:])


@pytest.mark.parametrize("pre_rotated", [False, True])
def test_rotation_by_one_longitude_step_rolls_the_signal(pre_rotated):
    bandwidth = 8
    mesh = _asymmetric_mesh()
    step = np.pi / bandwidth  # α_k = 2π k / (2b)

    signal = ss.mesh_to_signal(mesh, bandwidth)
    if pre_rotated:
        # Moved and turned mesh: centring and scaling must follow it.
        moved = mesh.copy()
        moved.apply_transform(
            trimesh.transformations.rotation_matrix(step, [0, 0, 1])
        )
        moved.apply_translation([3.0, -1.0, 2.0])
        rotated = ss.mesh_to_signal(moved, bandwidth)
    else:
        rotated = ss.mesh_to_signal(mesh, bandwidth, rotation=[step, 0, 0])

    # f(R⁻¹ x): the sample at α_k is the old one at α_{k-1}.
    np.testing.assert_allclose(rotated, np.roll(signal, 1, axis=1), atol=1e-5)


def test_half_turn_about_y_flips_both_grid_axes():
    bandwidth = 8
    mesh = _asymmetric_mesh()

    signal = ss.mesh_to_signal(mesh, bandwidth)
    rotated = ss.mesh_to_signal(mesh, bandwidth, rotation=[0, np.pi, 0])

    # Y(π): (β, α) -> (π - β, π - α), i.e. j -> 2b-1-j, k -> b-k mod 2b.
    side = 2 * bandwidth
    rows = side - 1 - np.arange(side)
    columns = (bandwidth - np.arange(side)) % side
    expected = signal[rows][:, columns]
    np.testing.assert_allclose(rotated, expected, atol=1e-5)


def test_empty_mesh_is_refused_naming_it():
    with pytest.raises(ValueError, match="Mesh empty.obj has no triangles"):
        ss.mesh_to_signal(trimesh.Trimesh(), 4, name="empty.obj")


def test_file_without_triangles_is_refused_naming_it(tmp_path):
    path = tmp_path / "points.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")

    with pytest.raises(ValueError, match=f"{path} has no triangles"):
        ss.read_mesh(str(path))


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.obj", None, "does not exist"),
        ("garbage.ply", b"ply\nthis is not a header\n", "Cannot read mesh"),
        ("shape.unknownformat", b"0 1 2", "Cannot read mesh"),
    ],
)
def test_unreadable_mesh_file_gives_one_clear_error(
    tmp_path, name, content, message
):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)

    with pytest.raises(ValueError, match=message) as error:
        ss.read_mesh(str(path))

    assert str(path) in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "name, text",
    [
        ("nan.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nv nan 0 1\nf 1 2 3\nf 1 2 4\n"),
        (
            "inf.off",
            "OFF\n4 2 0\n0 0 0\n1 0 0\n0 1 0\ninf 0 1\n3 0 1 2\n3 0 1 3\n",
        ),
    ],
)
def test_mesh_file_with_a_non_finite_vertex_is_refused(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)

    with pytest.raises(ValueError) as error:
        ss.read_mesh(str(path))

    message = str(error.value)
    assert f"Mesh file {path} has 1 vertex(es) with NaN" in message
    assert "vertex 3" in message and "\n" not in message


def test_in_memory_mesh_with_a_nan_vertex_is_refused():
    box = trimesh.creation.box()
    vertices = box.vertices.copy()
    vertices[2, 1] = np.nan
    mesh = trimesh.Trimesh(vertices, box.faces, process=False)

    with pytest.raises(ValueError, match="Mesh box.obj has 1 vertex"):
        ss.mesh_to_signal(mesh, 4, name="box.obj")


def test_random_bytes_stl_is_not_called_empty(tmp_path):
    garbage = tmp_path / "noise.stl"
    garbage.write_bytes(np.random.default_rng(0).bytes(500))
    empty = tmp_path / "empty.stl"
    empty.write_bytes(bytes(84))  # binary STL header, 0 triangles

    with pytest.raises(ValueError, match="Cannot read mesh file .* as a mesh"):
        ss.read_mesh(str(garbage))
    with pytest.raises(ValueError, match=f"{empty} has no triangles"):
        ss.read_mesh(str(empty))
    box = tmp_path / "box.stl"
    trimesh.creation.box().export(str(box))
    assert len(ss.read_mesh(str(box)).faces) == 12


def test_read_mesh_keeps_processing_duplicate_vertices(tmp_path):
    # STL stores 3 vertices per triangle; processing merges them.
    path = tmp_path / "box.stl"
    trimesh.creation.box().export(str(path))

    mesh = ss.read_mesh(str(path))

    assert len(mesh.vertices) == 8 and mesh.is_watertight


def test_open_mesh_is_cast_anyway_with_a_warning(caplog):
    box = trimesh.creation.box()
    holed = trimesh.Trimesh(box.vertices, box.faces[1:], process=False)

    with caplog.at_level(logging.WARNING):
        signal = ss.mesh_to_signal(holed, 4, name="holed.stl")

    assert np.all(np.isfinite(signal))
    warnings = [r.getMessage() for r in caplog.records]
    assert any(
        "holed.stl is not watertight" in text and "goes on" in text
        for text in warnings
    )


def test_bad_rotation_and_bandwidth_are_refused():
    box = trimesh.creation.box()

    with pytest.raises(ValueError, match="3 finite ZYZ Euler angles"):
        ss.mesh_to_signal(box, 4, rotation=[0.0, np.nan, 0.0])
    with pytest.raises(ValueError, match="`bandwidth` must be at most 256"):
        ss.mesh_to_signal(box, 257)


def test_mesh_is_cast_at_the_papers_bandwidth():
    signal = ss.mesh_to_signal(trimesh.creation.box(), 128)

    assert signal.shape == (256, 256, 6) and np.all(np.isfinite(signal))


def test_flat_mesh_is_cast_and_a_point_mesh_is_refused(caplog):
    box = trimesh.creation.box()
    flat_vertices = box.vertices * [1.0, 1.0, 0.0]
    flat = trimesh.Trimesh(flat_vertices, box.faces, process=False)
    point = trimesh.Trimesh([[1.0, 1.0, 1.0]] * 3, [[0, 1, 2]], process=False)

    with caplog.at_level(logging.WARNING):
        signal = ss.mesh_to_signal(flat, 4, name="flat.obj")

    # A square in the plane z = 0 through the centre: every ray hits it.
    assert np.all(signal[..., 0] < 1.0)
    np.testing.assert_allclose(signal[..., :3], signal[..., 3:])
    assert any(
        "flat.obj has no convex hull" in r.getMessage() for r in caplog.records
    )
    with pytest.raises(ValueError, match="point.obj all coincide"):
        ss.mesh_to_signal(point, 4, name="point.obj")


def test_list_helpers_reject_bad_arguments(tmp_path):
    box = trimesh.creation.box()

    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        ss.meshes_to_signals([box, box], 4, rotations=np.zeros([3, 3]))
    with pytest.raises(ValueError, match="Unknown shape class 'ball'"):
        ss.synthetic_mesh("ball", 0)
    with pytest.raises(ValueError, match="is not a directory"):
        ss.read_mesh_folder(str(tmp_path / "absent"))


def test_synthetic_data_are_deterministic_and_labelled():
    kwargs = dict(classes=("cube", "torus"), meshes_per_class=2)

    first = ss.load_shapes(4, test_meshes_per_class=1, seed=3, **kwargs)
    second = ss.load_shapes(4, test_meshes_per_class=1, seed=3, **kwargs)
    other = ss.load_shapes(4, test_meshes_per_class=1, seed=4, **kwargs)

    assert first["class_names"] == ["cube", "torus"]
    assert first["train_R"][0].shape == (4, 8, 8, 6)
    np.testing.assert_array_equal(first["train_R"][1], [0, 0, 1, 1])
    for name in ("train_NR", "train_R", "test_R"):
        np.testing.assert_array_equal(first[name][0], second[name][0])
    assert not np.allclose(first["test_R"][0], other["test_R"][0])
    assert not np.allclose(first["train_NR"][0], first["train_R"][0])


def test_load_shapes_rejects_bad_arguments():
    with pytest.raises(ValueError, match="Unknown shape class 'banana'"):
        ss.load_shapes(4, classes=("cube", "banana"))
    with pytest.raises(ValueError, match="Unknown set 'val_R'"):
        ss.load_shapes(4, sets=("val_R",))
    with pytest.raises(ValueError, match="`meshes_per_class` must be"):
        ss.load_shapes(4, meshes_per_class=0)


def test_folder_of_meshes_is_read_per_class(tmp_path):
    for class_name, maker in (
        ("boxes", trimesh.creation.box),
        ("balls", trimesh.creation.icosphere),
    ):
        os.makedirs(tmp_path / class_name)
        for index, extension in enumerate(("obj", "off", "stl", "ply")):
            maker().export(str(tmp_path / class_name / f"{index}.{extension}"))
    (tmp_path / "notes.txt").write_text("not a class")

    meshes, labels, class_names, _ = ss.read_mesh_folder(str(tmp_path))
    data = ss.load_shapes(4, source=str(tmp_path), sets=("train_R", "test_R"))

    assert class_names == ["balls", "boxes"]
    np.testing.assert_array_equal(labels, [0] * 4 + [1] * 4)
    assert len(data["train_R"][1]) == 6 and len(data["test_R"][1]) == 2
    with pytest.raises(ValueError, match="holds no <class>"):
        ss.read_mesh_folder(str(tmp_path / "boxes"))


def _write_classes(folder, counts):
    for class_name, count in counts.items():
        os.makedirs(folder / class_name)
        for index in range(count):
            trimesh.creation.box().export(
                str(folder / class_name / f"{index}.obj")
            )


@pytest.mark.parametrize(
    "counts, message",
    [
        (
            {"ball": 3, "cube": 1},
            "class 'cube' has 1 mesh; each class needs at least 2 (one for "
            "training, one for testing)",
        ),
        (
            {"cube": 4},
            "one class found ('cube'); rotation-invariant classification "
            "needs at least 2",
        ),
    ],
)
def test_folder_with_too_few_meshes_or_classes_is_refused(
    tmp_path, counts, message
):
    _write_classes(tmp_path, counts)

    with pytest.raises(ValueError) as error:
        ss.read_mesh_folder(str(tmp_path))

    assert message in str(error.value)
    assert str(tmp_path) in str(error.value)
    assert "\n" not in str(error.value)


def test_folder_counts_are_checked_before_any_mesh_is_read(
    tmp_path, monkeypatch
):
    _write_classes(tmp_path, {"ball": 2, "cube": 1})
    monkeypatch.setattr(ss, "read_mesh", lambda path: pytest.fail(path))

    with pytest.raises(ValueError, match="class 'cube' has 1 mesh"):
        ss.read_mesh_folder(str(tmp_path))


def test_paper_model_builds_and_runs_with_1_4_million_parameters():
    counts = shapes.parameter_count(shapes.SHREC17_CONFIG)
    model = shapes.shapes_cnn(shapes.ShapesConfig())
    signal = tf.random.stateless_normal([1, 256, 256, 6], [1, 2])

    logits = model(signal, training=False)

    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert counts == {"trainable": 1_400_215, "non_trainable": 1_640}
    assert trainable == 1_400_215
    assert model.count_params() == 1_400_215 + 1_640
    assert logits.shape == (1, 55) and np.all(np.isfinite(logits))


@pytest.mark.parametrize(
    "bandwidths, message",
    [
        ((257, 32, 22, 7), "`bandwidth_in` must be an integer in 1...256"),
        ((128, 65, 22, 7), "`bandwidth_out` must be an integer in 1...64"),
    ],
)
def test_paper_model_refuses_bandwidths_past_the_limits(bandwidths, message):
    with pytest.raises(ValueError, match=message):
        shapes.shapes_cnn(shapes.ShapesConfig(bandwidths=bandwidths))


@pytest.mark.parametrize(
    "config",
    [
        shapes.cpu_config(8),
        shapes.ShapesConfig(
            bandwidths=(12, 6, 4, 2), filters=(5, 7, 9), num_classes=11
        ),
    ],
)
def test_parameter_formula_matches_built_models(config):
    model = shapes.shapes_cnn(config)

    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    counts = shapes.parameter_count(config)
    assert trainable == counts["trainable"]
    assert model.count_params() == trainable + counts["non_trainable"]
    assert model.output_shape == (None, config.num_classes)


def test_config_rejects_increasing_bandwidths():
    with pytest.raises(ValueError, match="non-increasing"):
        shapes.ShapesConfig(bandwidths=(8, 16, 4, 2))


def test_config_rejects_wrong_lengths():
    with pytest.raises(ValueError, match="4 values and `filters` 3"):
        shapes.ShapesConfig(bandwidths=(8, 4, 2))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(batch_size=3), "not divisible by the 2 replicas"),
        (dict(batch_size=8), "exceeds the 4 training meshes"),
        (dict(num_classes=1), "labels reach 1 but the model has 1"),
    ],
)
def test_training_rejects_bad_sizes(mirrored_strategy, overrides, message):
    data = {
        "train_R": (
            np.zeros([4, 8, 8, 6], np.float32),
            np.array([0, 1, 0, 1], np.int32),
        )
    }
    config = shapes.cpu_config(4, **dict(dict(batch_size=2), **overrides))

    with pytest.raises(ValueError, match=message):
        shapes.train_and_evaluate(True, config, mirrored_strategy, data)


def _run(arguments, tmp_path):
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        tfcv_command() + ["spherical", "shapes"] + arguments,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environment,
        timeout=240,
    )


def test_command_writes_results_table_and_picture(tmp_path):
    output = tmp_path / "run"

    result = _run(
        [
            f"--output_dir={output}",
            "--bandwidth=4",
            "--filters=4,4,6",
            "--epochs=1",
            "--batch_size=4",
            "--meshes_per_class=2",
            "--test_meshes_per_class=1",
            "--classes=cube,torus",
        ],
        tmp_path,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((output / "results.json").read_text())
    assert set(report["accuracy"]) == {"R/R", "NR/R"}
    assert report["paper_parameters"] == 1_400_215
    assert report["settings"]["bandwidths"] == [4, 2, 2, 1]
    assert "| NR/R |" in (output / "results.md").read_text()
    assert (output / "signals.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--bandwidth=129", "--bandwidth must be in 4..128"),
        ("--classes=cube,banana", "unknown value 'banana' in --classes"),
        ("--batch_size=3", "not divisible by the 2 replicas"),
        ("--filters=4,4", "--filters=4,4 must be 3"),
    ],
)
def test_command_bad_flags_exit_2_with_one_line(tmp_path, flag, message):
    result = _run([f"--output_dir={tmp_path}", flag], tmp_path)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
