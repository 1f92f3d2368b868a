"""Spherical MNIST: projection geometry, interpolation, rotations, IDX files."""

import gzip
import os

import numpy as np
import pytest
from scipy import stats
from scipy.ndimage import map_coordinates
from scipy.spatial.transform import Rotation

from tfcv.data import load_digits
from tfcv.data import spherical_mnist as sm

EXTENT = sm.DEFAULT_EXTENT


def _plane_to_sphere(plane_x, plane_y):
    """Inverse stereographic projection from the south pole: `[..., 3]`."""
    radius2 = plane_x**2 + plane_y**2
    return np.stack([2 * plane_x, 2 * plane_y, 1 - radius2], axis=-1) / (
        1 + radius2[..., None]
    )


def _reference_sample(image, points, extent=EXTENT):
    """Oracle: stereographic projection, then scipy's bilinear sampling."""
    size = image.shape[0]
    x, y, z = np.moveaxis(points, -1, 0)
    plane_x, plane_y = x / (1 + z), y / (1 + z)
    u = size * (plane_x / extent + 1) / 2  # column axis, rightwards
    v = size * (1 - plane_y / extent) / 2  # row axis, downwards
    values = map_coordinates(image, [v - 0.5, u - 0.5], order=1, mode="nearest")
    inside = (z > 0) & (u >= 0) & (u <= size) & (v >= 0) & (v <= size)
    return np.where(inside, values, 0.0)


def _grid_angles(bandwidth):
    beta = np.pi * (2 * np.arange(2 * bandwidth) + 1) / (4 * bandwidth)
    alpha = np.pi * np.arange(2 * bandwidth) / bandwidth
    return np.meshgrid(beta, alpha, indexing="ij")


@pytest.mark.parametrize("pixel", [(1, 6), (6, 1), (0, 0), (3, 4)])
def test_bright_pixel_lands_where_geometry_predicts(pixel):
    row, column = pixel
    image = np.zeros([1, 8, 8])
    image[0, row, column] = 1.0

    # Pixel centre -> plane (x right = column, y up = row decreasing).
    plane_x = EXTENT * (2 * (column + 0.5) / 8 - 1)
    plane_y = EXTENT * (1 - 2 * (row + 0.5) / 8)
    point = _plane_to_sphere(np.array(plane_x), np.array(plane_y))
    neighbours = [
        _plane_to_sphere(
            np.array(plane_x + dx * 2 * EXTENT / 8),
            np.array(plane_y + dy * 2 * EXTENT / 8),
        )
        for dx, dy in [(1, 0), (-1, 0), (0, 1), (0, -1)]
    ]
    signal = sm.project_to_sphere(image, bandwidth=30)[0]

    assert sm.image_on_sphere(image, point)[0] == pytest.approx(1.0)
    for neighbour in neighbours:
        assert abs(sm.image_on_sphere(image, neighbour)[0]) < 1e-12
    assert np.sign(point[0]) == np.sign(column - 3.5)
    assert np.sign(point[1]) == np.sign(3.5 - row)
    beta, alpha = _grid_angles(30)
    j, k = np.unravel_index(np.argmax(signal), signal.shape)
    brightest = sm.grid_points(30)[j, k]
    assert np.arccos(np.clip(brightest @ point, -1, 1)) < np.pi / 30
    assert np.all(signal[beta > np.pi / 2] == 0)


def test_top_right_pixel_lies_in_the_first_quadrant_of_longitude():
    image = np.zeros([1, 8, 8])
    image[0, 0, 7] = 1.0

    signal = sm.project_to_sphere(image, bandwidth=16)[0]

    beta, alpha = _grid_angles(16)
    lit = signal > 0
    assert np.all((alpha[lit] > 0) & (alpha[lit] < np.pi / 2))
    assert np.all(beta[lit] > np.pi / 4)


def test_pixel_centres_give_the_pixel_values_exactly():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=[2, 8, 8])
    centres = (np.arange(8) + 0.5) / 8
    plane_y, plane_x = np.meshgrid(
        EXTENT * (1 - 2 * centres), EXTENT * (2 * centres - 1), indexing="ij"
    )

    values = sm.image_on_sphere(images, _plane_to_sphere(plane_x, plane_y))

    np.testing.assert_allclose(values, images, atol=1e-12)


@pytest.mark.parametrize("size", [1, 7, 28])
def test_bilinear_matches_scipy_map_coordinates(size):
    rng = np.random.default_rng(size)
    images = rng.uniform(size=[3, size, size])
    plane = rng.uniform(-1.1 * EXTENT, 1.1 * EXTENT, size=[2, 500])
    points = _plane_to_sphere(plane[0], plane[1])

    values = sm.image_on_sphere(images, points)

    for image, actual in zip(images, values):
        expected = _reference_sample(image, points)
        np.testing.assert_allclose(actual, expected, atol=1e-12)
    assert np.any(values == 0) and np.any(values != 0)


