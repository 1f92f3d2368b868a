"""3D shapes on the sphere: meshes ray-cast onto the SOFT grid (§5.3).

Spherical CNNs (Cohen, Geiger, Köhler & Welling, 2018, "Spherical CNNs",
arXiv:1801.10130), §5.3 ("Recognition of 3D shapes", Fig. 5): a mesh is
projected onto an enclosing sphere by casting, from every grid point of
the sphere, one ray towards the centre; the first intersection gives the
ray length and the cosine and sine of the angle between the ray and the
surface normal. The same three values for the convex hull of the mesh
make the 6 channels of the signal.

Geometry (fixed here, so that every number is reproducible):

* The mesh is first centred on the centre `c` of its minimal bounding
  sphere and scaled by `1 / r`, `r` that sphere's radius; it then fits the
  unit sphere, and the centre and scale do not depend on the mesh's
  orientation. A rotation `R` (ZYZ Euler angles, as in
  `tfcv.data.spherical_mnist`) is applied after that: `v ↦ R v`, so the
  signal of the rotated mesh is `f(R⁻¹ x)` (Eq. 1).
* The ray of grid sample `(β_j, α_k)` starts at the unit vector
  `x = (sin β cos α, sin β sin α, cos β)` (`grid_points`) and runs along
  `-x`. It starts a hair outside the unit sphere (`1 + 1e-6`) so that
  vertices touching the sphere are hit; lengths are measured from the unit
  sphere.
* Channels, for the mesh (0-2) and for its convex hull (3-5):
  `distance` = ray length to the first hit / 2 (the sphere's diameter), in
  `[0, 1]`; `cos` = `|n · d|` and `sin` = `|n × d|`, `n` the unit normal of
  the triangle hit and `d` the ray direction (absolute values: triangle
  winding is not reliable in the wild, and the angle is taken in
  `[0, π/2]`).
* A ray that hits nothing (it crossed the whole sphere) gets
  `distance = 1` (the full diameter), `cos = sin = 0`; a hit always has
  `cos² + sin² = 1`, so misses stay distinguishable.

Meshes need not be watertight (rays only need triangles); a mesh that is
not gets a logged warning naming it. Meshes whose vertices lie in a plane
have no convex hull volume: the hull channels then repeat the mesh's own.

Synthetic data (`synthetic_mesh`, `load_shapes`): solids of seven
classes built with `trimesh.creation`, with random proportions drawn from
a seed: `cube`, `rod`, `plate` (boxes), `cylinder`, `cone`, `torus`,
`capsule`. Real meshes come from a folder `<folder>/<class>/*.{obj,off,
stl,ply}` (`read_mesh_folder`).

Shape letters: `N` meshes, `P` rays, `2b` grid side; signals are
`[N, 2b, 2b, 6]` with axes (β, α, channel), the input layout of
`tfcv.layers.spherical.S2Convolution`.

Deviations from the paper:
  - The paper uses SHREC17 (51,300 ShapeNet meshes, 55 classes) at
    `b = 128`; the default data here are seven classes of synthetic
    solids (no download at run time). SHREC17 meshes can be read from a
    local folder and cast at `b = 128` (grids go up to `b = 256`).
  - The paper does not give the ray length's scale, the value of missed
    rays or the sign convention of the angle; ours are given above.
"""

import os

import numpy as np
from absl import logging

from tfcv.data.spherical_mnist import grid_points
from tfcv.data.spherical_mnist import random_rotations
from tfcv.data.spherical_mnist import rotation_matrices
from tfcv_ops import grids

CHANNEL_NAMES = (
    "distance",
    "cos",
    "sin",
    "hull_distance",
    "hull_cos",
    "hull_sin",
)
CLASS_NAMES = (
    "cube",
    "rod",
    "plate",
    "cylinder",
    "cone",
    "torus",
    "capsule",
)
MESH_EXTENSIONS = (".obj", ".off", ".stl", ".ply")
DEFAULT_TEST_FRACTION = 0.25
# Rays start this far (relative to the radius) outside the unit sphere.
_MARGIN = 1e-6


