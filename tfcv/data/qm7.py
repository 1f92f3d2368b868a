"""QM7 molecules as per-atom potential spheres on the SOFT grid.

Spherical CNNs (Cohen, Geiger, Köhler & Welling, 2018, "Spherical CNNs",
arXiv:1801.10130), §5.4 ("Representation as a spherical signal"): around
every atom `i` of a molecule (positions `p`, charges `z`) sits a sphere
`S_i` of radius `r`; on it, one potential per atom type `z ∈ {1, 6, 7, 8,
16}` (H, C, N, O, S; `T = 5` channels),

    U_z(x) = Σ_{j ≠ i, z_j = z} z_i z / |x - p_j|,    x ∈ S_i,

sampled on the SOFT grid of bandwidth `b` (10 in the paper): a molecule
becomes `[N, 2b, 2b, T]` (axes atom, β, α, type). Padding atoms (`z = 0`)
get all-zero signals and count as no type.

QM7 (Blum & Reymond 2009; Rupp et al. 2012) is not shipped and never
downloaded: `read_qm7` reads the published `qm7.mat` from a local path
(get it from http://quantum-machine.org/datasets/). Its fields:
`X` Coulomb matrices `[M, N, N]`, `T` atomization energies `[1, M]` in
kcal/mol, `P` cross-validation splits `[K, M/K]` (0-based molecule
indices), `Z` charges `[M, N]`, `R` positions `[M, N, 3]` in Bohr; the
published file has `M = 7165`, `N = 23`, `K = 5`.

Shape letters: `M` molecules, `N` atom slots per molecule, `T` atom types,
`2b` grid side, `K` folds.

Deviations from the paper:
  - Radius: the paper keeps `r` "minimal such that no intersections among
    spheres in the training set happen"; spheres of radius `r` around two
    atoms at distance `d` are disjoint exactly when `r < d/2`, so we take
    `sphere_radius` = half the smallest interatomic distance of the given
    (training) molecules, the largest radius without intersections (the
    only radius the sentence pins down).
  - Grid: the paper samples on a Driscoll-Healy grid (`β_j = πj/(2b)`,
    the north pole included); we use the SOFT grid (`β_j = π(2j+1)/(4b)`)
    that the `tfcv_ops` transforms and the spherical layers take. Both are
    `2b × 2b` samples of the same bandwidth.
  - `X` (Coulomb matrices) is optional: nothing here uses it, but its
    shape is checked when present.
"""

import dataclasses
import os

import numpy as np

from tfcv.data.spherical_mnist import grid_points

# Nuclear charges of the atom types, in channel order (§5.4: T = 5).
ATOM_CHARGES = (1, 6, 7, 8, 16)
ATOM_NAMES = ("H", "C", "N", "O", "S")
DEFAULT_BANDWIDTH = 10
QM7_URL = "http://quantum-machine.org/datasets/"

# Elements of one [chunk, N, G, N] distance table: bounds the temporaries.
_CHUNK_ELEMENTS = 2_000_000
# Two real atoms of a molecule closer than this (Bohr) count as one place:
# their spheres would be (nearly) empty and the potentials infinite.
SAME_POSITION_BOHR = 1e-6

_FIELDS = {
    "X": "Coulomb matrices [M, N, N]",
    "T": "atomization energies [1, M] in kcal/mol",
    "P": "cross-validation splits [K, M/K] of 0-based molecule indices",
    "Z": "nuclear charges [M, N] (0 for padding)",
    "R": "atom positions [M, N, 3] in Bohr",
}


@dataclasses.dataclass(frozen=True)
class Qm7:
    """The fields of `qm7.mat` as float64 / int64 NumPy arrays.

    Attributes:
      positions: `[M, N, 3]` in Bohr (`R`).
      charges: `[M, N]` nuclear charges, 0 for padding atoms (`Z`).
      energies: `[M]` atomization energies in kcal/mol (`T`).
      splits: int64 `[K, M/K]`, fold `k`'s test molecules (`P`).
      coulomb: `[M, N, N]` Coulomb matrices (`X`) or `None`.
    """

    positions: np.ndarray
    charges: np.ndarray
    energies: np.ndarray
    splits: np.ndarray
    coulomb: np.ndarray = None

    @property
    def num_molecules(self) -> int:
        return int(self.charges.shape[0])

    @property
    def num_atoms(self) -> int:
        """`N`, the atom slots per molecule (23 in QM7)."""
        return int(self.charges.shape[1])


