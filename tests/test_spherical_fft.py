"""Accuracy tests of the S² and SO(3) FFTs, products and rotations.

Oracles are NumPy evaluations of the paper's equations with Wigner's
explicit sum for d^l (independent of the Risbo tables used by the library).
Input checks, dispatch and caches are in `test_spherical_fft_inputs.py`.
"""

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import tfcv_ops
from tfcv_ops import primitives
from tfcv_ops import tables


def _small_d(l: int, beta) -> np.ndarray:
    """d^l_{mn}(β) `[..., 2l+1, 2l+1]` by Wigner's explicit sum over k."""
    f = math.factorial
    cosine, sine = np.cos(np.asarray(beta) / 2), np.sin(np.asarray(beta) / 2)
    d = np.zeros(np.shape(beta) + (2 * l + 1, 2 * l + 1))
    for m in range(-l, l + 1):
        for n in range(-l, l + 1):
            norm = math.sqrt(f(l + m) * f(l - m) * f(l + n) * f(l - n))
            for k in range(max(0, n - m), min(l + n, l - m) + 1):
                term = (-1) ** (m - n + k) * norm
                term /= f(l + n - k) * f(k) * f(m - n + k) * f(l - m - k)
                powers = cosine ** (2 * l + n - m - 2 * k)
                d[..., m + l, n + l] += term * powers * sine ** (m - n + 2 * k)
    return d


def _big_d(l: int, alpha, beta, gamma) -> np.ndarray:
    """D^l_{mn} = e^{-imα} d^l_{mn}(β) e^{-inγ}, `[..., 2l+1, 2l+1]`."""
    m = np.arange(-l, l + 1)
    phase_m = np.exp(-1j * np.multiply.outer(alpha, m))[..., :, None]
    phase_n = np.exp(-1j * np.multiply.outer(gamma, m))[..., None, :]
    return phase_m * _small_d(l, beta) * phase_n


def _so3_evaluate(spectrum, alpha, beta, gamma) -> np.ndarray:
    """Eq. 9 at arbitrary rotations: Σ_l (2l+1) Σ_mn f̂_mn D_mn."""
    bandwidth = round((0.75 * spectrum.shape[-1]) ** (1 / 3))
    total = 0.0
    for l in range(bandwidth):
        block = tfcv_ops.so3_degree_block(tf.constant(spectrum), l).numpy()
        total += (2 * l + 1) * np.sum(
            block * _big_d(l, alpha, beta, gamma), (-2, -1)
        )
    return total


def _s2_evaluate(spectrum, alpha, beta) -> np.ndarray:
    """Eq. 9 on S²: Σ_l (2l+1) Σ_m f̂_m D_{m0}(α, β, 0)."""
    bandwidth = round(math.sqrt(spectrum.shape[-1]))
    total = 0.0
    for l in range(bandwidth):
        block = spectrum[..., l * l : (l + 1) ** 2]
        column = _big_d(l, alpha, beta, np.zeros_like(beta))[..., :, l]
        total += (2 * l + 1) * np.sum(block * column, axis=-1)
    return total


def _rotation(alpha, beta, gamma) -> np.ndarray:
    """Z(α) Y(β) Z(γ) as matrices `[..., 3, 3]`."""

    def axis_rotation(angle, i, j):
        matrix = np.zeros(np.shape(angle) + (3, 3))
        matrix[..., i, i] = matrix[..., j, j] = np.cos(angle)
        matrix[..., i, j], matrix[..., j, i] = -np.sin(angle), np.sin(angle)
        matrix[..., 3 - i - j, 3 - i - j] = 1.0
        return matrix

    return (
        axis_rotation(alpha, 0, 1)
        @ axis_rotation(beta, 2, 0)
        @ (axis_rotation(gamma, 0, 1))
    )


def _euler(matrix):
    """ZYZ angles (α, β, γ) of rotation matrices `[..., 3, 3]`.

    At β = 0 or π only α ± γ is defined; there γ = 0.
    """
    sine = np.hypot(matrix[..., 0, 2], matrix[..., 1, 2])
    beta = np.arctan2(sine, matrix[..., 2, 2])
    alpha = np.arctan2(matrix[..., 1, 2], matrix[..., 0, 2])
    gamma = np.arctan2(matrix[..., 2, 1], -matrix[..., 2, 0])
    flip = np.where(matrix[..., 2, 2] > 0, 1.0, -1.0)  # Z(α)Y(0 or π)
    pole_alpha = np.arctan2(flip * matrix[..., 1, 0], flip * matrix[..., 0, 0])
    at_pole = sine < 1e-9
    alpha = np.where(at_pole, pole_alpha, alpha)
    return alpha, beta, np.where(at_pole, 0.0, gamma)