def _check_finite(vertices, name: str):
    """Raises a ValueError naming the first vertex with a NaN or inf."""
    vertices = np.asarray(vertices, dtype=np.float64)
    bad = np.flatnonzero(~np.all(np.isfinite(vertices), axis=-1))
    if bad.size:
        raise ValueError(
            f"Mesh {name} has {bad.size} vertex(es) with NaN or infinite "
            f"coordinates, e.g. vertex {int(bad[0])} = "
            f"{vertices[bad[0]].tolist()}; fix or remove them."
        )


def _check_mesh(mesh, name: str):
    """Raises a ValueError if `mesh` has no triangles or a non-finite
    vertex; warns if it is not closed."""
    faces = getattr(mesh, "faces", None)
    if faces is None or len(faces) == 0 or len(mesh.vertices) == 0:
        raise ValueError(
            f"Mesh {name} has no triangles; give a surface mesh with at "
            f"least one face."
        )
    _check_finite(mesh.vertices, name)
    if not mesh.is_watertight:
        logging.warning(
            "Mesh %s is not watertight; ray casting does not need it and "
            "goes on (rays may pass through its holes and count as misses).",
            name,
        )


def read_mesh(path: str):
    """Reads one mesh file with trimesh (any format it knows).

    Args:
      path: a local file (`.obj`, `.off`, `.stl`, `.ply`, ...).

    Returns:
      A `trimesh.Trimesh` (scenes are merged into one mesh).

    Raises:
      ValueError: if the file does not exist, trimesh cannot read it (for
        `.stl`, also a file that is neither binary nor ASCII STL), it
        holds no triangles, or a vertex has a NaN or infinite coordinate.

    Example:
      >>> mesh = read_mesh("chair.off")  # doctest: +SKIP
    """
    import trimesh

    if not os.path.isfile(path):
        raise ValueError(f"Mesh file {path} does not exist or is no file.")
    try:
        # Unprocessed first: processing silently drops NaN/inf vertices.
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as error:  # trimesh raises many kinds; name the file.
        message = str(error).strip().splitlines()
        raise ValueError(
            f"Cannot read mesh file {path} "
            f"({message[0] if message else type(error).__name__}); expected "
            f"a mesh format trimesh reads ({', '.join(MESH_EXTENSIONS)}, ...)."
        ) from error
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        if path.lower().endswith(".stl") and not _is_stl(path):
            raise ValueError(
                f"Cannot read mesh file {path} as a mesh: it is neither a "
                f"binary STL (size must be 84 + 50 x the triangle count) nor "
                f"an ASCII STL (starting with 'solid'); re-export it."
            )
        raise ValueError(
            f"Mesh file {path} has no triangles; give a surface mesh with at "
            f"least one face."
        )
    _check_finite(mesh.vertices, f"file {path}")
    mesh.process()
    return mesh


def _is_stl(path: str) -> bool:
    """Whether `path` looks like an STL file: a binary one whose size
    matches its triangle count, or an ASCII one starting with `solid`."""
    with open(path, "rb") as stream:
        head = stream.read(84)
    if len(head) == 84:
        count = int.from_bytes(head[80:84], "little")
        if os.path.getsize(path) == 84 + 50 * count:
            return True
    return head.lstrip().lower().startswith(b"solid")


def normalized_vertices(mesh, name: str = "mesh") -> np.ndarray:
    """Vertices `[V, 3]` centred on the minimal bounding sphere, radius 1.

    Raises:
      ValueError: if all vertices coincide (no bounding radius).
    """
    import trimesh

    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    try:
        centre, radius = trimesh.nsphere.minimum_nsphere(vertices)
    except Exception:  # Qhull refuses flat point sets; see below.
        centre, radius = _flat_bounding_sphere(vertices)
    if not radius > 0:
        raise ValueError(
            f"The vertices of mesh {name} all coincide (bounding radius 0); "
            f"give a mesh with extent."
        )
    return (vertices - centre) / radius


