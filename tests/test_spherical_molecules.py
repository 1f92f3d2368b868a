"""QM7 reader, per-atom potential spheres and the §5.4 molecule model."""

import json
import subprocess

import numpy as np
import pytest
import scipy.io
import tensorflow as tf
import tf_keras

from conftest import tfcv_command
from tfcv.cli import main as cli_main
from tfcv.data import qm7
from tfcv.data import spherical_mnist
from tfcv.spherical import molecules

# Per-type energies (kcal/mol) of the synthetic molecules, H C N O S.
TYPE_ENERGIES = np.array([-60.0, -150.0, -110.0, -90.0, -70.0])
ATOM_SLOTS = 23


def synthetic_molecules(count: int, seed: int = 0) -> dict:
    """QM7-layout fields of `count` small molecules with known energies.

    A chain of 1-3 heavy atoms (C, N, O, S) 2.8 Bohr apart, with 1-3
    hydrogens 2.05 Bohr from random heavy atoms; the energy is a sum of
    per-type constants plus a pairwise term `-Σ_{i<j} z_i z_j e^{-d/2}`.
    """
    rng = np.random.default_rng(seed)
    charges = np.zeros([count, ATOM_SLOTS])
    positions = np.zeros([count, ATOM_SLOTS, 3])
    energies = np.zeros([count])
    for m in range(count):
        heavy = rng.choice([6, 6, 7, 8, 16], size=rng.integers(1, 4))
        points = [np.zeros(3)]
        while len(points) < len(heavy):
            step = rng.normal(size=3)
            candidate = points[-1] + 2.8 * step / np.linalg.norm(step)
            if np.linalg.norm(np.array(points) - candidate, axis=1).min() > 2.7:
                points.append(candidate)
        hydrogens = rng.integers(1, 4)
        for _ in range(hydrogens):
            anchor = points[rng.integers(len(heavy))]
            while True:
                step = rng.normal(size=3)
                candidate = anchor + 2.05 * step / np.linalg.norm(step)
                gaps = np.linalg.norm(np.array(points) - candidate, axis=1)
                if gaps.min() > 2.0:
                    break
            points.append(candidate)
        z = np.concatenate([heavy, np.ones(hydrogens)])
        p = np.array(points) + rng.normal(size=3)
        charges[m, : len(z)], positions[m, : len(z)] = z, p
        distance = np.linalg.norm(p[:, None] - p[None], axis=-1)
        pairs = np.triu(np.outer(z, z) * np.exp(-distance / 2), 1)
        counts = qm7.type_counts(z[None])[0]
        energies[m] = counts @ TYPE_ENERGIES - pairs.sum()
    return {
        "X": np.zeros([count, ATOM_SLOTS, ATOM_SLOTS]),
        "T": energies[None],
        "P": rng.permutation(count).reshape([5, -1]),
        "Z": charges,
        "R": positions,
    }


def write_mat(path, fields) -> str:
    scipy.io.savemat(str(path), fields)
    return str(path)


@pytest.fixture(scope="module")
def fields():
    return synthetic_molecules(40)


def direct_potential(positions, charges, atom, point, charge):
    """U_z(x) = Σ_{j ≠ i, z_j = z} z_i z / |x - p_j| (§5.4), one point."""
    total = 0.0
    for j in range(len(charges)):
        if j != atom and charges[j] == charge:
            distance = np.linalg.norm(point - positions[j])
            total += charges[atom] * charge / distance
    return total


def test_reader_round_trip(tmp_path, fields):
    path = write_mat(tmp_path / "qm7.mat", fields)

    data = qm7.read_qm7(path)

    np.testing.assert_array_equal(data.positions, fields["R"])
    np.testing.assert_array_equal(data.charges, fields["Z"])
    np.testing.assert_array_equal(data.energies, fields["T"][0])
    np.testing.assert_array_equal(data.splits, fields["P"])
    assert data.coulomb.shape == (40, ATOM_SLOTS, ATOM_SLOTS)
    assert (data.num_molecules, data.num_atoms) == (40, ATOM_SLOTS)


def test_fold_indices_split_by_rows_of_p(tmp_path, fields):
    data = qm7.read_qm7(write_mat(tmp_path / "qm7.mat", fields))

    train, test = qm7.fold_indices(data, 2)
    small_train, small_test = qm7.fold_indices(data, 2, max_molecules=20)

    np.testing.assert_array_equal(test, np.sort(fields["P"][2]))
    assert sorted(np.concatenate([train, test])) == list(range(40))
    assert set(small_test) == {i for i in test if i < 20}
    assert set(small_train) == {i for i in train if i < 20}
    with pytest.raises(ValueError, match="`fold` must be an integer in 0..4"):
        qm7.fold_indices(data, 5)