def _field(path: str, contents: dict, name: str) -> np.ndarray:
    if name not in contents:
        found = sorted(key for key in contents if not key.startswith("__"))
        raise ValueError(
            f"{path} has no field {name!r} ({_FIELDS[name]}); fields found: "
            f"{found or 'none'}; expected QM7's X, T, P, Z, R."
        )
    value = np.asarray(contents[name])
    if value.dtype.kind not in "biuf" or not np.all(np.isfinite(value)):
        raise ValueError(
            f"{path}: field {name!r} must hold finite numbers "
            f"({_FIELDS[name]}), received dtype {value.dtype}."
        )
    return value


def _check_shape(path: str, name: str, value, expected: tuple) -> None:
    if value.shape != expected:
        raise ValueError(
            f"{path}: field {name!r} has shape {value.shape}, expected "
            f"{expected} ({_FIELDS[name]})."
        )


def _load_mat(path) -> dict:
    import scipy.io

    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(
            f"QM7 file {path} is a directory; pass the path of the file "
            f"qm7.mat itself (e.g. {os.path.join(path, 'qm7.mat')}), "
            f"downloaded from {QM7_URL}."
        )
    if not os.path.isfile(path):
        raise ValueError(
            f"QM7 file {path} does not exist; download qm7.mat from "
            f"{QM7_URL} and pass its local path."
        )
    try:
        return scipy.io.loadmat(path)
    except Exception as error:  # scipy raises several unrelated types
        reason = str(error).strip().splitlines()[0] if str(error) else ""
        raise ValueError(
            f"{path} is not a readable MATLAB .mat file "
            f"({type(error).__name__}: {reason}); expected qm7.mat from "
            f"{QM7_URL}."
        ) from None


def _check_splits(path: str, splits: np.ndarray, molecules: int):
    if splits.ndim != 2 or splits.size != molecules:
        raise ValueError(
            f"{path}: field 'P' has shape {splits.shape}, expected "
            f"(K, {molecules} / K) ({_FIELDS['P']})."
        )
    if not np.array_equal(np.sort(splits.ravel()), np.arange(molecules)):
        raise ValueError(
            f"{path}: field 'P' must hold every molecule index 0..."
            f"{molecules - 1} exactly once ({_FIELDS['P']})."
        )
    return splits.astype(np.int64)


def read_qm7(path) -> Qm7:
    """Reads QM7's `.mat` file and checks its fields.

    Args:
      path: local path of `qm7.mat` (from http://quantum-machine.org/).

    Returns:
      A `Qm7` with float64 arrays and int64 splits.

    Raises:
      ValueError: one line naming the file and the field: the file is
        missing or not a `.mat` file; a field of `T, P, Z, R` is missing;
        a field has the wrong shape, non-finite values, charges outside
        `{0, 1, 6, 7, 8, 16}`, a molecule without atoms or with two atoms
        at the same position, or splits that are not a partition of the
        molecule indices.

    Example:
      >>> data = read_qm7("qm7.mat")  # doctest: +SKIP
      >>> data.positions.shape, data.splits.shape  # doctest: +SKIP
      ((7165, 23, 3), (5, 1433))
    """
    contents = _load_mat(path)
    path = os.fspath(path)

    # Z fixes M and N; the other fields must agree with it.
    charges = _field(path, contents, "Z").astype(np.float64)
    if charges.ndim != 2:
        raise ValueError(
            f"{path}: field 'Z' has shape {charges.shape}, expected "
            f"(M, N) ({_FIELDS['Z']})."
        )
    molecules, atoms = charges.shape
    positions = _field(path, contents, "R").astype(np.float64)
    _check_shape(path, "R", positions, (molecules, atoms, 3))
    energies = _field(path, contents, "T").astype(np.float64)
    if energies.shape in ((molecules,), (molecules, 1)):
        energies = energies.reshape([1, molecules])
    _check_shape(path, "T", energies, (1, molecules))
    splits = _check_splits(path, _field(path, contents, "P"), molecules)
    coulomb = None
    if "X" in contents:
        coulomb = _field(path, contents, "X").astype(np.float64)
        _check_shape(path, "X", coulomb, (molecules, atoms, atoms))

    # Charges: the five types of §5.4 or 0 (padding), at least one atom.
    unknown = np.setdiff1d(np.unique(charges), (0,) + ATOM_CHARGES)
    if unknown.size:
        raise ValueError(
            f"{path}: field 'Z' holds charge(s) {unknown.tolist()}, expected "
            f"only {list(ATOM_CHARGES)} (H, C, N, O, S) or 0 for padding."
        )
    empty = np.flatnonzero(~np.any(charges > 0, axis=1))
    if empty.size:
        raise ValueError(
            f"{path}: field 'Z' has molecule(s) without atoms, e.g. index "
            f"{int(empty[0])}; every molecule needs one charge > 0."
        )
    same = coinciding_atoms(positions, charges, SAME_POSITION_BOHR)
    if same is not None:
        raise ValueError(
            f"{path}: field 'R': molecule {same[0]} has atoms {same[1]} and "
            f"{same[2]} at the same position (closer than "
            f"{SAME_POSITION_BOHR} Bohr); fix or drop it."
        )
    return Qm7(positions, charges, energies[0], splits, coulomb)