def _random_spectrum(size, batch=2, seed=0, dtype=np.complex128):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(batch, size)) + 1j * rng.normal(
        size=(batch, size)
    )
    return values.astype(dtype)


def _relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def _so3_mesh(b):
    beta, alpha, gamma = tfcv_ops.so3_grid(b)
    return np.meshgrid(alpha, beta, gamma, indexing="xy")  # [β, α, γ] order


def test_grid_and_weights():
    beta, alpha, gamma = tfcv_ops.so3_grid(4)

    weights = tfcv_ops.quadrature_weights(4)

    np.testing.assert_allclose(beta, np.pi * (2 * np.arange(8) + 1) / 16)
    np.testing.assert_allclose(alpha, np.pi * np.arange(8) / 4)
    np.testing.assert_array_equal(alpha, gamma)
    assert weights.shape == (8,) and weights.dtype == np.float64
    assert abs(weights.sum() - 1.0) < 1e-15


@pytest.mark.parametrize("b", [4, 8, 16])
def test_quadrature_integrates_d_products_exactly(b):
    weights = tfcv_ops.quadrature_weights(b)
    table = tables.so3_table(b, b)
    blocks = [
        tfcv_ops.so3_degree_block(tf.constant(table), l).numpy()
        for l in range(b)
    ]

    for l in range(b):
        for k in range(l, b):
            common = blocks[k][:, k - l : k + l + 1, k - l : k + l + 1]
            # Σ_j w_j d^l_{mn} d^k_{mn}: [J] x [J, S, S] x [J, S, S] -> [S, S]
            gram = np.einsum("j,jmn,jmn->mn", weights, blocks[l], common)
            expected = (1.0 / (2 * l + 1)) * (k == l)
            np.testing.assert_allclose(gram, expected, rtol=0, atol=1e-12)


S2_BANDWIDTHS = [4, 8, 15, 16, 32, 64]
SO3_BANDWIDTHS = [4, 8, 15, 16, 32, 64]
DTYPES = [(np.complex128, 1e-12), (np.complex64, 1e-5)]
requires_custom_op = pytest.mark.skipif(
    not tfcv_ops.custom_ops_available(),
    reason="custom-op library not built: pip install --no-build-isolation -e .",
)
# Both implementations: the C++ kernels and the pure-TensorFlow twins.
IMPLEMENTATIONS = [
    pytest.param(True, id="custom_op", marks=requires_custom_op),
    pytest.param(False, id="twin"),
]