@pytest.mark.parametrize("extent", [EXTENT, 1.5])
def test_constant_image_is_constant_on_the_cap_and_zero_in_the_south(extent):
    bandwidth = 12
    images = np.full([1, 8, 8], 0.75)
    beta, alpha = _grid_angles(bandwidth)
    radius = np.tan(beta / 2)
    plane_x, plane_y = radius * np.cos(alpha), radius * np.sin(alpha)
    covered = (
        (beta < np.pi / 2)
        & (np.abs(plane_x) <= extent)
        & (np.abs(plane_y) <= extent)
    )

    signal = sm.project_to_sphere(images, bandwidth, extent=extent)[0]

    np.testing.assert_allclose(signal[covered], 0.75, rtol=1e-6)
    assert np.all(signal[~covered] == 0)
    assert np.all(signal[beta > np.pi / 2] == 0)
    assert covered.sum() > bandwidth**2
    if extent > 1:
        assert np.array_equal(covered, beta < np.pi / 2)


def test_rotated_projection_samples_the_image_at_inverse_rotated_points():
    rng = np.random.default_rng(3)
    images = rng.uniform(size=[3, 8, 8])
    angles = sm.random_rotations(3, seed=5)
    points = sm.grid_points(10)  # [2b, 2b, 3]

    signal = sm.project_to_sphere(images, 10, rotations=angles)

    for image, rotation, actual in zip(images, angles, signal):
        matrix = Rotation.from_euler("ZYZ", rotation).as_matrix()
        moved = points @ matrix  # rows xᵀ R = (R⁻¹ x)ᵀ
        expected = _reference_sample(image, moved)
        np.testing.assert_allclose(actual, expected, atol=1e-6)


def test_rotation_about_z_by_grid_steps_rolls_the_longitude_axis():
    bandwidth, steps = 8, 3
    rng = np.random.default_rng(4)
    images = rng.uniform(size=[1, 8, 8])
    angles = np.array([[steps * np.pi / bandwidth, 0.0, 0.0]])

    plain = sm.project_to_sphere(images, bandwidth)
    rotated = sm.project_to_sphere(images, bandwidth, rotations=angles)

    np.testing.assert_allclose(
        rotated, np.roll(plain, steps, axis=2), atol=1e-6
    )


def test_half_turn_about_y_moves_the_digit_to_the_south():
    bandwidth = 8
    rng = np.random.default_rng(6)
    images = rng.uniform(size=[1, 8, 8])

    plain = sm.project_to_sphere(images, bandwidth)[0]
    flipped = sm.project_to_sphere(
        images, bandwidth, rotations=[[0.0, np.pi, 0.0]]
    )[0]

    # Y(π)⁻¹ (α, β) = (π - α, π - β): index j -> 2b-1-j, k -> (b - k) mod 2b.
    rows = 2 * bandwidth - 1 - np.arange(2 * bandwidth)
    columns = (bandwidth - np.arange(2 * bandwidth)) % (2 * bandwidth)
    np.testing.assert_allclose(flipped, plain[rows][:, columns], atol=1e-6)


def test_rotation_matrices_are_zyz_rotations():
    angles = sm.random_rotations(20, seed=1)

    matrices = sm.rotation_matrices(angles)

    expected = Rotation.from_euler("ZYZ", angles).as_matrix()
    np.testing.assert_allclose(matrices, expected, atol=1e-12)


def test_random_rotations_are_haar_uniform():
    angles = sm.random_rotations(20000, seed=7)
    matrices = sm.rotation_matrices(angles)

    cos_beta = np.cos(angles[:, 1])
    moved_x = matrices[:, :, 0]  # R e_x, uniform on S² under Haar

    assert abs(cos_beta.mean()) < 0.02
    assert stats.kstest(cos_beta, "uniform", args=(-1, 2)).pvalue > 1e-3
    for column in (0, 2):
        ks = stats.kstest(angles[:, column], "uniform", args=(0, 2 * np.pi))
        assert ks.pvalue > 1e-3
    assert stats.kstest(moved_x[:, 2], "uniform", args=(-1, 2)).pvalue > 1e-3
    assert np.abs(matrices.mean(axis=0)).max() < 0.02


