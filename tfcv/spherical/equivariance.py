"""The equivariance error Δ of S²/SO(3) convolution stacks.

Spherical CNNs (Cohen, Geiger, Köhler & Welling, 2018, "Spherical CNNs",
arXiv:1801.10130), §5.1 and Fig. 3. For random rotations `R_i` and random
inputs `f_i`,

    Δ = 1/n Σ_i std(L_{R_i} Φ(f_i) - Φ(L_{R_i} f_i)) / std(Φ(f_i))

where `Φ` is a stack of correlation layers with random filters and the
standard deviations run over every grid point and channel. Δ = 0 for an
exactly equivariant `Φ`.

The inputs are band-limited (degrees `l < b`), so `s2_rotate` moves them
exactly. The outputs are rotated with `so3_rotate`, which is exact for
SO(3) maps of degree `l < b`: true of linear stacks, whose Δ then measures
the discretisation and round-off of the layers alone. A ReLU makes the
output leave the band (its kinks have every degree), and both the next
layer's FFT and `so3_rotate` see those degrees aliased onto the grid's
`l < b`: Δ is then dominated by the rotation of the feature map, not by
the layers (the paper's reading of Fig. 3, bottom).

Shape letters: `n` samples (one rotation and one input each), `C`
channels, `2b` grid side of S² `[n, 2b, 2b, C]` and SO(3)
`[n, 2b, 2b, 2b, C]` signals.

Deviations from the paper:
  - The paper builds one stack per depth; `equivariance_errors` measures
    every prefix of one stack, which has the same distribution (the
    layers are drawn independently) at a third of the cost.
  - The paper uses n = 500; the command defaults to fewer (see
    `tfcv spherical equivariance --help`): Δ varies little between samples.
"""

import math
from typing import Callable
from typing import Optional
from typing import Sequence

import numpy as np
import tensorflow as tf
import tf_keras

import tfcv_ops
from tfcv.layers.spherical import S2Convolution
from tfcv.layers.spherical import SO3Convolution

# Channels of the paper's inputs and feature maps (K = 10, §5.1).
DEFAULT_CHANNELS = 10


def random_rotations(num_rotations: int, seed: int = 0) -> np.ndarray:
    """Rotations drawn from the Haar measure, as ZYZ angles.

    `α, γ` are uniform on `[0, 2π)` and `cos β` uniform on `[-1, 1]`: the
    Haar measure in Euler angles is `dα sin β dβ dγ / 8π²`.

    Args:
      num_rotations: `n >= 1`.
      seed: integer seed (default 0).

    Returns:
      float64 `[n, 3]`, columns (α, β, γ) in radians.

    Raises:
      ValueError: if `num_rotations < 1`.

    Example:
      >>> random_rotations(4).shape
      (4, 3)
    """
    _check_count(num_rotations, "num_rotations")
    generator = np.random.default_rng([seed, 1])
    alpha = generator.uniform(0.0, 2.0 * math.pi, num_rotations)
    beta = np.arccos(generator.uniform(-1.0, 1.0, num_rotations))
    gamma = generator.uniform(0.0, 2.0 * math.pi, num_rotations)
    return np.stack([alpha, beta, gamma], axis=1)


def random_band_limited_signals(
    num_signals: int,
    bandwidth: int,
    channels: int = DEFAULT_CHANNELS,
    seed: int = 0,
    dtype="float32",
) -> tf.Tensor:
    """Real S² signals of degree `l < b` with random spectra.

    Coefficients `f̂^l_m` are complex normal with variance `1/(2l+1)` (the
    spectrum of white noise on the sphere, `∫|Y^l_m|² = 1/(2l+1)`); the
    signal is the real part of `s2_ifft` (still of degree `l < b`),
    scaled to unit standard deviation per signal.

    Args:
      num_signals: `n >= 1`.
      bandwidth: `b`, `1..S2_MAX_BANDWIDTH`.
      channels: `C >= 1` (default 10).
      seed: integer seed (default 0).
      dtype: `"float32"` (default) or `"float64"`.

    Returns:
      `[n, 2b, 2b, C]` of `dtype` on the SOFT grid, axes (β, α).

    Raises:
      ValueError: if a count or the bandwidth is out of range.

    Example:
      >>> random_band_limited_signals(2, 4, channels=3).shape
      TensorShape([2, 8, 8, 3])
    """
    _check_count(num_signals, "num_signals")
    _check_count(channels, "channels")
    bandwidth = _check_bandwidth(bandwidth)
    dtype = _check_dtype(dtype)
    generator = np.random.default_rng([seed, 2])

    # Packed (l, m) at l² + l + m: variance 1/(2l+1) per coefficient.
    degrees = np.repeat(np.arange(bandwidth), 2 * np.arange(bandwidth) + 1)
    scale = 1.0 / np.sqrt(2.0 * (2 * degrees + 1))
    shape = [num_signals, channels, bandwidth**2]
    spectra = scale * (
        generator.standard_normal(shape) + 1j * generator.standard_normal(shape)
    )

    # [n, C, b²] -> [n, C, 2b, 2b] -> [n, 2b, 2b, C]
    grid = tfcv_ops.s2_ifft(tf.constant(spectra), real_output=True)
    grid = tf.transpose(grid, [0, 2, 3, 1])
    grid /= tf.math.reduce_std(grid, axis=[1, 2, 3], keepdims=True)
    return tf.cast(grid, dtype)