@pytest.mark.parametrize("use_custom_op", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype, tolerance", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("b", S2_BANDWIDTHS)
def test_s2_coefficients_grid_coefficients(b, dtype, tolerance, use_custom_op):
    spectrum = _random_spectrum(b * b, seed=b, dtype=dtype)

    grid = tfcv_ops.s2_ifft(spectrum, use_custom_op=use_custom_op)
    recovered = tfcv_ops.s2_fft(grid, use_custom_op=use_custom_op)

    assert grid.shape == (2, 2 * b, 2 * b) and recovered.dtype == dtype
    assert _relative_error(recovered, spectrum) <= tolerance


@pytest.mark.parametrize("use_custom_op", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype, tolerance", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("b", SO3_BANDWIDTHS)
def test_so3_coefficients_grid_coefficients(b, dtype, tolerance, use_custom_op):
    size = tfcv_ops.so3_spectrum_size(b)
    spectrum = _random_spectrum(size, batch=1, seed=b, dtype=dtype)

    grid = tfcv_ops.so3_ifft(spectrum, use_custom_op=use_custom_op)
    recovered = tfcv_ops.so3_fft(grid, use_custom_op=use_custom_op)

    assert grid.shape == (1, 2 * b, 2 * b, 2 * b)
    assert recovered.dtype == dtype
    assert _relative_error(recovered, spectrum) <= tolerance


def test_so3_real_signal_has_hermitian_spectrum():
    b = 6
    rng = np.random.default_rng(1)
    signal = tfcv_ops.so3_ifft(
        tfcv_ops.so3_fft(rng.normal(size=(8, 12, 12, 12)))
    )
    real_signal = tf.math.real(signal)

    spectrum = tfcv_ops.so3_fft(real_signal).numpy()
    as_real = tfcv_ops.so3_ifft(spectrum, real_output=True)

    for l in range(b):
        block = tfcv_ops.so3_degree_block(tf.constant(spectrum), l).numpy()
        m = np.arange(-l, l + 1)
        sign = (-1.0) ** (m[:, None] + m[None, :])
        # f̂^l_{-m,-n} = (-1)^(m+n) conj(f̂^l_{mn})
        np.testing.assert_allclose(
            block[:, ::-1, ::-1], sign * np.conj(block), atol=1e-13
        )
    assert as_real.dtype == tf.float64
    np.testing.assert_allclose(as_real, real_signal, atol=1e-12)
    np.testing.assert_allclose(tf.math.imag(signal), 0.0, atol=1e-12)


def test_s2_real_signal_has_hermitian_spectrum():
    b = 8
    rng = np.random.default_rng(2)
    real_signal = tf.math.real(
        tfcv_ops.s2_ifft(tfcv_ops.s2_fft(rng.normal(size=(3, 16, 16))))
    )

    spectrum = tfcv_ops.s2_fft(real_signal).numpy()
    as_real = tfcv_ops.s2_ifft(spectrum, real_output=True)

    for l in range(b):
        block = spectrum[:, l * l : (l + 1) ** 2]
        sign = (-1.0) ** np.arange(-l, l + 1)
        np.testing.assert_allclose(
            block[:, ::-1], sign * np.conj(block), atol=1e-13
        )
    np.testing.assert_allclose(as_real, real_signal, atol=1e-12)


@pytest.mark.parametrize("kind", ["s2", "so3"])
def test_grid_coefficients_grid_is_a_projection(kind):
    # Grid -> spectrum -> grid is NOT the identity: a grid of 2b samples per
    # axis holds more than the b² (or P(b)) band-limited degrees of freedom.
    fft, ifft = (
        (tfcv_ops.s2_fft, tfcv_ops.s2_ifft)
        if kind == "s2"
        else (tfcv_ops.so3_fft, tfcv_ops.so3_ifft)
    )
    shape = (2, 8, 8) if kind == "s2" else (2, 8, 8, 8)
    grid = np.random.default_rng(3).normal(size=shape)

    once = ifft(fft(grid))
    twice = ifft(fft(once))

    assert _relative_error(once, grid) > 0.1  # not band-limited: it changes
    assert _relative_error(twice, once) < 1e-12  # idempotent


def test_so3_forward_matches_direct_quadrature():
    b = 4
    rng = np.random.default_rng(4)
    grid = rng.normal(size=(8, 8, 8)) + 1j * rng.normal(size=(8, 8, 8))
    alpha, beta, gamma = _so3_mesh(b)
    weights = tfcv_ops.quadrature_weights(b)[:, None, None] / 64

    spectrum = tfcv_ops.so3_fft(grid).numpy()

    # Eq. 8: Σ_{j,k1,k2} w_j / (2b)² f conj(D^l_{mn}).
    expected = np.concatenate(
        [
            np.einsum(
                "jab,jabmn->mn",
                weights * grid,
                np.conj(_big_d(l, alpha, beta, gamma)),
            ).ravel()
            for l in range(b)
        ]
    )
    np.testing.assert_allclose(spectrum, expected, atol=1e-13)


def test_s2_forward_matches_direct_quadrature():
    b = 4
    rng = np.random.default_rng(5)
    grid = rng.normal(size=(8, 8)) + 1j * rng.normal(size=(8, 8))
    beta, alpha = tfcv_ops.s2_grid(b)
    alpha, beta = np.meshgrid(alpha, beta)  # [β, α]
    weights = tfcv_ops.quadrature_weights(b)[:, None] / 8

    spectrum = tfcv_ops.s2_fft(grid).numpy()

    expected = np.concatenate(
        [
            np.einsum(
                "ja,jam->m",
                weights * grid,
                np.conj(_big_d(l, alpha, beta, 0 * beta)[..., l]),
            )
            for l in range(b)
        ]
    )
    np.testing.assert_allclose(spectrum, expected, atol=1e-13)


@pytest.mark.parametrize("kind", ["s2", "so3"])
def test_bandwidth_out_truncates_and_pads(kind):
    fft, ifft, size = (
        (tfcv_ops.s2_fft, tfcv_ops.s2_ifft, tfcv_ops.s2_spectrum_size)
        if kind == "s2"
        else (tfcv_ops.so3_fft, tfcv_ops.so3_ifft, tfcv_ops.so3_spectrum_size)
    )
    spectrum = _random_spectrum(size(6), seed=6)
    grid = ifft(spectrum)

    truncated = fft(grid, bandwidth_out=4)
    padded = fft(grid, bandwidth_out=8)
    coarse = ifft(spectrum, bandwidth_out=4)
    fine = ifft(spectrum, bandwidth_out=9)

    np.testing.assert_allclose(truncated, spectrum[:, : size(4)], atol=1e-12)
    np.testing.assert_allclose(padded[:, : size(6)], spectrum, atol=1e-12)
    np.testing.assert_array_equal(padded[:, size(6) :], 0.0)
    np.testing.assert_allclose(coarse, ifft(spectrum[:, : size(4)]), atol=1e-12)
    np.testing.assert_allclose(fft(fine, bandwidth_out=6), spectrum, atol=1e-12)


def _real_band_limited_s2(b, seed):
    grid = np.random.default_rng(seed).normal(size=(2 * b, 2 * b))
    return tf.math.real(tfcv_ops.s2_ifft(tfcv_ops.s2_fft(grid))).numpy()


def test_s2_correlation_theorem():
    # [ψ ⋆ f](R) = ∫ ψ(R⁻¹x) f(x) dx (Eq. 4), ψ real, by quadrature over x.
    b = 4
    psi = _real_band_limited_s2(b, seed=7)
    f_spectrum = _random_spectrum(b * b, batch=1, seed=8)
    f_grid = tfcv_ops.s2_ifft(f_spectrum).numpy()[0]
    beta, alpha = tfcv_ops.s2_grid(b)
    alpha, beta = np.meshgrid(alpha, beta)  # [β, α]
    points = np.stack(
        [
            np.sin(beta) * np.cos(alpha),
            np.sin(beta) * np.sin(alpha),
            np.cos(beta),
        ],
        -1,
    )
    rotations = _rotation(*[a[..., None, None] for a in _so3_mesh(b)])
    rotated = np.einsum("...ji,...j->...i", rotations, points)  # R⁻¹ x
    psi_rotated = _s2_evaluate(
        tfcv_ops.s2_fft(psi).numpy(),
        np.arctan2(rotated[..., 1], rotated[..., 0]),
        np.arccos(np.clip(rotated[..., 2], -1, 1)),
    )
    weights = tfcv_ops.quadrature_weights(b)[:, None] / (2 * b)
    brute_force = np.sum(weights * psi_rotated * f_grid, axis=(-2, -1))

    spectral = tfcv_ops.so3_ifft(
        tfcv_ops.s2_mm(f_spectrum[:, None], tfcv_ops.s2_fft(psi)[None, None])
    )

    np.testing.assert_allclose(spectral[0, 0], brute_force, atol=1e-4)
    assert (
        np.abs(spectral[0, 0] - brute_force).max() < 1e-7
    )  # arccos near poles


def test_so3_correlation_theorem():
    # [ψ ⋆ f](R) = ∫ ψ(R⁻¹Q) f(Q) dQ (Eq. 6), ψ real, by quadrature over Q.
    b = 4
    grid = np.random.default_rng(9).normal(size=(8, 8, 8))
    psi = tf.math.real(tfcv_ops.so3_ifft(tfcv_ops.so3_fft(grid))).numpy()
    f_spectrum = _random_spectrum(
        tfcv_ops.so3_spectrum_size(b), batch=1, seed=10
    )
    f_grid = tfcv_ops.so3_ifft(f_spectrum).numpy()[0]
    q = _rotation(*_so3_mesh(b))  # [β, α, γ, 3, 3]
    r = q.reshape(-1, 1, 1, 1, 3, 3)
    relative = np.swapaxes(r, -1, -2) @ q  # R⁻¹ Q: [R, β, α, γ, 3, 3]
    psi_relative = _so3_evaluate(
        tfcv_ops.so3_fft(psi).numpy(), *_euler(relative)
    )
    weights = tfcv_ops.quadrature_weights(b)[:, None, None] / (2 * b) ** 2
    brute_force = np.sum(weights * psi_relative * f_grid, axis=(1, 2, 3))

    spectral = tfcv_ops.so3_ifft(
        tfcv_ops.so3_mm(f_spectrum[:, None], tfcv_ops.so3_fft(psi)[None, None])
    )

    np.testing.assert_allclose(
        spectral[0, 0].numpy().ravel(), brute_force, atol=1e-4
    )
    assert (
        np.abs(spectral[0, 0].numpy().ravel() - brute_force).max() < 1e-7
    )  # arccos near poles


ANGLES = (0.4, 1.1, -0.7)


@pytest.mark.parametrize("kind", ["s2", "so3"])
def test_rotate_then_transform_is_conj_d_times_spectrum(kind):
    b = 5
    so3 = kind == "so3"
    size = tfcv_ops.so3_spectrum_size(b) if so3 else b * b
    spectrum = _random_spectrum(size, batch=1, seed=11)
    ifft, fft, rotate = (
        (tfcv_ops.so3_ifft, tfcv_ops.so3_fft, tfcv_ops.so3_rotate)
        if so3
        else (tfcv_ops.s2_ifft, tfcv_ops.s2_fft, tfcv_ops.s2_rotate)
    )

    rotated = fft(rotate(ifft(spectrum), *ANGLES)).numpy()

    for l in range(b):
        d = np.conj(_big_d(l, *ANGLES))
        if so3:
            block = tfcv_ops.so3_degree_block(tf.constant(spectrum), l).numpy()
            actual = tfcv_ops.so3_degree_block(tf.constant(rotated), l).numpy()
            np.testing.assert_allclose(actual, d @ block, atol=1e-12)
        else:
            block = spectrum[:, l * l : (l + 1) ** 2]
            actual = rotated[:, l * l : (l + 1) ** 2]
            np.testing.assert_allclose(actual, block @ d.T, atol=1e-12)


def test_rotate_matches_point_evaluation():
    b = 4
    spectrum = _random_spectrum(
        tfcv_ops.so3_spectrum_size(b), batch=1, seed=12
    )[0]
    signal = tfcv_ops.so3_ifft(spectrum)
    s2_spectrum = _random_spectrum(b * b, batch=1, seed=13)[0]
    s2_signal = tfcv_ops.s2_ifft(s2_spectrum)
    q = _rotation(*_so3_mesh(b))
    r_inverse = _rotation(*ANGLES).T

    rotated = tfcv_ops.so3_rotate(signal, *ANGLES).numpy()
    s2_rotated = tfcv_ops.s2_rotate(s2_signal, *ANGLES).numpy()

    # f(R⁻¹Q) evaluated directly at a few grid rotations Q.
    for j, k1, k2 in [(0, 0, 0), (3, 5, 1), (7, 2, 6)]:
        angles = _euler(r_inverse @ q[j, k1, k2])
        np.testing.assert_allclose(
            rotated[j, k1, k2], _so3_evaluate(spectrum, *angles), atol=1e-12
        )
        point_angles = _euler(r_inverse @ q[j, k1, 0])[:2]
        np.testing.assert_allclose(
            s2_rotated[j, k1],
            _s2_evaluate(s2_spectrum, *point_angles),
            atol=1e-12,
        )


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64, tf.complex128])
def test_rotate_there_and_back(dtype):
    b = 6
    signal = tf.cast(
        tf.math.real(
            tfcv_ops.so3_ifft(
                _random_spectrum(tfcv_ops.so3_spectrum_size(b), seed=14)
            )
        ),
        dtype,
    )
    s2_signal = tf.cast(
        tfcv_ops.s2_ifft(_random_spectrum(b * b, seed=15)), dtype
    )
    inverse = (-ANGLES[2], -ANGLES[1], -ANGLES[0])  # R(α,β,γ)⁻¹ = R(-γ,-β,-α)

    back = tfcv_ops.so3_rotate(tfcv_ops.so3_rotate(signal, *ANGLES), *inverse)
    s2_back = tfcv_ops.s2_rotate(
        tfcv_ops.s2_rotate(s2_signal, *ANGLES), *inverse
    )

    tolerance = 1e-4 if dtype == tf.float32 else 1e-11
    assert back.dtype == dtype and s2_back.dtype == dtype
    np.testing.assert_allclose(back, signal, atol=tolerance)
    np.testing.assert_allclose(s2_back, s2_signal, atol=tolerance)


