"""Tests of the Spherical CNN layers against brute-force references.

Oracles: Eq. 4 / Eq. 6 with point-mass filters reduce to sums of the input
at rotated points, `Σ_c Σ_p w f_c(R x_p)` and `Σ_c Σ_p w f_c(R R_p)`; we
evaluate them from the input's spectrum (Eq. 9) at rotations composed as
3×3 matrices, independently of the layers' spectral path.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tfcv_ops
from tfcv.layers import S2Convolution
from tfcv.layers import SO3BatchNormalization
from tfcv.layers import SO3Convolution
from tfcv.layers import SO3GlobalMaxPool
from tfcv.layers import SO3Integrate
from tfcv.layers import SO3ResidualBlock
from tfcv.layers.spherical import kernel_grids


def _rotation(alpha, beta, gamma):
    """Z(α) Y(β) Z(γ) as matrices `[..., 3, 3]`."""

    def turn(angle, i, j):
        matrix = np.zeros(np.shape(angle) + (3, 3))
        matrix[..., i, i] = matrix[..., j, j] = np.cos(angle)
        matrix[..., i, j], matrix[..., j, i] = -np.sin(angle), np.sin(angle)
        matrix[..., 3 - i - j, 3 - i - j] = 1.0
        return matrix

    return turn(alpha, 0, 1) @ turn(beta, 2, 0) @ turn(gamma, 0, 1)


def _euler(matrix):
    """ZYZ angles (α, β, γ) of rotation matrices; γ = 0 at the poles."""
    sine = np.hypot(matrix[..., 0, 2], matrix[..., 1, 2])
    beta = np.arctan2(sine, matrix[..., 2, 2])
    alpha = np.arctan2(matrix[..., 1, 2], matrix[..., 0, 2])
    gamma = np.arctan2(matrix[..., 2, 1], -matrix[..., 2, 0])

    # At β = 0 or π only α ± γ is defined: read it from the first column.
    sign = np.where(matrix[..., 2, 2] > 0, 1.0, -1.0)
    pole_alpha = np.arctan2(sign * matrix[..., 1, 0], sign * matrix[..., 0, 0])
    pole = sine < 1e-9
    return np.where(pole, pole_alpha, alpha), beta, np.where(pole, 0.0, gamma)


def _so3_evaluate(spectrum, alpha, beta, gamma):
    """Eq. 9 at rotations: Σ_l (2l+1) Σ_mn f̂^l_mn D^l_mn, spectrum `[P]`."""
    b = round((0.75 * spectrum.shape[-1]) ** (1 / 3))
    small_d = tfcv_ops.wigner_d_matrix(b - 1, beta.ravel()).numpy()  # [K, P]
    l, m, n = [], [], []
    for degree in range(b):
        orders = np.arange(-degree, degree + 1)
        l += [degree] * len(orders) ** 2
        m += list(np.repeat(orders, len(orders)))
        n += list(np.tile(orders, len(orders)))
    l, m, n = map(np.array, (l, m, n))
    phase = np.outer(alpha.ravel(), m) + np.outer(gamma.ravel(), n)
    big_d = small_d * np.exp(-1j * phase)  # [K, P]
    values = big_d @ ((2 * l + 1) * spectrum)
    return values.real.reshape(beta.shape)


def _s2_as_so3(spectrum):
    """An S² spectrum `[b²]` as the SO(3) spectrum with only n = 0."""
    b = round(math.sqrt(spectrum.shape[-1]))
    blocks = []
    for l in range(b):
        block = np.zeros([2 * l + 1, 2 * l + 1], complex)
        block[:, l] = spectrum[l * l : (l + 1) ** 2]
        blocks.append(block.ravel())
    return np.concatenate(blocks)


def _so3_mesh_rotations(b):
    beta, alpha, gamma = tfcv_ops.so3_grid(b)
    mesh = np.meshgrid(beta, alpha, gamma, indexing="ij")  # (β, α, γ)
    return _rotation(mesh[1], mesh[0], mesh[2])  # [2b, 2b, 2b, 3, 3]


def _band_limited(shape, b, seed, so3=False):
    """Real unit-variance signals of degrees `l < b`, `[B, C, grid...]`."""
    noise = np.random.default_rng(seed).normal(size=shape)
    forward, inverse = (
        (tfcv_ops.so3_fft, tfcv_ops.so3_ifft)
        if so3
        else (tfcv_ops.s2_fft, tfcv_ops.s2_ifft)
    )
    side = shape[-1] // 2
    signal = inverse(forward(noise, b), side, real_output=True).numpy()
    return signal / signal.std()


@pytest.mark.parametrize("bandwidth_out", [4, 3])
def test_s2_convolution_matches_point_sum(bandwidth_out):
    b, channels, filters = 4, 2, 3
    signal = np.random.default_rng(0).normal(size=(1, channels, 2 * b, 2 * b))
    layer = S2Convolution(filters, b, bandwidth_out, dtype="float64")
    inputs = np.moveaxis(signal, 1, -1)  # [B, C, 2b, 2b] -> [B, 2b, 2b, C]

    outputs = layer(inputs).numpy()[0]

    grid = np.array(layer.kernel_grid)  # (β, α)
    point_rotations = _rotation(grid[:, 1], grid[:, 0], 0 * grid[:, 0])
    rotations = _so3_mesh_rotations(bandwidth_out)[..., None, :, :]
    angles = _euler(rotations @ point_rotations)  # R x_p: [.., N]
    spectrum = tfcv_ops.s2_fft(signal[0], bandwidth_out).numpy()
    values = [_so3_evaluate(_s2_as_so3(s), *angles) for s in spectrum]
    expected = np.einsum(
        "c...p,cop->...o", values, layer.kernel.numpy() * layer.kernel_scale
    )
    np.testing.assert_allclose(outputs, expected, atol=1e-9)


@pytest.mark.parametrize("bandwidth_out", [4, 3])
def test_so3_convolution_matches_right_composition(bandwidth_out):
    b, channels, filters = 4, 2, 3
    signal = _band_limited((1, channels) + (2 * b,) * 3, b, 1, so3=True)
    layer = SO3Convolution(filters, b, bandwidth_out, dtype="float64")

    outputs = layer(np.moveaxis(signal, 1, -1)).numpy()[0]

    grid = np.array(layer.kernel_grid)  # (β, α, γ)
    kernel_rotations = _rotation(grid[:, 1], grid[:, 0], grid[:, 2])
    rotations = _so3_mesh_rotations(bandwidth_out)[..., None, :, :]
    spectrum = tfcv_ops.so3_fft(signal[0], bandwidth_out).numpy()
    for order, matrices, close in (
        ("R R_p", rotations @ kernel_rotations, True),
        ("R_p R", kernel_rotations @ rotations, False),
    ):
        angles = _euler(matrices)
        values = [_so3_evaluate(s, *angles) for s in spectrum]
        expected = np.einsum(
            "c...p,cop->...o", values, layer.kernel.numpy() * layer.kernel_scale
        )
        error = np.abs(outputs - expected).max()
        assert (error < 1e-9) == close, (order, error)


def test_linear_stack_is_equivariant():
    b, channels = 8, 3
    signal = _band_limited((1, channels, 2 * b, 2 * b), b, 2)
    s2_layer = S2Convolution(4, b, b)
    so3_layer = SO3Convolution(4, b, b)

    def network(x):  # [B, C, 2b, 2b] -> [B, O, 2b, 2b, 2b]
        outputs = so3_layer(s2_layer(np.moveaxis(x, 1, -1)))
        return tf.transpose(outputs, [0, 4, 1, 2, 3])

    deltas = []
    rng = np.random.default_rng(3)
    for alpha, beta, gamma in rng.uniform(0, 2 * np.pi, (3, 3)):
        beta = beta / 2
        rotated_input = tfcv_ops.s2_rotate(signal, alpha, beta, gamma)
        outputs = network(signal)
        rotated_output = tfcv_ops.so3_rotate(outputs, alpha, beta, gamma)
        difference = rotated_output - network(rotated_input.numpy())
        deltas.append(np.std(difference) / np.std(outputs))

    assert max(deltas) <= 1e-4, deltas


def test_default_initialization_keeps_unit_variance():
    tf_keras.utils.set_random_seed(0)
    b = 8
    signal = _band_limited((4, 4, 2 * b, 2 * b), b, 4)
    stack = [
        S2Convolution(8, b, b, use_bias=False),
        SO3Convolution(8, b, b, use_bias=False),
        SO3Convolution(8, b, b, use_bias=False),
    ]

    x = np.moveaxis(signal, 1, -1)
    stds = []
    for layer in stack:
        x = layer(x)
        stds.append(float(np.std(x)))

    print("output std per layer:", stds)
    assert all(0.5 <= std <= 2.0 for std in stds), stds


def test_integrate_is_invariant_and_exact():
    b = 6
    signal = _band_limited((2, 3) + (2 * b,) * 3, b, 5, so3=True)
    rotated = tfcv_ops.so3_rotate(signal, 0.4, 1.1, -2.0).numpy()
    layer = SO3Integrate(dtype="float64")

    integral = layer(np.moveaxis(signal, 1, -1)).numpy()
    rotated_integral = layer(np.moveaxis(rotated, 1, -1)).numpy()

    mean_coefficient = tfcv_ops.so3_fft(signal).numpy()[..., 0].real
    np.testing.assert_allclose(integral, mean_coefficient, atol=1e-12)
    np.testing.assert_allclose(rotated_integral, integral, atol=1e-5)
    float32 = SO3Integrate()(np.moveaxis(rotated, 1, -1).astype(np.float32))
    np.testing.assert_allclose(float32, integral, atol=1e-5)


def test_global_max_pool_is_invariant():
    b = 8  # signals of degree l < 4 on the b = 8 grid: peaks well sampled
    signal = _band_limited((2, 3) + (2 * b,) * 3, 4, 6, so3=True)
    layer = SO3GlobalMaxPool()
    maximum = layer(np.moveaxis(signal, 1, -1)).numpy()

    # A turn about z by one grid step permutes the samples: exact.
    on_grid = tfcv_ops.so3_rotate(signal, 2 * np.pi / (2 * b), 0.0, 0.0)
    # A generic rotation moves peaks between samples: close only.
    generic = tfcv_ops.so3_rotate(signal, 0.3, 0.9, 1.7)

    exact = layer(np.moveaxis(on_grid.numpy(), 1, -1)).numpy()
    approximate = layer(np.moveaxis(generic.numpy(), 1, -1)).numpy()
    np.testing.assert_allclose(exact, maximum, atol=1e-5)
    np.testing.assert_allclose(approximate, maximum, rtol=0.05)


def test_batch_norm_uses_haar_moments_and_tracks_them():
    b = 4
    signal = 2.0 + 3.0 * _band_limited((3, 2) + (2 * b,) * 3, b, 7, True)
    signal = np.moveaxis(signal, 1, -1)  # [B, 2b, 2b, 2b, C]
    rotated = tfcv_ops.so3_rotate(
        np.moveaxis(signal, -1, 1), 0.5, 1.2, -0.7
    ).numpy()
    layer = SO3BatchNormalization(momentum=0.9, dtype="float64")

    outputs = layer(signal, training=True).numpy()
    rotated_outputs = layer(np.moveaxis(rotated, 1, -1), training=True)

    weights = tfcv_ops.quadrature_weights(b)[:, None, None, None] / (2 * b) ** 2
    mean = np.sum(weights * signal, (1, 2, 3)).mean(0)
    variance = np.sum(weights * (signal - mean) ** 2, (1, 2, 3)).mean(0)
    haar_mean = np.sum(weights * outputs, (1, 2, 3)).mean(0)
    haar_square = np.sum(weights * outputs**2, (1, 2, 3)).mean(0)
    np.testing.assert_allclose(haar_mean, 0.0, atol=1e-10)
    np.testing.assert_allclose(haar_square, variance / (variance + 1e-3))
    # Rotated maps: the same moments, so the rotated outputs.
    expected = tfcv_ops.so3_rotate(np.moveaxis(outputs, -1, 1), 0.5, 1.2, -0.7)
    np.testing.assert_allclose(
        np.moveaxis(expected.numpy(), 1, -1), rotated_outputs, atol=1e-8
    )
    # Two updates with (nearly) the same moments from 0 and 1.
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.19 * mean)
    np.testing.assert_allclose(
        layer.moving_variance.numpy(), 0.81 + 0.19 * variance, rtol=1e-7
    )
    inference = layer(signal, training=False).numpy()
    scale = np.sqrt(layer.moving_variance.numpy() + 1e-3)
    np.testing.assert_allclose(
        inference, (signal - layer.moving_mean.numpy()) / scale
    )


def test_kernel_grid_counts_and_rings():
    so3 = kernel_grids.so3_near_identity_grid()

    assert kernel_grids.s2_near_identity_grid().shape == (24, 2)
    assert so3.shape == (72, 3)
    assert kernel_grids.s2_equatorial_grid().shape == (32, 2)
    assert kernel_grids.so3_equatorial_grid().shape == (64, 3)
    assert kernel_grids.s2_equatorial_grid(0.2, 4, 3).shape == (12, 2)
    np.testing.assert_allclose(
        np.unique(so3[:, 0]), np.pi / 8 * np.array([1, 2, 3]) / 3
    )
    # All rotations of a ring with the same turn γ' are equally far from I.
    angle = np.arccos((np.trace(_rotation(so3[:, 1], so3[:, 0], so3[:, 2]), axis1=1, axis2=2) - 1) / 2)  # fmt: skip
    np.testing.assert_allclose(
        angle.reshape(3, 8, 3),
        np.broadcast_to(angle.reshape(3, 8, 3)[:, :1], (3, 8, 3)),
        atol=1e-7,
    )


def test_mnist_model_parameter_counts():
    s2_layer = S2Convolution(20, bandwidth_in=30, bandwidth_out=10)
    so3_layer = SO3Convolution(40, bandwidth_in=10, bandwidth_out=6)

    s2_layer.build([None, 60, 60, 1])
    so3_layer.build([None, 20, 20, 20, 20])

    assert s2_layer.count_params() == 480 + 20
    assert so3_layer.count_params() == 57_600 + 40
    assert so3_layer.compute_output_shape([5, 20, 20, 20, 20]) == (
        5,
        12,
        12,
        12,
        40,
    )


def test_residual_block_shortcuts():
    identity = SO3ResidualBlock(2, 3, 3)
    projected = SO3ResidualBlock(4, 3, 2)

    identity.build([None, 6, 6, 6, 2])
    projected.build([None, 6, 6, 6, 2])

    assert identity.shortcut is None
    assert projected.shortcut.kernel_grid == [[0.0, 0.0, 0.0]]
    # shortcut 2·4·1, convolutions 2·4·72 + 4·4·72, two BNs 4·4 (γ, β, μ, σ²)
    assert projected.count_params() == 8 + 576 + 1152 + 32


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: kernel_grids.s2_near_identity_grid(n_alpha=0), "n_alpha"),
        (lambda: kernel_grids.s2_near_identity_grid(max_beta=0), "max_beta"),
        (lambda: kernel_grids.so3_near_identity_grid(max_gamma=-1), "max_g"),
        (lambda: kernel_grids.s2_equatorial_grid(math.pi / 2), "poles"),
        (lambda: S2Convolution(0, 4, 3), "filters"),
        (lambda: S2Convolution(2, 0, 3), "bandwidth_in"),
        (lambda: S2Convolution(2, 3, 4), "bandwidth_out` must be <="),
        (lambda: S2Convolution(2, 4, 3, kernel_grid=[[0.1, 0.2, 0]]), "N, 2"),
        (
            lambda: SO3Convolution(
                2, 4, 3, kernel_grid=[[0, 0.3, 0], [0, 0.1, 0.2]]
            ),
            "rows 0 .* and 1 .* are the same rotation",
        ),
        (
            lambda: SO3Convolution(
                2,
                4,
                3,
                kernel_grid=[
                    [0.1, 0, 0],
                    [math.pi, 0.5, 0.2],
                    [math.pi, 0.4, 0.1],
                ],
            ),
            "rows 1 .* and 2 .* are the same rotation",
        ),
        (
            lambda: S2Convolution(2, 4, 3, kernel_grid=[[0, 0], [0, 1.0]]),
            "the same point of the sphere",
        ),
        (
            lambda: S2Convolution(2, 4, 3, kernel_grid=[[45.0, 90.0]]),
            r"row 0 \[45.0, 90.0\] has β outside \[0, π\]",
        ),
        (
            lambda: SO3Convolution(2, 4, 3, kernel_grid=[[-0.1, 0, 0]]),
            "has β outside",
        ),
        (lambda: SO3ResidualBlock(2, 3, 4), "bandwidth_out` must be <="),
        (lambda: SO3BatchNormalization(momentum=1.0), "momentum"),
    ],
)
def test_bad_arguments_raise(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(
    "layer, shape",
    [
        (lambda: S2Convolution(2, 4, 3), [1, 6, 6, 2]),  # side != 2 b_in
        (lambda: S2Convolution(2, 4, 3), [1, 8, 6, 2]),  # unequal axes
        (lambda: SO3Convolution(2, 4, 3), [1, 8, 8, 2]),  # S² grid
        (lambda: SO3ResidualBlock(2, 4, 3), [1, 8, 8, 6, 2]),
        (lambda: SO3Integrate(), [1, 8, 8, 6, 2]),
        (lambda: SO3GlobalMaxPool(), [1, 7, 7, 7, 2]),  # odd side
        (lambda: SO3BatchNormalization(), [1, 8, 8, 8, None]),
    ],
)
def test_wrong_grid_raises(layer, shape):
    with pytest.raises(ValueError, match="expects inputs .* received shape"):
        layer().build(shape)


@pytest.mark.parametrize(
    "layer, shape",
    [
        (lambda: S2Convolution(2, 2, 2), [1, 4, 4]),
        (lambda: SO3Convolution(2, 2, 2), [1, 4, 4, 4]),
        (lambda: SO3Integrate(), [1, 4, 4, 4]),
        (lambda: SO3GlobalMaxPool(), [1, 4, 4, 4]),
        (lambda: SO3BatchNormalization(), [1, 4, 4, 4]),
        (lambda: SO3ResidualBlock(2, 2, 2), [1, 4, 4, 4]),
    ],
)
def test_channel_change_after_build_raises(layer, shape):
    instance = layer()
    instance(tf.zeros(shape + [2]))

    with pytest.raises(ValueError, match="built for 2 input channels"):
        instance(tf.zeros(shape + [3]))