def test_potentials_match_the_formula_at_a_few_points(fields):
    positions, charges = fields["R"][:3], fields["Z"][:3]
    radius, bandwidth = 0.9, 4
    points = spherical_mnist.grid_points(bandwidth)

    signals = qm7.potential_signals(positions, charges, radius, bandwidth)

    assert signals.shape == (3, ATOM_SLOTS, 8, 8, 5)
    rng = np.random.default_rng(1)
    for m in range(3):
        for atom in np.flatnonzero(charges[m] > 0):
            beta, alpha, channel = rng.integers(8), rng.integers(8), 0
            channel = rng.integers(5)
            x = positions[m, atom] + radius * points[beta, alpha]
            expected = direct_potential(
                positions[m], charges[m], atom, x, qm7.ATOM_CHARGES[channel]
            )
            actual = signals[m, atom, beta, alpha, channel]
            np.testing.assert_allclose(actual, expected, rtol=1e-5)
    padding = charges == 0
    assert np.all(signals[padding] == 0)


def test_rotating_a_molecule_rotates_its_signals(fields):
    positions, charges = fields["R"][:4], fields["Z"][:4]
    rotation = spherical_mnist.rotation_matrices([0.3, 1.1, -2.0])
    units = spherical_mnist.grid_points(5)

    # The signal of R p at u equals the signal of p at R⁻¹ u (Eq. 1).
    rotated = qm7.potential_signals(positions @ rotation.T, charges, 1.0, 5)
    expected = qm7.potential_signals(
        positions, charges, 1.0, directions=units @ rotation
    )

    np.testing.assert_allclose(rotated, expected, rtol=1e-5, atol=1e-5)


def test_sphere_radius_is_half_the_smallest_distance():
    positions = np.array([[[0, 0, 0], [3, 0, 0], [0, 0, 0]]], np.float64)
    charges = np.array([[6, 1, 0]])

    radius = qm7.sphere_radius(positions, charges)

    assert radius == pytest.approx(1.5)
    with pytest.raises(ValueError, match="no molecule has two atoms"):
        qm7.sphere_radius(positions[:, :1], charges[:, :1])
    with pytest.raises(
        ValueError, match="molecule 0 has atoms 0 and 2 at the same position"
    ):
        qm7.sphere_radius(positions, np.array([[6, 1, 1]]))


def test_reader_refuses_two_atoms_at_one_position(tmp_path, fields):
    positions = fields["R"].copy()
    positions[7, 3] = positions[7, 1]
    path = write_mat(tmp_path / "qm7.mat", dict(fields, R=positions))

    with pytest.raises(ValueError) as error:
        qm7.read_qm7(path)

    message = str(error.value)
    assert "molecule 7 has atoms 1 and 3 at the same position" in message
    assert "fix or drop it" in message and "\n" not in message


def test_padding_atoms_at_one_position_are_fine(tmp_path, fields):
    # Padding slots (charge 0) all sit at the origin in QM7.
    path = write_mat(tmp_path / "qm7.mat", fields)

    assert qm7.coinciding_atoms(fields["R"], fields["Z"]) is None
    assert qm7.read_qm7(path).num_molecules == 40


def test_directory_source_is_named_as_a_directory(tmp_path):
    with pytest.raises(ValueError) as error:
        qm7.read_qm7(str(tmp_path))

    message = str(error.value)
    assert f"QM7 file {tmp_path} is a directory" in message
    assert "qm7.mat" in message and "does not exist" not in message


def test_potentials_reject_bad_arguments(fields):
    positions, charges = fields["R"][:1], fields["Z"][:1]

    with pytest.raises(ValueError, match="`radius` must be a finite"):
        qm7.potential_signals(positions, charges, 0.0)
    with pytest.raises(ValueError, match="`positions` must be"):
        qm7.potential_signals(positions[..., :2], charges, 1.0)
    with pytest.raises(ValueError, match="`directions` must be"):
        qm7.potential_signals(positions, charges, 1.0, directions=[1, 0])
    with pytest.raises(ValueError, match="passes through another atom"):
        two = np.array([[[0, 0, 0], [0, 0, 2.0]]])
        qm7.potential_signals(two, [[6, 6]], 2.0, directions=[[0, 0, 1]])


def test_first_stage_recovers_per_type_energies():
    fields = synthetic_molecules(40, seed=3)
    counts = qm7.type_counts(fields["Z"])
    linear = counts @ TYPE_ENERGIES + 5.0

    coefficients = molecules.fit_first_stage(fields["Z"], linear)
    predicted = molecules.first_stage_predict(coefficients, fields["Z"])

    # All five types occur, so the fit is unique.
    assert np.all(counts.sum(0) > 0)
    np.testing.assert_allclose(coefficients[:-1], TYPE_ENERGIES, atol=1e-6)
    assert coefficients[-1] == pytest.approx(5.0)
    assert molecules.rmse(predicted, linear) < 1e-6


