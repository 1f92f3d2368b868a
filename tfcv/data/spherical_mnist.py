"""Spherical MNIST: digits projected onto the sphere, on the SOFT grid.

Spherical CNNs (Cohen, Geiger, Köhler & Welling, 2018, "Spherical CNNs",
arXiv:1801.10130), §5.2 ("Rotated MNIST on the sphere", Fig. 4, Table 1):
each digit is projected onto the northern hemisphere by stereographic
projection and sampled on the SOFT grid of bandwidth `b` (30 in the paper);
the rotated variant applies one random rotation per image,
`f ↦ f(R⁻¹ x)` (Eq. 1).

Geometry (all of it fixed here, so that every number is reproducible):

* Sphere point of the grid sample `(β_j, α_k)` (see `tfcv_ops.grids`):
  `x = Z(α) Y(β) n = (sin β cos α, sin β sin α, cos β)`, `n` the north pole.
* Stereographic projection from the south pole onto the plane `z = 0`
  (through the centre): `(X, Y) = (x, y) / (1 + z)`. The north pole goes to
  the origin, the equator to the unit circle, colatitude `β` to the radius
  `tan(β / 2)`; the northern hemisphere is the unit disk.
* The image is the square `[-e, e]²` of that plane, `e = extent`, centred on
  the origin; its column axis runs along `+X`, its rows run down `-Y`
  (row 0 at the top, `Y = +e`). Seen from outside the sphere above the north
  pole, with `+X` to the right and `+Y` up, the digit reads unmirrored.
* Default `e = 1/√2`: the largest centred square that stays on the northern
  hemisphere (its corners touch the equator), so no ink is cut off while the
  digit covers 77 % of the hemisphere's area; edge midpoints sit at
  `β = 70.5°`. With `e > 1/√2` the parts beyond the unit circle would fall on
  the southern hemisphere and are dropped (set to 0).
* Pixel `(i, j)` of an `S × S` image is the cell `[j, j + 1] × [i, i + 1]`
  in continuous image coordinates `(u, v)` (`u` rightwards, `v` downwards),
  its value sits at the centre `(j + 0.5, i + 0.5)`, and
  `X = e (2u / S - 1)`, `Y = e (1 - 2v / S)`. Inside the square the image is
  the bilinear interpolant of the pixel centres (held constant over the
  outer half pixel); outside the square and on the southern hemisphere
  (`z <= 0`) the signal is 0.

Shape letters: `N` images, `S` image side, `2b` grid side; spherical signals
are `[N, 2b, 2b]` with axes (β, α), as in `tfcv_ops`.

Deviations from the paper:
  The paper does not give the scale of the image on the plane; we use the
  square inscribed in the hemisphere's disk (see above). The default source
  is scikit-learn's 8×8 digits rather than MNIST (which is read from local
  IDX files when given).
"""

import gzip
import os

import numpy as np

from tfcv_ops import grids

DEFAULT_BANDWIDTH = 30
DEFAULT_EXTENT = float(np.sqrt(0.5))
DEFAULT_TEST_FRACTION = 0.2
SPLIT_SEED = 0
NUM_CLASSES = 10

# Images projected per step: bounds the temporary [chunk, 4b², 3] arrays.
_CHUNK = 512

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _check_images(images) -> np.ndarray:
    """Returns `images` as float64 `[N, S, S]`, or raises a ValueError."""
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(
            f"`images` must have shape (N, S, S) (square images), received "
            f"shape {images.shape}; stack grey-level images along axis 0."
        )
    if images.shape[1] < 1:
        raise ValueError(
            f"`images` must have a side S >= 1, received shape {images.shape}."
        )
    if not np.issubdtype(images.dtype, np.number) or np.issubdtype(
        images.dtype, np.complexfloating
    ):
        raise ValueError(
            f"`images` must hold real numbers, received dtype {images.dtype}."
        )
    images = images.astype(np.float64)
    if not np.all(np.isfinite(images)):
        raise ValueError("`images` must be finite, received NaN or inf.")
    return images


def _check_extent(extent) -> float:
    """Returns `extent` as a float if it is finite and positive."""
    if (
        isinstance(extent, (bool, np.bool_))
        or not isinstance(extent, (int, float, np.integer, np.floating))
        or not np.isfinite(extent)
        or extent <= 0
    ):
        raise ValueError(
            f"`extent` must be a finite number > 0 (half the side of the "
            f"image square in the projection plane), received {extent!r}."
        )
    return float(extent)


