"""Tests of `RetinalBlur` against NumPy references of Elsayed et al. (2018).

The references restate Appendix B independently of the layer's code: Eqs.
1-5 pixel by pixel with `math`, the Gaussian bank with a complex
`np.fft.fft2`, and Algorithm 1's interpolation with `np.interp`.
"""

import json
import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfcv.layers import RetinalBlur


def _images(*shape, seed=0, dtype=np.float32):
    return np.random.RandomState(seed).randn(*shape).astype(dtype)


def _cutoff_at(row, col, size, distance, width, alpha, beta):
    """Eqs. 1-5 at one pixel centre: (θ in radians, f in radians/pixel)."""
    pixel = width / size
    x = (col + 0.5 - size / 2) * pixel
    y = (row + 0.5 - size / 2) * pixel
    theta = math.atan(math.hypot(x, y) / distance)
    r_rad = min(alpha * theta, beta)
    r_m = distance * r_rad * (1 + math.tan(theta) ** 2)
    return theta, math.pi / (r_m / pixel)


def _lowpass(images, cutoff):
    """NumPy Gaussian low-pass of `[B, N, N, C]` images (Algorithm 1, 7-8)."""
    size = images.shape[1]
    frequencies = 2 * np.pi * np.fft.fftfreq(size)
    norm_squared = frequencies[:, None] ** 2 + frequencies[None, :] ** 2
    gain = np.exp(-norm_squared / cutoff**2)[None, :, :, None]
    spectrum = np.fft.fft2(images, axes=(1, 2))
    return np.real(np.fft.ifft2(spectrum * gain, axes=(1, 2)))


def _retinal_blur(images, bank, cutoff_map, margin):
    """NumPy Algorithm 1 with a given per-pixel cut-off map, then the crop."""
    outputs = np.zeros(images.shape, np.float64)
    for index, cutoff in enumerate(bank):
        one_hot = np.eye(len(bank))[index]
        # Hat function: linear in frequency, the ends held beyond the bank.
        weight = np.interp(cutoff_map, bank, one_hot)
        outputs += weight[None, :, :, None] * _lowpass(images, cutoff)
    size = images.shape[1]
    return outputs[:, margin : size - margin, margin : size - margin]


@pytest.mark.parametrize(
    "size, crop_fraction, kept",
    [(16, 0.9, 14), (32, 0.9, 28), (33, 0.9, 29), (16, 1.0, 16), (16, 0.5, 8)],
)
def test_output_shape_after_the_crop(size, crop_fraction, kept):
    layer = RetinalBlur(crop_fraction=crop_fraction)

    outputs = layer(_images(2, size, size, 3))

    assert outputs.shape == (2, kept, kept, 3)
    assert layer.compute_output_shape((None, size, size, 3)).as_list() == [
        None,
        kept,
        kept,
        3,
    ]


def test_constant_image_stays_constant():
    layer = RetinalBlur(alpha=0.3, beta=1.0)
    images = np.full((2, 32, 32, 3), 7.5, np.float32)

    outputs = layer(images).numpy()

    assert outputs.shape == (2, 28, 28, 3)
    np.testing.assert_allclose(outputs, 7.5, rtol=1e-5)


def test_cutoff_map_matches_eqs_1_to_5_at_a_few_pixels():
    settings = dict(distance=0.5, width=0.3, alpha=0.05, beta=0.004)
    layer = RetinalBlur(
        viewing_distance=settings["distance"],
        image_size=settings["width"],
        alpha=settings["alpha"],
        beta=settings["beta"],
    )

    layer.build((None, 31, 31, 1))

    # The centre (θ = 0, f = ∞), inner pixels, a corner where β caps Eq. 2.
    assert layer.eccentricity[15, 15] == 0.0
    assert math.isinf(layer.cutoff_map[15, 15])
    capped = False
    for row, col in [(15, 16), (3, 20), (0, 7), (30, 30), (0, 0)]:
        theta, cutoff = _cutoff_at(row, col, 31, **settings)
        capped |= settings["alpha"] * theta > settings["beta"]
        assert layer.eccentricity[row, col] == pytest.approx(theta, 1e-12)
        assert layer.cutoff_map[row, col] == pytest.approx(cutoff, 1e-12)
    assert capped