def _small_model(seed=0):
    tf_keras.utils.set_random_seed(seed)
    config = molecules.MoleculeConfig(
        bandwidth=4,
        block_bandwidths=(4, 3, 2),
        block_filters=(6, 8, 10),
        phi_units=(12, 8),
        psi_units=(6,),
    )
    return molecules.build_model(config), config


def _inputs(fields, indices, bandwidth, radius=1.0):
    charges = fields["Z"][indices]
    signals = qm7.potential_signals(
        fields["R"][indices], charges, radius, bandwidth
    )
    return {
        "signals": tf.constant(signals / 20.0),
        "mask": tf.constant((charges > 0).astype(np.float32)),
    }


def test_atom_features_are_rotation_invariant(fields):
    model, config = _small_model()
    indices = [0, 1, 2, 3]
    rotation = spherical_mnist.rotation_matrices([2.1, 0.7, 0.4])
    rotated = dict(fields, R=fields["R"] @ rotation.T)
    original_inputs = _inputs(fields, indices, config.bandwidth)
    rotated_inputs = _inputs(rotated, indices, config.bandwidth)

    before = model.atom_features(**original_inputs).numpy()
    after = model.atom_features(**rotated_inputs).numpy()

    # The signals move (they are rotated, not invariant) ...
    real = original_inputs["mask"].numpy() > 0
    moved = rotated_inputs["signals"].numpy() - original_inputs["signals"]
    assert np.linalg.norm(moved) > 0.2 * np.linalg.norm(
        original_inputs["signals"]
    )
    # ... but the features do not, up to aliasing of the non-band-limited
    # potentials and the ReLUs (measured: 6e-4 of the spread between
    # atoms for two rotations).
    error = np.linalg.norm(after[real] - before[real])
    spread = np.linalg.norm(before[real] - before[real].mean(0))
    assert error < 0.02 * spread
    assert np.all(after[~real] == 0)


@pytest.mark.parametrize("training", [False, True])
def test_padding_and_atom_order_do_not_change_the_prediction(fields, training):
    model, config = _small_model()
    inputs = _inputs(fields, [0, 1, 2, 3], config.bandwidth)
    signals, mask = inputs["signals"].numpy(), inputs["mask"].numpy()

    # Permute every molecule's slots, padding included; or cut to 6 slots.
    rng = np.random.default_rng(0)
    order = np.stack([rng.permutation(ATOM_SLOTS) for _ in range(4)])
    permuted = {
        "signals": np.take_along_axis(
            signals, order[:, :, None, None, None], 1
        ),
        "mask": np.take_along_axis(mask, order, 1),
    }
    trimmed = {"signals": signals[:, :6], "mask": mask[:, :6]}
    assert mask[:, 6:].sum() == 0

    outputs = [
        model(batch, training=training).numpy()
        for batch in (inputs, permuted, trimmed)
    ]

    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs[2], outputs[0], rtol=1e-4, atol=1e-5)


def test_paper_architecture_has_about_1_4m_parameters():
    config = molecules.MoleculeConfig()

    count = molecules.parameter_count(molecules.config_for_bandwidth(4))

    assert config.block_bandwidths == molecules.scaled_block_bandwidths(10)
    assert count == 1_470_691  # the same at every bandwidth
    with pytest.raises(ValueError, match="`block_bandwidths` must be"):
        molecules.MoleculeConfig(block_bandwidths=(10, 12, 6, 4, 2))


def test_model_config_round_trips():
    model, config = _small_model()

    clone = molecules.MoleculeEnergyModel.from_config(model.get_config())

    assert clone.config == config
    assert clone.name == model.name


def test_cli_run_writes_table_results_and_picture(tmp_path, fields):
    source = write_mat(tmp_path / "qm7.mat", fields)
    output_dir = tmp_path / "run"
    command = tfcv_command() + [
        "spherical",
        "molecules",
        f"--source={source}",
        f"--output_dir={output_dir}",
        "--bandwidth=3",
        "--epochs=2",
        "--batch_size=8",
    ]

    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=300
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "AutoGraph could not" not in completed.stderr
    assert "1,470,691 parameters" in completed.stdout
    results = json.loads((output_dir / "results.json").read_text())
    assert np.isfinite(results["rmse"])
    assert results["rmse"] < results["mean_rmse"]
    assert results["test_molecules"] == 8
    assert (
        "| Spherical CNN | Cohen et al. 2018 | 8.47 |"
        in (output_dir / "table3.md").read_text()
    )
    assert (output_dir / "potentials.png").read_bytes()[:4] == b"\x89PNG"