def rotation_matrices(angles) -> np.ndarray:
    """`R = Z(α) Y(β) Z(γ)` for ZYZ Euler angles `[..., 3]` -> `[..., 3, 3]`.

    Example:
      >>> rotation_matrices([0.0, 0.0, 0.0]).round(6).tolist()[0]
      [1.0, 0.0, 0.0]
    """
    angles = np.asarray(angles, dtype=np.float64)
    matrices = []
    for angle, axis in zip(np.moveaxis(angles, -1, 0), "zyz"):
        cos, sin = np.cos(angle), np.sin(angle)
        zero, one = np.zeros_like(angle), np.ones_like(angle)
        if axis == "z":
            rows = [[cos, -sin, zero], [sin, cos, zero], [zero, zero, one]]
        else:
            rows = [[cos, zero, sin], [zero, one, zero], [-sin, zero, cos]]
        # [3, 3, ...] -> [..., 3, 3]
        matrices.append(np.moveaxis(np.array(rows), (0, 1), (-2, -1)))
    return matrices[0] @ matrices[1] @ matrices[2]


def random_rotations(count: int, seed=0) -> np.ndarray:
    """ZYZ Euler angles of `count` rotations drawn from the Haar measure.

    Uniform on SO(3): `α, γ` uniform on `[0, 2π)` and `cos β` uniform on
    `[-1, 1]` (the density `sin β dβ / 2` of Appendix A).

    Args:
      count: number of rotations, an integer >= 0.
      seed: an integer seed or a `np.random.Generator`.

    Returns:
      float64 `[count, 3]`, columns `(α, β, γ)` in radians.

    Raises:
      ValueError: if `count` is not an integer >= 0.

    Example:
      >>> random_rotations(4, seed=1).shape
      (4, 3)
    """
    if (
        isinstance(count, (bool, np.bool_))
        or not isinstance(count, (int, np.integer))
        or count < 0
    ):
        raise ValueError(
            f"`count` must be an integer >= 0, received {count!r}."
        )
    rng = np.random.default_rng(seed)
    alpha = rng.uniform(0.0, 2.0 * np.pi, count)
    beta = np.arccos(rng.uniform(-1.0, 1.0, count))
    gamma = rng.uniform(0.0, 2.0 * np.pi, count)
    return np.stack([alpha, beta, gamma], axis=-1)


def grid_points(bandwidth: int) -> np.ndarray:
    """Unit vectors `Z(α) Y(β) n` of the SOFT S² grid: float64 `[2b, 2b, 3]`.

    Raises:
      ValueError: if `bandwidth` is not an integer in
        `1..tfcv_ops.grids.S2_MAX_GRID_BANDWIDTH`.

    Example:
      >>> grid_points(2).shape
      (4, 4, 3)
    """
    bandwidth = grids.check_bandwidth(
        "bandwidth", bandwidth, grids.S2_MAX_GRID_BANDWIDTH
    )
    beta, alpha = grids.s2_grid(bandwidth)
    beta, alpha = np.meshgrid(beta, alpha, indexing="ij")
    return np.stack(
        [
            np.sin(beta) * np.cos(alpha),
            np.sin(beta) * np.sin(alpha),
            np.cos(beta),
        ],
        axis=-1,
    )


def _sample(images: np.ndarray, points: np.ndarray, extent: float):
    """Images `[N, S, S]` at unit vectors `[N or 1, P, 3]` -> `[N, P]`."""
    size = images.shape[-1]
    x, y, z = np.moveaxis(points, -1, 0)

    # Stereographic projection from the south pole onto z = 0.
    north = z > 0
    denominator = np.where(north, 1.0 + z, 1.0)
    plane_x, plane_y = x / denominator, y / denominator

    # Plane -> continuous image coordinates (u right, v down), in pixels.
    u = size * (plane_x / extent + 1.0) / 2.0
    v = size * (1.0 - plane_y / extent) / 2.0
    inside = north & (u >= 0) & (u <= size) & (v >= 0) & (v <= size)

    # Bilinear weights between pixel centres, held constant at the border.
    column = np.clip(u - 0.5, 0.0, size - 1.0)
    row = np.clip(v - 0.5, 0.0, size - 1.0)
    left = np.minimum(np.floor(column).astype(np.int64), size - 1)
    top = np.minimum(np.floor(row).astype(np.int64), size - 1)
    right = np.minimum(left + 1, size - 1)
    bottom = np.minimum(top + 1, size - 1)
    column_weight, row_weight = column - left, row - top

    # Gather the four neighbours: [N, S * S] at [N or 1, P] -> [N, P].
    flat = images.reshape(len(images), size * size)
    batch = np.arange(len(images))[:, None]
    upper = (1.0 - column_weight) * flat[batch, top * size + left]
    upper += column_weight * flat[batch, top * size + right]
    lower = (1.0 - column_weight) * flat[batch, bottom * size + left]
    lower += column_weight * flat[batch, bottom * size + right]
    values = (1.0 - row_weight) * upper + row_weight * lower
    return np.where(inside, values, 0.0)