def test_random_rotations_are_deterministic_per_seed():
    first = sm.random_rotations(5, seed=3)

    second = sm.random_rotations(5, seed=3)
    other = sm.random_rotations(5, seed=4)
    from_generator = sm.random_rotations(5, np.random.default_rng(3))

    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, from_generator)
    assert not np.allclose(first, other)
    assert sm.random_rotations(0).shape == (0, 3)


@pytest.mark.parametrize("count", [-1, 2.5, True])
def test_random_rotations_rejects_a_bad_count(count):
    with pytest.raises(ValueError, match="`count` must be an integer"):
        sm.random_rotations(count)


def test_loader_shapes_dtypes_and_split():
    x_train, y_train, x_test, y_test = sm.load_spherical_digits(bandwidth=8)

    assert x_train.shape == (1438, 16, 16, 1)
    assert x_test.shape == (359, 16, 16, 1)
    assert x_train.dtype == x_test.dtype == np.float32
    assert y_train.dtype == y_test.dtype == np.int32
    np.testing.assert_array_equal(y_test, load_digits("heldout")[1])
    np.testing.assert_array_equal(y_train, load_digits("train")[1])
    assert 0 <= x_train.min() and x_train.max() <= 1
    assert np.all(x_train[:, 8:] == 0)  # southern hemisphere

    halves = sm.load_spherical_digits(bandwidth=2, test_fraction=0.5)
    assert abs(len(halves[0]) - len(halves[2])) <= 10


def test_loader_rotations_are_deterministic_and_independent():
    base = sm.load_spherical_digits(4, True, True, seed=1)
    again = sm.load_spherical_digits(4, True, True, seed=1)
    other = sm.load_spherical_digits(4, True, True, seed=2)
    test_only = sm.load_spherical_digits(4, False, True, seed=1)
    plain = sm.load_spherical_digits(4)

    for first, second in zip(base, again):
        np.testing.assert_array_equal(first, second)
    assert not np.array_equal(base[0], other[0])
    np.testing.assert_array_equal(test_only[2], base[2])
    np.testing.assert_array_equal(test_only[0], plain[0])
    assert not np.array_equal(base[0], plain[0])
    assert np.any(base[0][:, 4:] != 0)  # rotated digits reach the south


def _write_idx(path, array, magic_rank=None, compress=False):
    array = np.asarray(array, np.uint8)
    rank = array.ndim if magic_rank is None else magic_rank
    header = bytes([0, 0, 8, rank]) + np.asarray(array.shape, ">i4").tobytes()
    data = header + array.tobytes()
    if compress:
        data = gzip.compress(data)
        path += ".gz"
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def _write_mnist(folder, train_count=6, test_count=4, size=5):
    rng = np.random.default_rng(0)
    files = {}
    for subset, count, compress in (
        ("train", train_count, False),
        ("t10k", test_count, True),
    ):
        images = rng.integers(0, 256, size=[count, size, size])
        labels = rng.integers(0, 10, size=[count])
        files[subset] = (images, labels)
        _write_idx(
            os.path.join(folder, f"{subset}-images-idx3-ubyte"),
            images,
            compress=compress,
        )
        _write_idx(
            os.path.join(folder, f"{subset}-labels-idx1-ubyte"),
            labels,
            compress=compress,
        )
    return files


def test_idx_reader_reads_plain_and_gzip_files(tmp_path):
    files = _write_mnist(str(tmp_path))

    train_images, train_labels = sm.read_mnist_idx(str(tmp_path), "train")
    test_images, test_labels = sm.read_mnist_idx(tmp_path, "test")
    x_train, y_train, x_test, y_test = sm.load_spherical_digits(
        bandwidth=4, source=str(tmp_path)
    )

    np.testing.assert_allclose(train_images, files["train"][0] / 255.0)
    np.testing.assert_array_equal(train_labels, files["train"][1])
    np.testing.assert_allclose(test_images, files["t10k"][0] / 255.0)
    np.testing.assert_array_equal(test_labels, files["t10k"][1])
    assert x_train.shape == (6, 8, 8, 1) and x_test.shape == (4, 8, 8, 1)
    assert y_train.dtype == np.int32 and x_test.dtype == np.float32
    np.testing.assert_allclose(
        x_test[..., 0],
        sm.project_to_sphere(files["t10k"][0] / 255.0, 4),
        atol=1e-7,
    )