def test_default_bank_is_geometric_and_covers_the_kept_cutoffs():
    layer = RetinalBlur(alpha=0.1)

    layer.build((None, 64, 64, 3))

    bank = layer.resolved_cutoff_frequencies
    kept = layer.cutoff_map[3:61, 3:61]
    ratios = bank[1:] / bank[:-1]
    assert bank[0] == pytest.approx(kept.min())
    assert bank[-1] == pytest.approx(16 * math.pi)
    np.testing.assert_allclose(ratios, ratios[0])
    assert ratios[0] <= math.sqrt(2) + 1e-12


def test_single_cutoff_matches_numpy_fft_lowpass():
    images = _images(2, 24, 24, 3, dtype=np.float64)
    layer = RetinalBlur(
        cutoff_frequencies=[0.8], crop_fraction=1.0, dtype="float64"
    )

    outputs = layer(images).numpy()

    np.testing.assert_allclose(outputs, _lowpass(images, 0.8), atol=1e-12)


@pytest.mark.parametrize(
    "dtype, tolerance", [(np.float64, 1e-12), (np.float32, 2e-5)]
)
def test_interpolated_bank_matches_numpy_algorithm_1(dtype, tolerance):
    images = _images(2, 32, 32, 2, dtype=dtype)
    bank = [0.4, 0.9, 1.7, 3.0]
    layer = RetinalBlur(
        alpha=0.2, beta=0.05, cutoff_frequencies=bank, dtype=dtype
    )

    outputs = layer(images).numpy()

    expected = _retinal_blur(images, bank, layer.cutoff_map, margin=2)
    assert outputs.dtype == dtype
    np.testing.assert_allclose(outputs, expected, atol=tolerance)


def test_centre_keeps_the_highest_frequencies():
    # White noise: the output variance of a pixel is the energy its blur
    # lets through, so it must fall from the centre outwards.
    images = _images(16, 64, 64, 4)
    layer = RetinalBlur(alpha=0.05, beta=1.0)

    variance = np.var(layer(images).numpy(), axis=(0, 3))

    kept = variance.shape[0]
    centre = (kept - 1) / 2
    rows, cols = np.indices(variance.shape)
    radius = np.hypot(rows - centre, cols - centre)
    rings = [
        variance[(radius >= r) & (radius < r + 4)].mean()
        for r in (0, 8, 16, 24)
    ]
    assert rings[0] > 0.9
    assert all(inner > outer for inner, outer in zip(rings, rings[1:]))
    assert rings[-1] < 0.5 * rings[0]


def test_gradients_are_finite_and_nonzero_over_the_kept_region():
    images = tf.constant(_images(2, 32, 32, 3))
    upstream = tf.constant(_images(2, 28, 28, 3, seed=1))
    layer = RetinalBlur(alpha=0.3, beta=1.0)

    with tf.GradientTape() as tape:
        tape.watch(images)
        loss = tf.reduce_sum(layer(images) * upstream)
    gradient = tape.gradient(loss, images).numpy()

    assert np.all(np.isfinite(gradient))
    assert np.all(gradient[:, 2:30, 2:30] != 0.0)


def test_mixed_float16_policy_matches_float32():
    images = _images(2, 32, 32, 3)
    reference = RetinalBlur(alpha=0.3, beta=1.0)
    layer = RetinalBlur(
        alpha=0.3,
        beta=1.0,
        dtype=tf_keras.mixed_precision.Policy("mixed_float16"),
    )

    outputs = layer(images)

    assert layer.compute_dtype == "float16"
    assert outputs.dtype == tf.float16
    np.testing.assert_allclose(
        outputs.numpy().astype(np.float32),
        reference(images).numpy(),
        atol=1e-2,
        rtol=1e-2,
    )