def image_on_sphere(images, points, extent: float = DEFAULT_EXTENT):
    """The projected images evaluated at arbitrary points of the sphere.

    The continuous spherical function that `project_to_sphere` samples.

    Args:
      images: `[N, S, S]` grey-level images (row 0 at the top).
      points: `[..., 3]` unit vectors, the same for every image.
      extent: half side `e` of the image square in the plane, > 0.

    Returns:
      float64 `[N, ...]`.

    Raises:
      ValueError: for images that are not `[N, S, S]` real finite arrays, a
        non-positive `extent`, or `points` without a last axis of 3.

    Example:
      >>> image_on_sphere(np.ones([1, 8, 8]), [0.0, 0.0, 1.0]).tolist()
      [1.0]
    """
    images = _check_images(images)
    extent = _check_extent(extent)
    points = np.asarray(points, dtype=np.float64)
    if points.ndim < 1 or points.shape[-1] != 3:
        raise ValueError(
            f"`points` must have shape (..., 3), received shape {points.shape}."
        )
    flat_points = points.reshape(1, -1, 3)  # [1, P, 3]
    values = _sample(images, flat_points, extent)  # [N, P]
    return values.reshape((len(images),) + points.shape[:-1])


def project_to_sphere(
    images,
    bandwidth: int = DEFAULT_BANDWIDTH,
    rotations=None,
    extent: float = DEFAULT_EXTENT,
) -> np.ndarray:
    """Projects images onto the northern hemisphere, sampled on the SOFT grid.

    The value at grid point `x(α_k, β_j)` is `f(R⁻¹ x)`, `f` the image on
    the sphere (module docstring) and `R` the image's rotation (identity
    when `rotations` is `None`), as in Eq. 1.

    Args:
      images: `[N, S, S]` grey-level images, row 0 at the top.
      bandwidth: `b`, an integer in `1..tfcv_ops.grids.S2_MAX_BANDWIDTH`
        (30 in §5.2).
      rotations: `None`, or ZYZ Euler angles `[N, 3]` (`α, β, γ` of
        `R = Z(α) Y(β) Z(γ)`), one rotation per image, e.g. from
        `random_rotations`.
      extent: half side `e` of the image square in the projection plane,
        > 0; default `1/√2` (corners on the equator).

    Returns:
      float32 `[N, 2b, 2b]` with axes (β, α).

    Raises:
      ValueError: if `images` is not a real finite `[N, S, S]` array, if
        `bandwidth` is not valid, if `rotations` is not a finite `[N, 3]`
        array, or if `extent` is not a finite number > 0.

    Example:
      >>> project_to_sphere(np.ones([2, 8, 8]), bandwidth=4).shape
      (2, 8, 8)
    """
    images = _check_images(images)
    extent = _check_extent(extent)
    points = grid_points(bandwidth)  # [2b, 2b, 3]
    side = points.shape[0]
    points = points.reshape(1, side * side, 3)  # [1, P, 3]
    if rotations is not None:
        rotations = np.asarray(rotations, dtype=np.float64)
        if rotations.shape != (len(images), 3):
            raise ValueError(
                f"`rotations` must have shape {(len(images), 3)} (ZYZ Euler "
                f"angles, one row per image), received shape "
                f"{rotations.shape}."
            )
        if not np.all(np.isfinite(rotations)):
            raise ValueError("`rotations` must be finite, received NaN/inf.")

    output = np.empty((len(images), side * side), np.float32)
    for start in range(0, len(images), _CHUNK):
        stop = min(start + _CHUNK, len(images))
        chunk_points = points
        if rotations is not None:
            # R⁻¹ x = Rᵀ x: [n, 3, 3] x [1, P, 3] -> [n, P, 3]
            matrices = rotation_matrices(rotations[start:stop])
            chunk_points = np.einsum("nji,pj->npi", matrices, points[0])
        output[start:stop] = _sample(images[start:stop], chunk_points, extent)
    return output.reshape(len(images), side, side)  # [N, P] -> [N, 2b, 2b]