def _primitive_case(kind, b=4, grid_b=5, batch=2, seed=16):
    """`(contract, expand, x, y)` closures and random operands."""
    rng = np.random.default_rng(seed)
    so3 = kind == "so3"
    table = (tables.so3_table if so3 else tables.s2_table)(grid_b, b)
    grid_shape = (batch, 2 * grid_b, 2 * grid_b) + (
        (2 * grid_b,) if so3 else ()
    )
    size = table.shape[1]

    def contract(x):
        return (primitives.so3_contract if so3 else primitives.s2_contract)(
            x, table, b, use_custom_op=False
        )

    def expand(y):
        return (primitives.so3_expand if so3 else primitives.s2_expand)(
            y, table, 2 * grid_b, use_custom_op=False
        )

    x = rng.normal(size=grid_shape) + 1j * rng.normal(size=grid_shape)
    y = rng.normal(size=(batch, size)) + 1j * rng.normal(size=(batch, size))
    return contract, expand, tf.constant(x), tf.constant(y)


@pytest.mark.parametrize("kind", ["s2", "so3"])
def test_expand_is_adjoint_of_contract(kind):
    contract, expand, x, y = _primitive_case(kind)

    left = np.vdot(contract(x).numpy(), y.numpy())  # <contract x, y>
    right = np.vdot(x.numpy(), expand(y).numpy())  # <x, expand y>

    assert abs(left - right) < 1e-10 * abs(left)


