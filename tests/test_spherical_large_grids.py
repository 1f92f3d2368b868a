"""S² grids finer than the spectra: b_grid up to 256, spectra up to 64.

The oracle synthesises Eq. 9 on the grid in NumPy with d^l_{m0} from the
three-term Legendre recursion (independent of the Risbo tables used by
the library). Input errors are in `test_spherical_fft_inputs.py`.
"""

import numpy as np
import pytest
import tensorflow as tf

import tfcv_ops
from tfcv.layers.spherical import S2Convolution
from tfcv.layers.spherical import SO3Convolution
from tfcv_ops import tables

requires_custom_op = pytest.mark.skipif(
    not tfcv_ops.custom_ops_available(),
    reason="custom-op library not built: pip install --no-build-isolation -e .",
)
# Both implementations: the C++ kernels and the pure-TensorFlow twins.
IMPLEMENTATIONS = [
    pytest.param(True, id="custom_op", marks=requires_custom_op),
    pytest.param(False, id="twin"),
]
DTYPES = [(np.complex128, 1e-10), (np.complex64, 1e-5)]


def _d_column(bandwidth: int, beta) -> np.ndarray:
    """d^l_{m0}(β) `[J, l, m + b - 1]` by the Legendre recursion in l.

    `d^l_{m0} = sqrt((l-m)!/(l+m)!) P^m_l(cos β)` (Condon-Shortley phase)
    and `d^l_{-m,0} = (-1)^m d^l_{m0}`.
    """
    cosine, sine = np.cos(beta), np.sin(beta)
    d = np.zeros([len(beta), bandwidth, 2 * bandwidth - 1])
    diagonal = np.ones_like(beta)  # d^m_{m0}
    for m in range(bandwidth):
        if m > 0:
            diagonal = -np.sqrt((2 * m - 1) / (2 * m)) * sine * diagonal
        previous, current = np.zeros_like(beta), diagonal
        for l in range(m, bandwidth):
            if l > m:
                previous, current = (
                    current,
                    (
                        (2 * l - 1) * cosine * current
                        - np.sqrt((l - 1) ** 2 - m**2) * previous
                    )
                    / np.sqrt(l * l - m * m),
                )
            d[:, l, bandwidth - 1 + m] = current
            d[:, l, bandwidth - 1 - m] = (-1) ** m * current
    return d


def _synthesise(spectrum: np.ndarray, grid_bandwidth: int) -> np.ndarray:
    """Eq. 9, `Σ_l (2l+1) Σ_m f̂^l_m e^{-imα} d^l_{m0}(β)`: `[B, 2b, 2b]`."""
    bandwidth = round(np.sqrt(spectrum.shape[-1]))
    beta, alpha = tfcv_ops.s2_grid(grid_bandwidth)
    l = np.repeat(np.arange(bandwidth), 2 * np.arange(bandwidth) + 1)
    m = np.arange(bandwidth * bandwidth) - l * l - l
    d = _d_column(bandwidth, beta)[:, l, m + bandwidth - 1]  # [J, b²]
    phase = np.exp(-1j * np.outer(alpha, m))  # [2b, b²]

    # [B, b²] x [J, b²] x [K, b²] -> [B, J, K]
    return np.einsum("bs,js,ks->bjk", (2 * l + 1) * spectrum, d, phase)