def sphere_preview(signal, scale: int = 4) -> np.ndarray:
    """An equirectangular uint8 picture of one S² signal `[2b, 2b]`.

    Rows run from the north pole (top) to the south pole, columns over
    `α ∈ [0, 2π)`; values are scaled from their minimum (0) to their
    maximum (255) and each sample becomes a `scale × scale` block.

    Raises:
      ValueError: if `signal` is not 2-D or `scale` is not an integer >= 1.

    Example:
      >>> sphere_preview(np.zeros([8, 8]), scale=2).shape
      (16, 16)
    """
    signal = np.asarray(signal, dtype=np.float64)
    if signal.ndim != 2:
        raise ValueError(
            f"`signal` must have shape (2b, 2b), received {signal.shape}."
        )
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"`scale` must be an integer >= 1, got {scale!r}.")
    low, high = np.min(signal), np.max(signal)
    span = high - low if high > low else 1.0
    picture = np.round(255.0 * (signal - low) / span).astype(np.uint8)
    return np.kron(picture, np.ones((scale, scale), np.uint8))


def _open_idx(folder: str, key: str):
    """`(path, bytes)` of the IDX file `key` in `folder`, plain or gzip."""
    name = _IDX_FILES[key]
    for candidate in (name, name + ".gz"):
        path = os.path.join(folder, candidate)
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as handle:
            data = handle.read()
        if data[:2] == b"\x1f\x8b":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as error:
                raise ValueError(
                    f"MNIST file {path} is not a valid gzip file ({error}); "
                    f"expected the IDX file {name} or its gzip."
                ) from error
        return path, data
    raise ValueError(
        f"MNIST file {name} (or {name}.gz) not found in {folder}; expected "
        f"the four IDX files {sorted(_IDX_FILES.values())}."
    )