def fold_indices(data: Qm7, fold: int, max_molecules=None) -> tuple:
    """Training and test molecule indices of one cross-validation fold.

    Fold `k` tests on `P[k]` and trains on the other folds. With
    `max_molecules`, only molecules `0 .. max_molecules - 1` are kept in
    either set (for quick runs).

    Returns:
      `(train, test)`, sorted int64 index arrays.

    Raises:
      ValueError: if `fold` is not in `0..K-1`, or `max_molecules` < 1.
    """
    folds = data.splits.shape[0]
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)):
        fold = None
    if fold is None or not 0 <= fold < folds:
        raise ValueError(
            f"`fold` must be an integer in 0..{folds - 1} (a row of P), "
            f"received {fold!r}."
        )
    test = np.sort(data.splits[fold])
    train = np.sort(np.delete(data.splits, fold, axis=0).ravel())
    if max_molecules is not None:
        if max_molecules < 1:
            raise ValueError(
                f"`max_molecules` must be >= 1, received {max_molecules!r}."
            )
        test = test[test < max_molecules]
        train = train[train < max_molecules]
    return train, test


def type_counts(charges) -> np.ndarray:
    """Atoms of each type per molecule: `[M, N]` charges -> float64 `[M, T]`.

    Example:
      >>> type_counts([[6, 1, 1, 0]]).tolist()
      [[2.0, 1.0, 0.0, 0.0, 0.0]]
    """
    charges = np.asarray(charges, dtype=np.float64)
    # [M, N, 1] == [T] -> [M, N, T] -> [M, T]
    one_hot = charges[..., np.newaxis] == np.asarray(ATOM_CHARGES)
    return one_hot.sum(axis=-2).astype(np.float64)


def _check_molecules(positions, charges) -> tuple:
    positions = np.asarray(positions, dtype=np.float64)
    charges = np.asarray(charges, dtype=np.float64)
    if (
        positions.ndim != 3
        or positions.shape[-1] != 3
        or charges.shape != positions.shape[:2]
    ):
        raise ValueError(
            f"`positions` must be [M, N, 3] and `charges` [M, N], received "
            f"shapes {positions.shape} and {charges.shape}."
        )
    return positions, charges