def _random_spectrum(bandwidth: int, batch: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    shape = (batch, bandwidth * bandwidth)
    return rng.normal(size=shape) + 1j * rng.normal(size=shape)


def _relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


@pytest.mark.parametrize("use_custom_op", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype, tolerance", DTYPES, ids=["f64", "f32"])
def test_fft_of_fine_grid_gives_the_low_degrees(
    dtype, tolerance, use_custom_op
):
    spectrum = _random_spectrum(20, seed=1)
    grid = _synthesise(spectrum, 128).astype(dtype)  # [2, 256, 256]

    truncated = tfcv_ops.s2_fft(grid, 16, use_custom_op=use_custom_op)

    assert truncated.shape == (2, 256) and truncated.dtype == dtype
    assert _relative_error(truncated, spectrum[:, :256]) <= tolerance


@pytest.mark.parametrize("use_custom_op", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype, tolerance", DTYPES, ids=["f64", "f32"])
def test_ifft_to_fine_grid_matches_synthesis(dtype, tolerance, use_custom_op):
    spectrum = _random_spectrum(16, seed=2)

    grid = tfcv_ops.s2_ifft(
        spectrum.astype(dtype), 128, use_custom_op=use_custom_op
    )

    assert grid.shape == (2, 256, 256) and grid.dtype == dtype
    assert _relative_error(grid, _synthesise(spectrum, 128)) <= tolerance


@pytest.mark.parametrize("use_custom_op", IMPLEMENTATIONS)
@pytest.mark.parametrize("dtype, tolerance", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize(
    "spectrum_bandwidth, grid_bandwidth", [(16, 128), (64, 256)]
)
def test_round_trip_through_fine_grid(
    spectrum_bandwidth, grid_bandwidth, dtype, tolerance, use_custom_op
):
    spectrum = _random_spectrum(spectrum_bandwidth, seed=3).astype(dtype)

    grid = tfcv_ops.s2_ifft(
        spectrum, grid_bandwidth, use_custom_op=use_custom_op
    )
    recovered = tfcv_ops.s2_fft(
        grid, spectrum_bandwidth, use_custom_op=use_custom_op
    )

    assert grid.shape[-1] == 2 * grid_bandwidth
    assert _relative_error(recovered, spectrum) <= tolerance


def test_fine_grid_table_is_built_in_bounded_chunks(monkeypatch):
    built = []
    wigner_d = tables._wigner_d

    def recording_wigner_d(b_spec, beta):
        built.append(len(beta) * tfcv_ops.so3_spectrum_size(b_spec))
        return wigner_d(b_spec, beta)

    monkeypatch.setattr(tables, "_wigner_d", recording_wigner_d)

    table = tables._build("s2", 256, 64)

    assert table.shape == (512, 64 * 64)
    assert max(built) <= tables._CHUNK_ENTRIES  # never [512, P(64)]
    assert sum(built) == 512 * tfcv_ops.so3_spectrum_size(64)


def test_chunked_table_equals_one_piece(monkeypatch):
    whole = tables._build("s2", 8, 5)

    monkeypatch.setattr(tables, "_CHUNK_ENTRIES", 100)  # 2 angles a chunk
    chunked = tables._build("s2", 8, 5)

    np.testing.assert_array_equal(chunked, whole)


def test_s2_convolution_on_fine_grid_equals_coarse_grid():
    spectrum = _random_spectrum(6, batch=2, seed=4)  # 2 channels, l < 6
    # One real band-limited signal on two grids: [C, 2b, 2b] -> [1, 2b, 2b, C]
    fine, coarse = (
        np.moveaxis(_synthesise(spectrum, b).real, 0, -1)[None]
        for b in (128, 6)
    )
    fine_layer = S2Convolution(3, 128, 6, dtype="float64")
    coarse_layer = S2Convolution(3, 6, 6, dtype="float64")
    fine_layer.build(fine.shape)
    coarse_layer.build(coarse.shape)
    coarse_layer.set_weights(fine_layer.get_weights())

    outputs = fine_layer(tf.constant(fine))

    assert outputs.shape == (1, 12, 12, 12, 3)
    np.testing.assert_allclose(outputs, coarse_layer(coarse), atol=1e-10)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: S2Convolution(2, 257, 8), "`bandwidth_in` .* 1...256"),
        (lambda: S2Convolution(2, 128, 65), "`bandwidth_out` .* 1...64"),
        (lambda: SO3Convolution(2, 65, 8), "`bandwidth_in` .* 1...64"),
    ],
)
def test_layer_bandwidth_limits(build, message):
    with pytest.raises(ValueError, match=message):
        build()