def _corrupt(folder, kind):
    path = os.path.join(folder, "train-images-idx3-ubyte")
    labels = os.path.join(folder, "train-labels-idx1-ubyte")
    if kind == "missing":
        os.remove(path)
    elif kind == "magic":
        _write_idx(path, np.zeros([6, 5, 5]), magic_rank=2)
    elif kind == "truncated":
        with open(path, "r+b") as handle:
            handle.truncate(os.path.getsize(path) - 3)
    elif kind == "gzip":
        os.remove(path)
        with open(path + ".gz", "wb") as handle:
            handle.write(b"\x1f\x8b" + b"not really gzip")
    elif kind == "count":
        _write_idx(labels, np.zeros([5]))
    elif kind == "label":
        _write_idx(labels, np.full([6], 10))
    elif kind == "square":
        _write_idx(path, np.zeros([6, 5, 4]))


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "train-images-idx3-ubyte .or .*not found"),
        ("magic", "wrong header.*magic 0x00000803"),
        ("truncated", "truncated or corrupt"),
        ("gzip", "not a valid gzip file"),
        ("count", "6 images but 5 labels"),
        ("label", "labels up to 10; expected digits 0..9"),
        ("square", "expected square images"),
    ],
)
def test_idx_reader_names_the_bad_file(tmp_path, kind, message):
    _write_mnist(str(tmp_path))
    _corrupt(str(tmp_path), kind)

    with pytest.raises(ValueError, match=message):
        sm.load_spherical_digits(bandwidth=2, source=str(tmp_path))


def test_idx_reader_rejects_bad_folder_and_subset(tmp_path):
    with pytest.raises(ValueError, match="must be a directory"):
        sm.read_mnist_idx(str(tmp_path / "absent"), "train")
    with pytest.raises(ValueError, match="`subset` must be 'train'"):
        sm.read_mnist_idx(str(tmp_path), "validation")
    with pytest.raises(ValueError, match="applies to the digits only"):
        sm.load_spherical_digits(source=str(tmp_path), test_fraction=0.2)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"bandwidth": 0}, "`bandwidth` must be a positive integer"),
        ({"bandwidth": 2.0}, "`bandwidth` must be a positive integer"),
        ({"bandwidth": 65}, "`bandwidth` must be at most 64"),
        ({"test_fraction": 0}, "`test_fraction` must be a number in"),
        ({"test_fraction": 1.0}, "`test_fraction` must be a number in"),
        ({"test_fraction": True}, "`test_fraction` must be a number in"),
        ({"seed": -1}, "`seed` must be an integer >= 0"),
        ({"seed": 1.5}, "`seed` must be an integer >= 0"),
    ],
)
def test_loader_rejects_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        sm.load_spherical_digits(**arguments)


@pytest.mark.parametrize(
    "images, arguments, message",
    [
        (np.zeros([8, 8]), {}, r"shape \(N, S, S\)"),
        (np.zeros([2, 8, 6]), {}, r"shape \(N, S, S\)"),
        (np.zeros([2, 0, 0]), {}, "side S >= 1"),
        (np.zeros([1, 4, 4], complex), {}, "real numbers"),
        (np.full([1, 4, 4], np.nan), {}, "must be finite"),
        (np.zeros([1, 4, 4]), {"extent": 0.0}, "`extent` must be"),
        (np.zeros([1, 4, 4]), {"extent": np.inf}, "`extent` must be"),
        (np.zeros([1, 4, 4]), {"extent": True}, "`extent` must be"),
        (np.zeros([1, 4, 4]), {"bandwidth": -3}, "`bandwidth` must be"),
        (np.zeros([2, 4, 4]), {"rotations": np.zeros([3])}, r"\(2, 3\)"),
        (
            np.zeros([1, 4, 4]),
            {"rotations": [[0.0, np.nan, 0.0]]},
            "`rotations` must be finite",
        ),
    ],
)
def test_projection_rejects_bad_input(images, arguments, message):
    with pytest.raises(ValueError, match=message):
        sm.project_to_sphere(images, **arguments)


def test_image_on_sphere_rejects_points_without_three_coordinates():
    with pytest.raises(ValueError, match=r"`points` must have shape"):
        sm.image_on_sphere(np.zeros([1, 4, 4]), np.zeros([5, 2]))


def test_sphere_preview_scales_to_uint8():
    signal = sm.project_to_sphere(np.ones([1, 8, 8]), bandwidth=4)[0]

    picture = sm.sphere_preview(signal, scale=3)

    assert picture.shape == (24, 24) and picture.dtype == np.uint8
    assert picture.min() == 0 and picture.max() == 255
    assert sm.sphere_preview(np.zeros([4, 4])).max() == 0
    with pytest.raises(ValueError, match="`signal` must have shape"):
        sm.sphere_preview(np.zeros([1, 4, 4]))
    with pytest.raises(ValueError, match="`scale` must be an integer"):
        sm.sphere_preview(signal, scale=0)