def _pair_distances(positions, real):
    """Per chunk of molecules: `(start, distances [m, N, N], valid pairs)`.

    `valid` marks the pairs `i < j` of two real (non-padding) atoms.
    """
    atoms = positions.shape[1]
    upper = np.triu(np.ones([atoms, atoms], dtype=bool), 1)
    step = max(1, _CHUNK_ELEMENTS // max(atoms * atoms, 1))
    for start in range(0, len(positions), step):
        p = positions[start : start + step]
        pair = real[start : start + step]
        # [m, N, 1, 3] - [m, 1, N, 3] -> [m, N, N]
        distance = np.linalg.norm(p[:, :, None] - p[:, None], axis=-1)
        valid = pair[:, :, None] & pair[:, None, :] & upper
        yield start, distance, valid


def coinciding_atoms(positions, charges, tolerance: float = 0.0):
    """The first `(molecule, atom i, atom j)`, `i < j`, of two real atoms
    at distance `<= tolerance`, or `None` if there is none.

    Example:
      >>> coinciding_atoms(np.zeros([1, 2, 3]), [[6, 1]])
      (0, 0, 1)
    """
    positions, charges = _check_molecules(positions, charges)
    for start, distance, valid in _pair_distances(positions, charges > 0):
        close = np.argwhere(valid & (distance <= tolerance))
        if close.size:
            m, i, j = (int(k) for k in close[0])
            return start + m, i, j
    return None


def sphere_radius(positions, charges) -> float:
    """Half the smallest distance between two atoms of one molecule.

    Spheres of this radius around the atoms do not intersect (§5.4; see
    the module docstring). Padding atoms (`charge == 0`) are ignored.

    Raises:
      ValueError: on bad shapes, if no molecule has two atoms, or if two
        atoms of a molecule coincide (naming the molecule and the atoms).
    """
    positions, charges = _check_molecules(positions, charges)
    same = coinciding_atoms(positions, charges)
    if same is not None:
        raise ValueError(
            f"Cannot choose a sphere radius: molecule {same[0]} has atoms "
            f"{same[1]} and {same[2]} at the same position; fix or drop it."
        )
    smallest = np.inf
    for _, distance, valid in _pair_distances(positions, charges > 0):
        if np.any(valid):
            smallest = min(smallest, float(np.min(distance[valid])))
    if not np.isfinite(smallest):
        raise ValueError(
            "Cannot choose a sphere radius: no molecule has two atoms "
            "(charge > 0); give molecules with at least two atoms."
        )
    return 0.5 * smallest


def potential_signals(
    positions,
    charges,
    radius: float,
    bandwidth: int = DEFAULT_BANDWIDTH,
    directions=None,
) -> np.ndarray:
    """The potentials `U_z` of §5.4 on every atom's sphere.

    `U_z(p_i + r u) = Σ_{j ≠ i, z_j = z} z_i z / |p_i + r u - p_j|` for the
    unit vectors `u` of the SOFT grid (or `directions`), with
    `|p_i + r u - p_j|² = |d|² + r² + 2 r u·d`, `d = p_i - p_j`, evaluated
    a chunk of molecules at a time.

    Args:
      positions: `[M, N, 3]` atom positions (Bohr for QM7).
      charges: `[M, N]` nuclear charges, 0 for padding atoms.
      radius: sphere radius `r > 0`, same unit as `positions`.
      bandwidth: `b` of the SOFT grid `[2b, 2b]` (§5.4: 10); ignored when
        `directions` is given.
      directions: `None` (the SOFT grid points, axes (β, α)) or unit
        vectors `[..., 3]` to evaluate at.

    Returns:
      float32 `[M, N, 2b, 2b, T]` (or `[M, N, ..., T]` for `directions`),
      channels in the order of `ATOM_CHARGES`; zero on padding atoms.

    Raises:
      ValueError: on bad shapes, a radius that is not a finite number
        > 0, or a sphere passing through another atom (infinite potential).

    Example:
      >>> potential_signals(np.zeros([1, 1, 3]), [[6]], 1.0, 2).shape
      (1, 1, 4, 4, 5)
    """
    positions, charges = _check_molecules(positions, charges)
    if not (
        isinstance(radius, (int, float, np.floating))
        and np.isfinite(radius)
        and radius > 0
    ):
        raise ValueError(
            f"`radius` must be a finite number > 0, received {radius!r}."
        )
    if directions is None:
        directions = grid_points(bandwidth)
    directions = np.asarray(directions, dtype=np.float64)
    if directions.ndim < 1 or directions.shape[-1] != 3:
        raise ValueError(
            f"`directions` must be [..., 3] unit vectors, received shape "
            f"{directions.shape}."
        )
    grid_shape = directions.shape[:-1]
    units = directions.reshape([-1, 3])  # [G, 3]
    molecules, atoms = charges.shape
    types = np.asarray(ATOM_CHARGES, dtype=np.float64)

    # Weights z_i z [z_j = z] [j ≠ i]: [M, N_i, 1, 1] * [M, 1, N_j, T].
    one_hot = charges[..., np.newaxis] == types  # [M, N, T]
    weights = charges[:, :, None, None] * (one_hot * types)[:, None]
    weights *= ~np.eye(atoms, dtype=bool)[None, :, :, None]

    outputs = np.zeros([molecules, atoms, len(units), len(types)], np.float32)
    step = max(1, _CHUNK_ELEMENTS // max(atoms * atoms * len(units), 1))
    for start in range(0, molecules, step):
        chunk = slice(start, start + step)
        p = positions[chunk]

        # d = p_i - p_j: [m, N, 1, 3] - [m, 1, N, 3] -> [m, N_i, N_j, 3]
        offsets = p[:, :, None] - p[:, None]
        # u·d: [G, 3] x [m, N_i, N_j, 3] -> [m, N_i, G, N_j]
        projection = np.einsum("gk,mijk->migj", units, offsets)
        squared = (offsets**2).sum(-1)[:, :, None] + radius**2
        distance = np.sqrt(np.maximum(squared + 2 * radius * projection, 0))

        # Σ_j z_i z [..] / |x - p_j|, only where the weight is non-zero.
        w = weights[chunk]  # [m, N_i, N_j, T]
        used = np.any(w != 0, axis=-1)[:, :, None]  # [m, N_i, 1, N_j]
        with np.errstate(divide="ignore"):
            inverse = np.where(used, 1.0 / np.where(used, distance, 1), 0.0)
        # [m, N_i, G, N_j] x [m, N_i, N_j, T] -> [m, N_i, G, T]
        outputs[chunk] = np.einsum("migj,mijt->migt", inverse, w)
    if not np.all(np.isfinite(outputs)):
        raise ValueError(
            f"A sphere of radius {radius} passes through another atom "
            "(infinite potential); use a radius below half the smallest "
            "interatomic distance (`sphere_radius`)."
        )
    return outputs.reshape([molecules, atoms, *grid_shape, len(types)])