def _parse_idx(path: str, data: bytes, rank: int) -> np.ndarray:
    """Parses an unsigned-byte IDX array of the given rank."""
    expected = (
        f"an IDX file of unsigned bytes with {rank} dimension(s): magic "
        f"0x0000080{rank}, then {rank} big-endian int32 sizes, then the data"
    )
    header = 4 + 4 * rank
    if len(data) < header or data[:4] != bytes([0, 0, 8, rank]):
        raise ValueError(
            f"MNIST file {path} has the wrong header (first bytes "
            f"{data[:4].hex() or 'none'}); expected {expected}."
        )
    shape = tuple(int(s) for s in np.frombuffer(data[4:header], ">i4"))
    if len(data) - header != int(np.prod(shape)):
        raise ValueError(
            f"MNIST file {path} holds {len(data) - header} data bytes but "
            f"its header gives shape {shape} ({int(np.prod(shape))} bytes); "
            f"the file is truncated or corrupt, expected {expected}."
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def read_mnist_idx(folder: str, subset: str):
    """Reads MNIST's `"train"` or `"test"` IDX files from a local folder.

    Args:
      folder: directory holding `train-images-idx3-ubyte`,
        `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
        `t10k-labels-idx1-ubyte` (each optionally with `.gz`).
      subset: `"train"` or `"test"`.

    Returns:
      `(images [N, S, S] float64 in [0, 1], labels [N] int32)`.

    Raises:
      ValueError: if `folder` is not a directory, `subset` is unknown, a
        file is missing, not gzip when it says so, has a wrong header or
        size, images are not square, the counts differ or a label is not
        in `0..9`.

    Example:
      >>> folder = "/data/mnist"  # a local folder with the four files
      >>> images, labels = read_mnist_idx(folder, "test")  # doctest: +SKIP
    """
    if not isinstance(folder, (str, os.PathLike)) or not os.path.isdir(folder):
        raise ValueError(
            f"`source` must be a directory holding the MNIST IDX files, "
            f"received {folder!r}."
        )
    if subset not in ("train", "test"):
        raise ValueError(
            f"`subset` must be 'train' or 'test', received {subset!r}."
        )
    path, data = _open_idx(folder, subset + "_images")
    images = _parse_idx(path, data, 3)
    if images.shape[1] != images.shape[2]:
        raise ValueError(
            f"MNIST file {path} holds images of shape {images.shape[1:]}; "
            f"expected square images."
        )
    label_path, data = _open_idx(folder, subset + "_labels")
    labels = _parse_idx(label_path, data, 1)
    if len(labels) != len(images):
        raise ValueError(
            f"MNIST files {path} and {label_path} hold {len(images)} images "
            f"but {len(labels)} labels; expected the same count."
        )
    if np.any(labels >= NUM_CLASSES):
        raise ValueError(
            f"MNIST file {label_path} holds labels up to {labels.max()}; "
            f"expected digits 0..9."
        )
    return images / 255.0, labels.astype(np.int32)


def _stratified_split(labels: np.ndarray, test_fraction: float):
    """Per class, `round(count * test_fraction)` test images (seed 0)."""
    rng = np.random.RandomState(SPLIT_SEED)
    test = []
    for label in range(NUM_CLASSES):
        members = np.flatnonzero(labels == label)
        count = int(round(len(members) * test_fraction))
        test.extend(rng.permutation(members)[:count].tolist())
    test = np.sort(np.asarray(test, dtype=np.int64))
    return np.setdiff1d(np.arange(len(labels)), test), test


def load_spherical_digits(
    bandwidth: int = DEFAULT_BANDWIDTH,
    rotated_train: bool = False,
    rotated_test: bool = False,
    seed: int = 0,
    test_fraction=None,
    source=None,
):
    """Spherical MNIST (§5.2) from scikit-learn's digits or local MNIST.

    With `source=None` the 1,797 embedded 8×8 digits (grey levels 0..16
    scaled to [0, 1]) are split per class with seed 0: with the default
    `test_fraction` of 0.2 the test images are exactly the `"heldout"`
    split of `tfcv.data.load_digits`. With `source` a folder, MNIST's own
    train and test IDX files are read (pixels / 255). Rotations (one per
    image, Haar-random) come from `seed` through two independent streams,
    so the test rotations do not depend on `rotated_train`. Nothing is
    cached on disk.

    Args:
      bandwidth: `b` of the SOFT grid, 30 in the paper.
      rotated_train: rotate each training image randomly ("R" in Table 1).
      rotated_test: rotate each test image randomly.
      seed: integer seed of the rotations; the split does not depend on it.
      test_fraction: share of each class held out, in (0, 1); default 0.2.
        Only for the digits (MNIST has its own test set).
      source: `None` (scikit-learn digits) or a folder with MNIST IDX files.

    Returns:
      `(x_train [N, 2b, 2b, 1] float32, y_train [N] int32, x_test
      [M, 2b, 2b, 1] float32, y_test [M] int32)`.

    Raises:
      ValueError: for a bad `bandwidth`, `seed` or `test_fraction`,
        `test_fraction` given with `source`, a `source` that is not a
        folder, or a missing or corrupt IDX file (see `read_mnist_idx`).

    Example:
      >>> x_train, y_train, x_test, y_test = load_spherical_digits(8)
      >>> x_train.shape, x_test.shape
      ((1438, 16, 16, 1), (359, 16, 16, 1))
    """
    bandwidth = grids.check_bandwidth(
        "bandwidth", bandwidth, grids.S2_MAX_BANDWIDTH
    )
    if (
        isinstance(seed, (bool, np.bool_))
        or not isinstance(seed, (int, np.integer))
        or seed < 0
    ):
        raise ValueError(f"`seed` must be an integer >= 0, received {seed!r}.")
    if source is not None and test_fraction is not None:
        raise ValueError(
            f"`test_fraction` applies to the digits only, received "
            f"{test_fraction!r} with `source`={source!r}; MNIST keeps its "
            f"own test set, leave `test_fraction=None`."
        )
    if source is None:
        if test_fraction is None:
            test_fraction = DEFAULT_TEST_FRACTION
        if (
            isinstance(test_fraction, bool)
            or not isinstance(test_fraction, (int, float))
            or not 0.0 < test_fraction < 1.0
        ):
            raise ValueError(
                f"`test_fraction` must be a number in (0, 1), received "
                f"{test_fraction!r}."
            )
        from sklearn.datasets import load_digits as sklearn_load_digits

        bunch = sklearn_load_digits()
        images = bunch.images / 16.0
        labels = bunch.target.astype(np.int32)
        train, test = _stratified_split(labels, test_fraction)
        train_images, train_labels = images[train], labels[train]
        test_images, test_labels = images[test], labels[test]
    else:
        train_images, train_labels = read_mnist_idx(source, "train")
        test_images, test_labels = read_mnist_idx(source, "test")

    # Two independent rotation streams: train, then test.
    train_stream, test_stream = np.random.SeedSequence(seed).spawn(2)
    arrays = []
    for images, rotated, stream in (
        (train_images, rotated_train, train_stream),
        (test_images, rotated_test, test_stream),
    ):
        rotations = None
        if rotated:
            rng = np.random.default_rng(stream)
            rotations = random_rotations(len(images), rng)
        signal = project_to_sphere(images, bandwidth, rotations)
        arrays.append(signal[..., None])  # [N, 2b, 2b] -> [N, 2b, 2b, 1]
    return arrays[0], train_labels, arrays[1], test_labels