@pytest.mark.parametrize("kind", ["s2", "so3"])
def test_twin_gradients_match_finite_differences(kind):
    contract, expand, x, y = _primitive_case(kind, batch=1)
    rng = np.random.default_rng(17)

    for function, point, shape in [
        (contract, x, y.shape),
        (expand, y, x.shape),
    ]:
        weights = tf.constant(
            rng.normal(size=shape) + 1j * rng.normal(size=shape)
        )
        direction = tf.constant(
            rng.normal(size=point.shape) + 1j * rng.normal(size=point.shape)
        )

        def loss(value):
            return tf.math.real(tf.reduce_sum(weights * function(value)))

        with tf.GradientTape() as tape:
            tape.watch(point)
            value = loss(point)
        gradient = tape.gradient(value, point)
        step = 1e-6
        finite = (
            loss(point + step * direction) - loss(point - step * direction)
        ) / (2 * step)

        # TensorFlow's convention: dL = Re(Σ conj(g) v) for a direction v.
        predicted = tf.math.real(
            tf.reduce_sum(tf.math.conj(gradient) * direction)
        )
        np.testing.assert_allclose(predicted, finite, rtol=1e-7)


def test_mm_gradients_match_compute_gradient():
    rng = np.random.default_rng(18)

    def operand(*shape):
        return tf.constant(rng.normal(size=shape) + 1j * rng.normal(size=shape))

    cases = [
        (tfcv_ops.s2_mm, operand(1, 2, 16), operand(2, 2, 16)),
        (tfcv_ops.so3_mm, operand(1, 2, 35), operand(2, 2, 35)),
    ]

    for function, x, y in cases:
        theoretical, numerical = tf.test.compute_gradient(
            lambda a, b: function(a, b, use_custom_op=False), [x, y]
        )
        for exact, estimate in zip(theoretical, numerical):
            np.testing.assert_allclose(exact, estimate, atol=1e-6)