def test_get_config_round_trips():
    layer = RetinalBlur(
        viewing_distance=0.5,
        image_size=0.2,
        alpha=0.1,
        beta=0.02,
        cutoff_frequencies=[0.5, 1.0, 2.0],
        crop_fraction=0.8,
        name="retina",
    )
    images = _images(2, 20, 20, 3)

    config = layer.get_config()
    restored = RetinalBlur.from_config(config)
    serialized = json.loads(json.dumps(tf_keras.layers.serialize(layer)))
    deserialized = tf_keras.layers.deserialize(serialized)

    assert restored.get_config() == config
    assert type(deserialized) is RetinalBlur
    assert deserialized.get_config() == config
    assert config["cutoff_frequencies"] == [0.5, 1.0, 2.0]
    np.testing.assert_array_equal(restored(images), layer(images))
    np.testing.assert_array_equal(deserialized(images), layer(images))


@pytest.mark.parametrize(
    "argument", ["viewing_distance", "image_size", "alpha", "beta"]
)
@pytest.mark.parametrize("value", [0.0, -0.5, float("nan"), float("inf"), True])
def test_rejects_non_positive_geometry(argument, value):
    with pytest.raises(ValueError, match=f"`{argument}` must be a finite"):
        RetinalBlur(**{argument: value})


@pytest.mark.parametrize(
    "bank, message",
    [
        ([], "must not be empty"),
        ([1.0, 0.5], "strictly increasing"),
        ([0.5, 0.5, 1.0], "strictly increasing"),
        ([0.0, 1.0], "must be a finite number > 0"),
        ([-1.0], "must be a finite number > 0"),
        ([0.5, float("inf")], "must be a finite number > 0"),
        (2.0, "sequence of numbers"),
        ("1,2", "sequence of numbers"),
    ],
)
def test_rejects_bad_cutoff_frequencies(bank, message):
    with pytest.raises(ValueError, match=message):
        RetinalBlur(cutoff_frequencies=bank)


@pytest.mark.parametrize("crop_fraction", [0.0, -0.1, 1.5, True, "0.9"])
def test_rejects_crop_fraction_outside_0_1(crop_fraction):
    with pytest.raises(
        ValueError, match=r"`crop_fraction` must be in \(0, 1\]"
    ):
        RetinalBlur(crop_fraction=crop_fraction)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((None, 16, 20, 3), "square images"),
        ((None, 3, 3, 3), "at least 4x4"),
        ((None, 16, 16), "expects images"),
        ((None, None, None, 3), "static height and width"),
    ],
)
def test_rejects_bad_input_shapes(shape, message):
    layer = RetinalBlur()

    with pytest.raises(ValueError, match=message):
        layer.build(shape)


@pytest.mark.parametrize("dtype", ["uint8", "int32", "int64"])
def test_rejects_integer_images_instead_of_truncating(dtype):
    layer = RetinalBlur(cutoff_frequencies=[0.8], crop_fraction=1.0)
    images = np.full([1, 8, 8, 1], 255, dtype)
    message = (
        f"RetinalBlur needs floating-point images, got dtype {dtype}; cast "
        r"them first, e.g. tf.cast\(images, tf.float32\).$"
    )

    for inputs in (images, tf.constant(images)):
        with pytest.raises(TypeError, match=message):
            layer(inputs)
    with pytest.raises(TypeError, match=message):
        layer(tf_keras.Input((8, 8, 1), dtype=dtype))
    # Cast to float, a constant image stays 255 (no truncation to 254).
    outputs = layer(tf.cast(images, tf.float32))
    np.testing.assert_allclose(outputs, 255.0, rtol=1e-6)