def make_stack(
    num_layers: int,
    bandwidth: int,
    relu: bool = False,
    channels: int = DEFAULT_CHANNELS,
    seed: int = 0,
    dtype="float32",
) -> list:
    """`S2Convolution` then `num_layers - 1` `SO3Convolution`, all b → b.

    Every layer has `channels` filters on its default near-identity kernel
    grid, random weights `N(0, 1/(C N))` (the layers' default scale, here
    seeded) and zero bias. With `relu`, each layer is followed by a ReLU.

    Args:
      num_layers: `>= 1`.
      bandwidth: `b` of every layer, `1..SO3_MAX_BANDWIDTH`.
      relu: `bool`, a ReLU after every layer (default False).
      channels: filters per layer, `>= 1` (default 10, as §5.1).
      seed: integer seed of the weights (default 0).
      dtype: `"float32"` (default) or `"float64"`.

    Returns:
      A list of `num_layers` callables, each a layer or a
      `tf_keras.Sequential` of a layer and its ReLU.

    Raises:
      ValueError: if an argument is out of range.

    Example:
      >>> stack = make_stack(2, bandwidth=4, relu=True)
      >>> len(stack)
      2
    """
    _check_count(num_layers, "num_layers")
    _check_count(channels, "channels")
    bandwidth = _check_bandwidth(bandwidth)
    dtype = _check_dtype(dtype)
    stack = []
    for index in range(num_layers):
        layer_type = S2Convolution if index == 0 else SO3Convolution
        # The layers scale the unit-variance kernel by 1/sqrt(C N).
        initializer = tf_keras.initializers.RandomNormal(
            stddev=1.0, seed=seed + index
        )
        layer = layer_type(
            channels,
            bandwidth,
            bandwidth,
            kernel_initializer=initializer,
            dtype=dtype,
        )
        if relu:
            layer = tf_keras.Sequential([layer, tf_keras.layers.ReLU()])
        stack.append(layer)
    return stack


def equivariance_errors(
    layers_or_model,
    bandwidth: int,
    channels: int = DEFAULT_CHANNELS,
    rotations=8,
    seed: int = 0,
    dtype="float32",
    callback: Optional[Callable[[int], None]] = None,
) -> np.ndarray:
    """Δ_i of every prefix of a stack, for every sample.

    Sample `i` draws an input `f_i` (`random_band_limited_signals`) and
    uses rotation `R_i`; the stack runs on `[f_i, L_{R_i} f_i]` and after
    each of its entries the output is compared as in the module docstring.

    Args:
      layers_or_model: a list of callables applied in turn (e.g.
        `make_stack(...)`), or one callable (a Keras model); the first
        takes `[B, 2b, 2b, C]`, each returns `[B, 2b', 2b', 2b', O]`.
      bandwidth: input bandwidth `b`.
      channels: input channels `C` (default 10).
      rotations: the number `n >= 1` of Haar-random rotations (default
        8), or ZYZ angles `[n, 3]` (α, β, γ) in radians.
      seed: integer seed of the rotations and inputs (default 0).
      dtype: `"float32"` (default) or `"float64"`: inputs and rotations.
      callback: called as `callback(i + 1)` after sample `i`, or None.

    Returns:
      float64 `[len(layers), n]`: row `k` holds
      `std(L_R Φ_k(f) - Φ_k(L_R f)) / std(Φ_k(f))` per sample for the
      first `k + 1` entries `Φ_k`.

    Raises:
      ValueError: if `rotations` is neither a count nor `[n, 3]`, an output
        is not an SO(3) map, or an output of the unrotated input is
        constant (Δ undefined).

    Example:
      >>> errors = equivariance_errors(make_stack(2, 4), 4, rotations=2)
      >>> errors.shape
      (2, 2)
    """
    layers = _as_layers(layers_or_model)
    dtype = _check_dtype(dtype)
    angles = _rotation_angles(rotations, seed)
    signals = random_band_limited_signals(
        len(angles), bandwidth, channels, seed, dtype
    )
    errors = np.zeros([len(layers), len(angles)])
    for sample, rotation in enumerate(angles):
        rotation = [tf.constant(angle, dtype) for angle in rotation]
        signal = signals[sample : sample + 1]  # [1, 2b, 2b, C]

        # L_R f, channels moved to the front for the op:
        # [1, 2b, 2b, C] -> [C, 2b, 2b] -> rotate -> [1, 2b, 2b, C]
        moved = tf.transpose(signal[0], [2, 0, 1])
        rotated = tfcv_ops.s2_rotate(moved, *rotation)
        rotated = tf.transpose(rotated, [1, 2, 0])[None]

        # Both inputs through the stack as one batch, Δ after each entry.
        outputs = tf.concat([signal, rotated], axis=0)  # [2, 2b, 2b, C]
        for depth, layer in enumerate(layers):
            outputs = layer(outputs)  # [2, 2b', 2b', 2b', O]
            errors[depth, sample] = _relative_error(outputs, rotation)
        if callback is not None:
            callback(sample + 1)
    return errors