def _round_trip(x):
    spectrum = tfcv_ops.so3_fft(x)
    s2 = tfcv_ops.s2_fft(x[..., 0])
    mixed = tfcv_ops.so3_mm(spectrum[:, None], spectrum[:1, None])
    return tfcv_ops.so3_ifft(mixed, real_output=True), tfcv_ops.s2_ifft(s2)


def test_jit_compile_matches_graph():
    x = tf.constant(
        np.random.default_rng(19).normal(size=(2, 8, 8, 8)), tf.float32
    )

    graph = tf.function(_round_trip)(x)
    compiled = tf.function(_round_trip, jit_compile=True)(x)

    for a, b in zip(graph, compiled):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_runs_under_mirrored_strategy(mirrored_strategy):
    x = tf.constant(np.random.default_rng(20).normal(size=(2, 8, 8, 8)))

    result = mirrored_strategy.run(
        tf.function(lambda value: tfcv_ops.so3_fft(value)), args=(x,)
    )

    for replica in mirrored_strategy.experimental_local_results(result):
        np.testing.assert_allclose(replica, tfcv_ops.so3_fft(x), atol=1e-12)


class _Round(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 8], tf.float32)])
    def __call__(self, x):
        return tfcv_ops.so3_ifft(
            tfcv_ops.so3_fft(x, bandwidth_out=3),
            bandwidth_out=4,
            real_output=True,
        )