def _flat_bounding_sphere(vertices):
    """Minimal ball of points spanning a plane, a line or a point.

    The minimal ball's centre lies in the points' affine hull, so it is
    the minimal circle (or interval) there, lifted back to 3D.
    """
    import trimesh

    mean = np.mean(vertices, axis=0)
    # Orthonormal basis of the affine hull: [V, 3] -> rows of [3, 3].
    _, singular, basis = np.linalg.svd(vertices - mean, full_matrices=False)
    rank = int(np.sum(singular > 1e-12 * max(singular[0], 1e-300)))
    if rank == 0:
        return mean, 0.0
    # [V, 3] x [3, rank] -> [V, rank]
    coordinates = (vertices - mean) @ basis[:rank].T
    if rank == 1:
        low, high = np.min(coordinates), np.max(coordinates)
        inner, radius = np.array([(low + high) / 2]), (high - low) / 2
    else:
        inner, radius = trimesh.nsphere.minimum_nsphere(coordinates)
    # [rank] x [rank, 3] -> [3]
    return mean + inner @ basis[:rank], float(radius)


def cast_rays(mesh, points, centre=(0.0, 0.0, 0.0), radius: float = 1.0):
    """Distance, cos and sin of the first hit of rays towards `centre`.

    The ray of point `x` (a unit vector) starts on the sphere
    `centre + radius x` and runs along `-x` (module docstring).

    Args:
      mesh: a `trimesh.Trimesh` inside the sphere.
      points: `[P, 3]` unit vectors.
      centre: `[3]` centre of the casting sphere.
      radius: its radius, > 0.

    Returns:
      float64 `[P, 3]`: distance / (2 radius) in `[0, 1]`, `|cos|`,
      `|sin|` of the angle between ray and normal; misses `(1, 0, 0)`.

    Example:
      >>> import trimesh
      >>> cast_rays(trimesh.creation.icosphere(), [[0.0, 0.0, 1.0]],
      ...           radius=2.0).round(2).tolist()
      [[0.25, 1.0, 0.0]]
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    centre = np.asarray(centre, dtype=np.float64)
    origins = centre + (1.0 + _MARGIN) * radius * points
    directions = -points
    locations, ray_index, triangle_index = mesh.ray.intersects_location(
        origins, directions, multiple_hits=False
    )

    # Misses: the whole diameter, no angle.
    values = np.zeros([len(points), 3])
    values[:, 0] = 1.0

    # Hits: ray length from the sphere, angle to the triangle's normal.
    travelled = np.linalg.norm(locations - origins[ray_index], axis=-1)
    travelled -= _MARGIN * radius
    values[ray_index, 0] = np.clip(travelled / (2.0 * radius), 0.0, 1.0)
    normals = mesh.face_normals[triangle_index]  # [H, 3]
    cosine = np.abs(np.sum(normals * directions[ray_index], axis=-1))
    cosine = np.clip(cosine, 0.0, 1.0)
    values[ray_index, 1] = cosine
    values[ray_index, 2] = np.sqrt(1.0 - cosine**2)
    return values


def _convex_hull(mesh, name: str):
    """The convex hull, or the mesh itself when its points are flat."""
    try:
        hull = mesh.convex_hull
    except Exception:  # Qhull refuses coplanar points.
        hull = None
    if hull is None or len(hull.faces) == 0:
        logging.warning(
            "Mesh %s has no convex hull with volume (flat points); its "
            "hull channels repeat the mesh's own.",
            name,
        )
        return mesh
    return hull


def mesh_to_signal(
    mesh, bandwidth: int, rotation=None, name: str = "mesh"
) -> np.ndarray:
    """The 6-channel spherical signal of one mesh (Fig. 5).

    Args:
      mesh: a `trimesh.Trimesh` with at least one triangle; it is not
        changed.
      bandwidth: `b` of the SOFT grid, `1..256`
        (`S2_MAX_GRID_BANDWIDTH`; 128 in §5.3).
      rotation: `None` or ZYZ Euler angles `[3]` applied to the normalized
        mesh (`v ↦ R v`).
      name: how warnings and errors name the mesh (e.g. its file).

    Returns:
      float32 `[2b, 2b, 6]`, axes (β, α, channel), channels
      `CHANNEL_NAMES`.

    Raises:
      ValueError: if the mesh has no triangles, all its vertices coincide,
        `bandwidth` is not in `1..256` or `rotation` is not 3 finite
        angles.

    Example:
      >>> import trimesh
      >>> mesh_to_signal(trimesh.creation.box(), bandwidth=4).shape
      (8, 8, 6)
    """
    import trimesh

    bandwidth = grids.check_bandwidth(
        "bandwidth", bandwidth, grids.S2_MAX_GRID_BANDWIDTH
    )
    _check_mesh(mesh, name)
    vertices = normalized_vertices(mesh, name)
    if rotation is not None:
        rotation = np.asarray(rotation, dtype=np.float64)
        if rotation.shape != (3,) or not np.all(np.isfinite(rotation)):
            raise ValueError(
                f"`rotation` must be 3 finite ZYZ Euler angles, received "
                f"{rotation!r}."
            )
        # v ↦ R v for rows: [V, 3] x [3, 3]ᵀ -> [V, 3]
        vertices = vertices @ rotation_matrices(rotation).T
    placed = trimesh.Trimesh(vertices, mesh.faces, process=False)
    hull = _convex_hull(placed, name)

    points = grid_points(bandwidth)  # [2b, 2b, 3]
    side = points.shape[0]
    flat = points.reshape(-1, 3)  # [P, 3]
    channels = [cast_rays(placed, flat), cast_rays(hull, flat)]
    # 2 x [P, 3] -> [P, 6] -> [2b, 2b, 6]
    signal = np.concatenate(channels, axis=-1).reshape(side, side, 6)
    return signal.astype(np.float32)


def meshes_to_signals(meshes, bandwidth: int, rotations=None, names=None):
    """`mesh_to_signal` over a list: float32 `[N, 2b, 2b, 6]`.

    Args:
      meshes: a sequence of `N` meshes.
      bandwidth: `b`, `1..256`.
      rotations: `None` or ZYZ Euler angles `[N, 3]`.
      names: `None` or `N` names for messages.

    Raises:
      ValueError: as `mesh_to_signal`, or `rotations` not of shape `(N, 3)`.
    """
    count = len(meshes)
    if rotations is not None:
        rotations = np.asarray(rotations, dtype=np.float64)
        if rotations.shape != (count, 3):
            raise ValueError(
                f"`rotations` must have shape {(count, 3)} (ZYZ Euler "
                f"angles, one row per mesh), received {rotations.shape}."
            )
    side = 2 * bandwidth
    signals = np.empty([count, side, side, 6], np.float32)
    for index, mesh in enumerate(meshes):
        signals[index] = mesh_to_signal(
            mesh,
            bandwidth,
            None if rotations is None else rotations[index],
            f"#{index}" if names is None else names[index],
        )
    return signals


def synthetic_mesh(class_name: str, rng):
    """One solid of a `CLASS_NAMES` class with random proportions.

    Args:
      class_name: one of `CLASS_NAMES`.
      rng: a `np.random.Generator` (or seed) for the proportions.

    Returns:
      A watertight `trimesh.Trimesh` in its canonical orientation.

    Raises:
      ValueError: for an unknown `class_name`.

    Example:
      >>> synthetic_mesh("torus", 0).is_watertight
      True
    """
    import trimesh

    rng = np.random.default_rng(rng)
    uniform = rng.uniform
    creation = trimesh.creation
    if class_name == "cube":
        return creation.box(uniform(0.8, 1.2, 3))
    if class_name == "rod":
        width = uniform(0.2, 0.35, 2)
        return creation.box([width[0], width[1], uniform(1.4, 2.0)])
    if class_name == "plate":
        side = uniform(0.9, 1.3, 2)
        return creation.box([side[0], side[1], uniform(0.08, 0.2)])
    if class_name == "cylinder":
        return creation.cylinder(
            uniform(0.4, 0.6), uniform(0.9, 1.3), sections=24
        )
    if class_name == "cone":
        return creation.cone(uniform(0.4, 0.6), uniform(0.9, 1.4), sections=24)
    if class_name == "torus":
        return creation.torus(
            uniform(0.7, 1.0),
            uniform(0.2, 0.35),
            major_sections=24,
            minor_sections=12,
        )
    if class_name == "capsule":
        return creation.capsule(
            height=uniform(0.8, 1.2), radius=uniform(0.25, 0.35), count=[8, 8]
        )
    raise ValueError(
        f"Unknown shape class {class_name!r}; expected one of "
        f"{', '.join(CLASS_NAMES)}."
    )


def synthetic_meshes(classes, meshes_per_class: int, seed=0):
    """`meshes_per_class` solids of each class, class by class.

    Returns:
      `(meshes, labels int32 [N])`, label `i` for `classes[i]`.
    """
    rng = np.random.default_rng(seed)
    meshes, labels = [], []
    for label, class_name in enumerate(classes):
        for _ in range(meshes_per_class):
            meshes.append(synthetic_mesh(class_name, rng))
            labels.append(label)
    return meshes, np.asarray(labels, np.int32)


def read_mesh_folder(folder: str):
    """Meshes from `<folder>/<class>/*.{obj,off,stl,ply}`.

    Returns:
      `(meshes, labels int32 [N], class_names, paths)`, classes sorted by
      name, files sorted within a class.

    Raises:
      ValueError: if `folder` is not a directory, holds fewer than 2
        class folders with mesh files, a class has fewer than 2 meshes
        (one to train on, one to test on), or a file cannot be read
        (`read_mesh`).
    """
    if not os.path.isdir(folder):
        raise ValueError(
            f"Mesh folder {folder} is not a directory; expected "
            f"<folder>/<class>/*.obj|off|stl|ply."
        )
    # Count the files of every class first: refuse before reading any.
    class_files = {}
    for class_name in sorted(os.listdir(folder)):
        class_dir = os.path.join(folder, class_name)
        if not os.path.isdir(class_dir):
            continue
        files = sorted(
            name
            for name in os.listdir(class_dir)
            if name.lower().endswith(MESH_EXTENSIONS)
            and os.path.isfile(os.path.join(class_dir, name))
        )
        if files:
            class_files[class_name] = files
    if not class_files:
        raise ValueError(
            f"Mesh folder {folder} holds no <class>/*.obj|off|stl|ply "
            f"files; expected one sub-folder of mesh files per class."
        )
    if len(class_files) < 2:
        (only,) = class_files
        raise ValueError(
            f"Mesh folder {folder}: one class found ({only!r}); "
            f"rotation-invariant classification needs at least 2 class "
            f"sub-folders of mesh files."
        )
    for class_name, files in class_files.items():
        if len(files) < 2:
            raise ValueError(
                f"Mesh folder {folder}: class {class_name!r} has "
                f"{len(files)} mesh; each class needs at least 2 (one for "
                f"training, one for testing)."
            )

    meshes, labels, class_names, paths = [], [], [], []
    for class_name, files in class_files.items():
        for name in files:
            path = os.path.join(folder, class_name, name)
            meshes.append(read_mesh(path))
            labels.append(len(class_names))
            paths.append(path)
        class_names.append(class_name)
    return meshes, np.asarray(labels, np.int32), class_names, paths


def _split(labels, test_fraction: float, seed: int):
    """Per class, `max(1, round(count · test_fraction))` test meshes."""
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = min(
            len(members) - 1, max(1, round(len(members) * test_fraction))
        )
        test.extend(rng.permutation(members)[:count].tolist())
    test = np.sort(np.asarray(test, np.int64))
    return np.setdiff1d(np.arange(len(labels)), test), test


def load_shapes(
    bandwidth: int,
    classes=CLASS_NAMES,
    meshes_per_class: int = 16,
    test_meshes_per_class: int = 8,
    seed: int = 0,
    source=None,
    sets=("train_NR", "train_R", "test_R"),
) -> dict:
    """Spherical signals of training and test meshes, rotated or not.

    With `source=None`, synthetic solids of `classes` (train and test
    meshes from independent streams of `seed`). With `source` a folder
    (`read_mesh_folder`), its meshes are split per class with
    `DEFAULT_TEST_FRACTION` (`classes` and the counts are then ignored).
    Rotated sets give each mesh one Haar-random rotation (train and test
    from independent streams, so the test rotations do not depend on
    which training sets are asked for).

    Args:
      bandwidth: `b`, `1..256`.
      classes: names among `CLASS_NAMES` (synthetic data only).
      meshes_per_class: training meshes per class, `>= 1`.
      test_meshes_per_class: test meshes per class, `>= 1`.
      seed: integer seed `>= 0`.
      source: `None` or a folder of meshes.
      sets: names among `"train_NR"`, `"train_R"`, `"test_NR"`,
        `"test_R"`.

    Returns:
      `{set name: (x float32 [N, 2b, 2b, 6], y int32 [N]),
      "class_names": list}`.

    Raises:
      ValueError: for a bad class, count, seed or set name, or a bad
        `source` (see `read_mesh_folder`).

    Example:
      >>> data = load_shapes(4, ("cube", "torus"), 2, 1)
      >>> data["train_R"][0].shape
      (4, 8, 8, 6)
    """
    known = ("train_NR", "train_R", "test_NR", "test_R")
    for name in sets:
        if name not in known:
            raise ValueError(
                f"Unknown set {name!r} in `sets`; expected names among {known}."
            )
    for name, value in (
        ("meshes_per_class", meshes_per_class),
        ("test_meshes_per_class", test_meshes_per_class),
        ("seed", seed),
    ):
        minimum = 0 if name == "seed" else 1
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            value = None
        if value is None or value < minimum:
            raise ValueError(f"`{name}` must be an integer >= {minimum}.")
    mesh_stream, train_stream, test_stream = np.random.SeedSequence(seed).spawn(
        3
    )

    # The meshes of each part: synthetic, or a folder split per class.
    if source is None:
        classes = list(classes)
        for class_name in classes:
            if class_name not in CLASS_NAMES:
                raise ValueError(
                    f"Unknown shape class {class_name!r}; expected names "
                    f"among {', '.join(CLASS_NAMES)}."
                )
        train_rng, test_rng = (
            np.random.default_rng(s) for s in mesh_stream.spawn(2)
        )
        parts = {
            "train": synthetic_meshes(classes, meshes_per_class, train_rng),
            "test": synthetic_meshes(classes, test_meshes_per_class, test_rng),
        }
        names = {part: None for part in parts}
        class_names = classes
    else:
        meshes, labels, class_names, paths = read_mesh_folder(source)
        train, test = _split(labels, DEFAULT_TEST_FRACTION, seed)
        parts, names = {}, {}
        for part, index in (("train", train), ("test", test)):
            parts[part] = ([meshes[i] for i in index], labels[index])
            names[part] = [paths[i] for i in index]

    data = {"class_names": list(class_names)}
    streams = {"train": train_stream, "test": test_stream}
    for name in sets:
        part, regime = name.split("_")
        meshes, labels = parts[part]
        rotations = None
        if regime == "R":
            rng = np.random.default_rng(streams[part])
            rotations = random_rotations(len(meshes), rng)
        x = meshes_to_signals(meshes, bandwidth, rotations, names[part])
        data[name] = (x, labels)
    return data