def equivariance_error(
    layers_or_model,
    bandwidth: int,
    channels: int = DEFAULT_CHANNELS,
    rotations=8,
    seed: int = 0,
    dtype="float32",
) -> float:
    """Δ of a whole stack: the mean over samples of `equivariance_errors`.

    Args:
      layers_or_model, bandwidth, channels, rotations, seed, dtype: as in
        `equivariance_errors`.

    Returns:
      Δ, a Python float (0 for an exactly equivariant stack).

    Raises:
      ValueError: as `equivariance_errors`.

    Example:
      >>> equivariance_error(make_stack(1, 4), 4, rotations=2) < 1e-4
      True
    """
    errors = equivariance_errors(
        layers_or_model, bandwidth, channels, rotations, seed, dtype
    )
    return float(errors[-1].mean())


def _relative_error(outputs, rotation) -> float:
    """`std(L_R y_0 - y_1) / std(y_0)` for `outputs = [y_0, y_1]`."""
    shape = tuple(outputs.shape.as_list())
    if len(shape) != 5 or len(set(shape[1:4])) != 1 or shape[1] % 2:
        raise ValueError(
            f"each entry of `layers_or_model` must return SO(3) maps "
            f"[B, 2b, 2b, 2b, O], received shape {shape}; end the stack "
            f"with an S2Convolution or SO3Convolution."
        )
    plain, turned = outputs[0], outputs[1]

    # L_R Φ(f): [2b, 2b, 2b, O] -> [O, 2b, 2b, 2b] -> rotate -> back
    moved = tf.transpose(plain, [3, 0, 1, 2])
    moved = tfcv_ops.so3_rotate(moved, *rotation)
    moved = tf.transpose(moved, [1, 2, 3, 0])

    plain = plain.numpy().astype(np.float64)
    difference = moved.numpy().astype(np.float64) - turned.numpy()
    scale = plain.std()
    if not scale > 0:
        raise ValueError(
            f"the stack's output for an unrotated input is constant (std "
            f"{scale}), so Δ is undefined; use random, non-zero weights."
        )
    return float(difference.std() / scale)


def _as_layers(layers_or_model) -> list:
    if callable(layers_or_model):
        return [layers_or_model]
    layers = list(layers_or_model)
    if not layers or not all(callable(layer) for layer in layers):
        raise ValueError(
            f"`layers_or_model` must be a callable or a non-empty list of "
            f"callables, received {layers_or_model!r}; pass e.g. "
            f"`make_stack(2, bandwidth=8)`."
        )
    return layers


def _rotation_angles(rotations, seed) -> np.ndarray:
    if isinstance(rotations, (int, np.integer)) and not isinstance(
        rotations, bool
    ):
        return random_rotations(int(rotations), seed)
    angles = np.asarray(rotations, dtype=np.float64)
    if angles.ndim != 2 or angles.shape[1] != 3 or not len(angles):
        raise ValueError(
            f"`rotations` must be a count >= 1 or ZYZ angles [n, 3] with "
            f"n >= 1, received shape {angles.shape}; pass e.g. "
            f"`rotations=8`."
        )
    return angles


def _check_count(value, name: str) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < 1
    ):
        raise ValueError(
            f"`{name}` must be an integer >= 1, received {value!r}."
        )
    return int(value)


def _check_bandwidth(bandwidth) -> int:
    maximum = tfcv_ops.grids.SO3_MAX_BANDWIDTH
    if (
        isinstance(bandwidth, bool)
        or not isinstance(bandwidth, (int, np.integer))
        or not 1 <= bandwidth <= maximum
    ):
        raise ValueError(
            f"`bandwidth` must be an integer in 1...{maximum}, received "
            f"{bandwidth!r}; pass e.g. `bandwidth=8`."
        )
    return int(bandwidth)


def _check_dtype(dtype) -> tf.DType:
    try:
        checked = tf.as_dtype(dtype)
    except TypeError:
        checked = None
    if checked not in (tf.float32, tf.float64):
        raise ValueError(
            f"`dtype` must be float32 or float64, received {dtype!r}; pass "
            f'`dtype="float32"`.'
        )
    return checked


def summarize(errors: Sequence[float]) -> tuple:
    """`(mean, std)` of per-sample Δ_i, as Python floats."""
    errors = np.asarray(errors, dtype=np.float64)
    return float(errors.mean()), float(errors.std())