def test_saved_model_loads_without_tfcv_ops(tmp_path):
    x = np.random.default_rng(21).normal(size=(3, 8, 8, 8)).astype(np.float32)
    module = _Round()
    expected = module(x).numpy()  # Traced with the C++ kernels, if built.
    tf.saved_model.save(module, str(tmp_path / "model"))  # Retraced: twins.
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, tensorflow as tf
        model = tf.saved_model.load({str(tmp_path / "model")!r})
        np.save({str(tmp_path / "y.npy")!r}, model(np.load({str(tmp_path / "x.npy")!r})).numpy())
        assert not any(name.startswith("tfcv") for name in sys.modules), "tfcv imported"
        """
    )

    subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        cwd=str(tmp_path),
        env={**os.environ, "PYTHONPATH": ""},
    )

    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-6)


@requires_custom_op
@pytest.mark.parametrize("b", [4, 15, 32])
def test_custom_ops_agree_with_the_twins_in_float32(b):
    rng = np.random.default_rng(b)
    s2_grid = rng.normal(size=(3, 2 * b, 2 * b)).astype(np.float32)
    so3_grid = rng.normal(size=(2, 2 * b, 2 * b, 2 * b)).astype(np.float32)
    size = tfcv_ops.so3_spectrum_size(b)
    x = _random_spectrum(3 * b * b, batch=2, dtype=np.complex64)
    x = x.reshape(2, 3, b * b)
    filters = _random_spectrum(3 * 4 * b * b, batch=1, dtype=np.complex64)
    filters = filters.reshape(3, 4, b * b)
    so3_x = _random_spectrum(3 * size, batch=2, dtype=np.complex64)
    so3_x = so3_x.reshape(2, 3, size)
    so3_filters = _random_spectrum(12 * size, batch=1, dtype=np.complex64)
    so3_filters = so3_filters.reshape(3, 4, size)
    calls = {
        "s2_fft": lambda c: tfcv_ops.s2_fft(s2_grid, use_custom_op=c),
        "s2_ifft": lambda c: tfcv_ops.s2_ifft(x[0], use_custom_op=c),
        "so3_fft": lambda c: tfcv_ops.so3_fft(so3_grid, use_custom_op=c),
        "so3_ifft": lambda c: tfcv_ops.so3_ifft(so3_x[0], use_custom_op=c),
        "s2_mm": lambda c: tfcv_ops.s2_mm(x, filters, use_custom_op=c),
        "so3_mm": lambda c: tfcv_ops.so3_mm(so3_x, so3_filters, c),
    }

    errors = {
        name: _relative_error(call(True), call(False))
        for name, call in calls.items()
    }

    assert max(errors.values()) <= 1e-5, errors


@requires_custom_op
def test_custom_op_gradients_equal_the_twin_gradients():
    b = 4
    rng = np.random.default_rng(0)
    grid = tf.constant(rng.normal(size=(2, 2 * b, 2 * b, 2 * b)))
    filters = tf.constant(
        _random_spectrum(2 * tfcv_ops.so3_spectrum_size(b), batch=1)
    )
    filters = tf.reshape(filters, [1, 2, -1])

    def loss(use_custom_op):
        with tf.GradientTape() as tape:
            tape.watch(grid)
            spectrum = tfcv_ops.so3_fft(grid, use_custom_op=use_custom_op)
            # [2, P] -> [2, 1, P] x [1, 2, P] -> [2, 2, P]
            product = tfcv_ops.so3_mm(
                spectrum[:, None], filters, use_custom_op=use_custom_op
            )
            output = tfcv_ops.so3_ifft(
                product, real_output=True, use_custom_op=use_custom_op
            )
            value = tf.reduce_sum(tf.sin(output))
        return tape.gradient(value, grid).numpy()

    np.testing.assert_allclose(loss(True), loss(False), rtol=0, atol=1e-10)