def _without(fields, name):
    return {key: value for key, value in fields.items() if key != name}


def _with_nan(fields):
    positions = fields["R"].copy()
    positions[0, 0, 0] = np.nan
    return dict(fields, R=positions)


def _with_empty_molecule(fields):
    charges = fields["Z"].copy()
    charges[3] = 0
    return dict(fields, Z=charges)


def _with_shared_position(fields):
    positions = fields["R"].copy()
    positions[7, 3] = positions[7, 1]
    return dict(fields, R=positions)


def _same(fields):
    return fields


@pytest.mark.parametrize(
    "change, flags, message",
    [
        (lambda f: _without(f, "R"), [], "has no field 'R'"),
        (lambda f: dict(f, R=f["R"][:, :, :2]), [], "field 'R' has shape"),
        (lambda f: dict(f, T=f["T"][:, :-1]), [], "field 'T' has shape"),
        (lambda f: dict(f, X=f["X"][:, :3]), [], "field 'X' has shape"),
        (lambda f: dict(f, Z=f["Z"][..., None]), [], "field 'Z' has shape"),
        (lambda f: dict(f, P=f["P"][:4]), [], "field 'P' has shape"),
        (lambda f: dict(f, P=f["P"] * 0), [], "every molecule index"),
        (lambda f: dict(f, Z=f["Z"] * 2), [], "holds charge(s)"),
        (_with_empty_molecule, [], "molecule(s) without atoms, e.g. index 3"),
        (_with_nan, [], "field 'R' must hold finite numbers"),
        (_with_shared_position, [], "molecule 7 has atoms 1 and 3 at the "),
        ("directory", [], "is a directory; pass the path of the file"),
        ("missing", [], "does not exist; download qm7.mat from"),
        ("not_mat", [], "is not a readable MATLAB .mat file"),
        (None, [], "--source is required"),
        (_same, ["--fold=5"], "--fold must be in 0..4"),
        (_same, ["--max_molecules=5"], "need >= --batch_size=20 and >= 1"),
        (_same, ["--epochs=0"], "--epochs must be >= 1"),
        (_same, ["--max_molecules=-1"], "--max_molecules must be >= 0"),
        (_same, ["--learning_rate=0"], "--learning_rate must be"),
        (_same, ["--bandwidth=1"], "--bandwidth must be in 2..64"),
        (_same, ["--batch_size=7"], "not divisible by the 2 replicas"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path, capsys, fields, change, flags, message
):
    path = tmp_path / "qm7.mat"
    if callable(change):
        write_mat(path, change(fields))
    elif change == "not_mat":
        path.write_text("not a MATLAB file\n")
    elif change == "directory":
        path = tmp_path
    output_dir = tmp_path / "out"
    arguments = [f"--output_dir={output_dir}"] + flags
    if change is not None:
        arguments.append(f"--source={path}")

    code = cli_main.run_command(
        "spherical molecules", arguments, module_name="spherical_molecules"
    )

    error = capsys.readouterr().err.strip()
    assert code == 2
    assert len(error.splitlines()) == 1, error
    assert error.startswith("tfcv spherical molecules: error:")
    assert message in error
    assert not output_dir.exists()


def test_training_rejects_bad_batches_and_empty_folds(
    tmp_path, fields, mirrored_strategy
):
    data = qm7.read_qm7(write_mat(tmp_path / "qm7.mat", fields))
    config = molecules.config_for_bandwidth(3, batch_size=7)

    with pytest.raises(ValueError, match="not divisible by the 2 replicas"):
        molecules.train_and_evaluate(data, 0, config, mirrored_strategy)
    with pytest.raises(ValueError, match="exceeds the 32 training"):
        config = molecules.config_for_bandwidth(3, batch_size=40)
        molecules.train_and_evaluate(data, 0, config, mirrored_strategy)
    with pytest.raises(ValueError, match="has no test molecules"):
        # A fold without molecule 0, cut below its smallest index.
        fold = next(k for k in range(5) if fields["P"][k].min() > 0)
        below = int(fields["P"][fold].min())
        molecules.train_and_evaluate(
            data, fold, config, mirrored_strategy, below
        )


def test_a_run_that_blows_up_is_reported_as_diverged(
    tmp_path, fields, mirrored_strategy
):
    data = qm7.read_qm7(write_mat(tmp_path / "qm7.mat", fields))
    config = molecules.config_for_bandwidth(
        3, batch_size=8, epochs=2, learning_rate=1e9
    )

    with pytest.raises(molecules.TrainingDiverged, match="lower the learning"):
        molecules.train_and_evaluate(
            data, 0, config, mirrored_strategy, progress=False
        )
