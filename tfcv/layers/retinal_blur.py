"""Eccentricity-dependent retinal blur of square images.

Reference: Elsayed et al. (2018), "Adversarial Examples that Fool both
Computer Vision and Time-Limited Humans", arXiv:1802.08195, §3.1.2 and
Appendix B (Eqs. 1-5 and Algorithm 1). The viewer fixates the image centre
from `d_viewer` metres; the image is `d_hw` metres wide. Each pixel centre
`c` (metres from the image centre) gets

  θ(c) = atan(‖c‖ / d_viewer)                         eccentricity (Eq. 1)
  r_rad(c) = min(α θ(c), β)                            radians (Eq. 2)
  r_m(c) = d_viewer · r_rad(c) · (1 + tan² θ(c))       metres (Eq. 3)
  r_pixel(c) = r_m(c) · N / d_hw                       pixels (Eq. 4)
  f(c) = π / r_pixel(c)                                cut-off (Eq. 5)

The image is low-pass filtered in the Fourier domain by each cut-off `f'`
of a bank (`Ŷ_f' = X̂ · exp(-G² / f'²)`, `G` the norm of the spatial
frequency), and each output pixel interpolates linearly, in frequency,
between the two filtered images whose cut-offs bracket its `f(c)`
(Algorithm 1). A centred border is then cropped away (Appendix B).

Units: Eq. 5 names `f` "cycles per pixel", but π / r_pixel is the angular
frequency (radians per pixel) of a wave whose half-wavelength is r_pixel,
which is the paper's stated reason for π rather than 2π. We measure `G` in
the same unit (2π × cycles per pixel), so a resolution of one pixel maps to
the Nyquist frequency π.

Defaults: the viewing distance (61 cm) and image size (15.24 cm) are the
paper's setup (§3.2.1). The paper states Eq. 2 without values for α and β.
Ours follow its source of acuity (macaque, §3.1.2) with Merigan & Katz
(1990), "Spatial resolution across the macaque retina", Vision Res.
30(7):985-991: grating acuity falls about tenfold from ~38 cycles/degree at
the fovea to ~3.8 by 30° eccentricity. The two-point distance at 30° is half
a period, 1 / (2 · 3.8)° = 2.297e-3 rad, so α = 2.297e-3 / (30° in rad) =
4.386e-3 and β = 2.297e-3 rad (no extrapolation past the measured range).
With these values and the paper's geometry, the coarsest resolution among
the kept pixels of a 299-pixel image is 0.84 pixel (cut-off 3.7 rad/pixel,
above the Nyquist frequency π): the default blur is mild. Pass a larger α
for a stronger one.

Shapes: inputs `[B, N, N, C]` (square, `N` static); `K` cut-offs in the
bank; outputs `[B, M, M, C]` with `M = N - 2 · round(N (1 - crop) / 2)`.

Deviations from the paper:
- Eq. 3 as printed has no factor `d_viewer`, so `r_m` would be in radians,
  not metres; we use the screen geometry `d(d tan θ)/dθ = d (1 + tan² θ)`.
  The printed form equals ours divided by `d_viewer` (1.64x coarser at
  0.61 m).
- The crop keeps the central `crop_fraction` of the height as well as the
  width (the paper says width): the FFT treats the image as periodic, so the
  wrap-around artefacts sit at all four edges, and the output stays square.
- The FFT is circular (no padding), as the paper's crop implies.
- Cut-offs outside the bank's range use the nearest end of the bank; the
  default bank (geometric, two cut-offs per octave, from the smallest `f(c)`
  kept to 16π) is our choice, as are α and β (see above).
"""

import math
import numbers

import numpy as np
import tensorflow as tf
import tf_keras

# Radians per degree.
_RADIANS_PER_DEGREE = math.pi / 180.0

# Merigan & Katz (1990): about 3.8 cycles/degree at 30° eccentricity.
_TWO_POINT_AT_30_DEGREES = _RADIANS_PER_DEGREE / (2.0 * 3.8)
_DEFAULT_ALPHA = _TWO_POINT_AT_30_DEGREES / (30.0 * _RADIANS_PER_DEGREE)
_DEFAULT_BETA = _TWO_POINT_AT_30_DEGREES

# Default bank: top cut-off (the Gaussian keeps >= 99% of every frequency
# of the spectrum, whose largest norm is π√2) and cut-offs per octave.
_DEFAULT_TOP_CUTOFF = 16.0 * math.pi
_DEFAULT_CUTOFFS_PER_OCTAVE = 2

# Smallest image side the layer accepts.
_MIN_SIZE = 4


def _check_positive(value, name, fix):
    """Raises a ValueError unless `value` is a finite real number > 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(
            f"`{name}` must be a finite number > 0, got {value!r}. {fix}"
        )


def _check_cutoff_frequencies(cutoff_frequencies):
    """The validated bank as a tuple of floats, or None."""
    if cutoff_frequencies is None:
        return None
    fix = "Pass increasing cut-offs in radians/pixel, e.g. [0.5, 1.0, 2.0]."
    if isinstance(cutoff_frequencies, (str, bytes)) or not hasattr(
        cutoff_frequencies, "__len__"
    ):
        raise ValueError(
            "`cutoff_frequencies` must be None or a sequence of numbers, "
            f"got {cutoff_frequencies!r}. {fix}"
        )
    if len(cutoff_frequencies) == 0:
        raise ValueError(
            f"`cutoff_frequencies` must not be empty. {fix} Or pass None "
            "for the default bank."
        )
    for frequency in cutoff_frequencies:
        _check_positive(frequency, "cutoff_frequencies", fix)
    bank = tuple(float(frequency) for frequency in cutoff_frequencies)
    if any(low >= high for low, high in zip(bank, bank[1:])):
        raise ValueError(
            "`cutoff_frequencies` must be strictly increasing, got "
            f"{list(bank)}. Sort them and drop duplicates: "
            f"{sorted(set(bank))}."
        )
    return bank


def _cutoff_map(size, viewing_distance, image_size, alpha, beta):
    """Eqs. 1-5 at the pixel centres of a `size` x `size` image.

    Returns:
      `(eccentricity, cutoff)`, two `[N, N]` float64 arrays: θ in radians
      and f in radians per pixel (`inf` where θ = 0).
    """
    # Pixel centres in metres from the image centre (the fixation point).
    pixel_size = image_size / size
    offsets = np.arange(size, dtype=np.float64) + 0.5 - size / 2.0
    offsets *= pixel_size
    distance = np.hypot(offsets[:, np.newaxis], offsets[np.newaxis, :])

    # Eq. 1, then Eq. 2.
    eccentricity = np.arctan(distance / viewing_distance)
    resolution_radians = np.minimum(alpha * eccentricity, beta)

    # Eqs. 3 and 4: radians -> metres on the screen -> pixels.
    # NOTE: the paper's Eq. 3 omits d_viewer (App. B); we multiply by it
    # because d(d_viewer tan θ)/dθ turns radians into metres on the screen.
    tan_squared = np.square(distance / viewing_distance)
    resolution_metres = viewing_distance * resolution_radians
    resolution_metres *= 1.0 + tan_squared
    resolution_pixels = resolution_metres / pixel_size

    # Eq. 5: a half-wavelength of r pixels is π / r radians per pixel.
    with np.errstate(divide="ignore"):
        cutoff = np.pi / resolution_pixels
    return eccentricity, cutoff


def _default_bank(smallest_cutoff):
    """Geometric cut-offs from `smallest_cutoff` up to 16π."""
    top = _DEFAULT_TOP_CUTOFF
    if smallest_cutoff >= top:
        return (top,)
    octaves = math.log2(top / smallest_cutoff)
    count = math.ceil(octaves * _DEFAULT_CUTOFFS_PER_OCTAVE) + 1
    return tuple(np.geomspace(smallest_cutoff, top, count).tolist())


def _interpolation_weights(cutoff, bank):
    """Algorithm 1, line 10: `[K, ...]` weights of each bank entry.

    Linear in frequency between the two bracketing cut-offs; a cut-off
    outside the bank takes its nearest end. Weights sum to 1 per pixel.
    """
    bank = np.asarray(bank, dtype=np.float64)
    weights = np.zeros((bank.size,) + cutoff.shape, dtype=np.float64)
    if bank.size == 1:
        weights[0] = 1.0
        return weights
    clipped = np.clip(cutoff, bank[0], bank[-1])
    lower = np.searchsorted(bank, clipped, side="right") - 1
    lower = np.clip(lower, 0, bank.size - 2)
    fraction = (clipped - bank[lower]) / (bank[lower + 1] - bank[lower])
    np.put_along_axis(weights, lower[np.newaxis], 1.0 - fraction, axis=0)
    np.put_along_axis(weights, lower[np.newaxis] + 1, fraction, axis=0)
    return weights


def _gaussian_filters(size, bank):
    """`[K, N, N//2 + 1]` float64 filters exp(-G² / f'²) of `rfft2d`."""
    # Angular frequencies (radians per pixel) of the rows and half-columns.
    rows = 2.0 * np.pi * np.fft.fftfreq(size)
    columns = 2.0 * np.pi * np.fft.rfftfreq(size)
    norm_squared = rows[:, np.newaxis] ** 2 + columns[np.newaxis, :] ** 2
    bank = np.asarray(bank, dtype=np.float64)
    return np.exp(-norm_squared / bank[:, np.newaxis, np.newaxis] ** 2)


def _crop_margin(size, crop_fraction):
    """Pixels removed on each side, so that at least one pixel is kept."""
    margin = int(math.floor(size * (1.0 - crop_fraction) / 2.0 + 0.5))
    return min(margin, (size - 1) // 2)


@tf_keras.utils.register_keras_serializable(package="tfcv")
class RetinalBlur(tf_keras.layers.Layer):
    """Retinal layer: blur growing with eccentricity (Elsayed et al. 2018).

    Models what a viewer who fixates the image centre resolves: full detail
    at the centre, a Gaussian low-pass whose cut-off falls with eccentricity
    elsewhere (Appendix B, Eqs. 1-5, Algorithm 1), then a centred crop. The
    operation is linear in the image, so any value range works, and it is
    differentiable end to end. All per-pixel maps are constants computed in
    `build`; the layer has no weights.

    Args:
      viewing_distance: `float > 0`, `d_viewer` of Eq. 1 in metres (default
        0.61, the paper's 61 cm).
      image_size: `float > 0`, `d_hw` of Eq. 4, the displayed height and
        width in metres (default 0.1524, the paper's 15.24 cm).
      alpha: `float > 0`, the slope α of Eq. 2 (radians of resolution per
        radian of eccentricity; default 4.386e-3, see the module notes).
      beta: `float > 0`, the cap β of Eq. 2 in radians (default 2.297e-3).
      cutoff_frequencies: `None` (default) or a non-empty, strictly
        increasing sequence of cut-offs `f'` > 0 of Algorithm 1, in radians
        per pixel (π is the Nyquist frequency). `None` builds a geometric
        bank with two cut-offs per octave from the smallest `f(c)` among the
        kept pixels up to 16π.
      crop_fraction: `float` in `(0, 1]`, the kept fraction of the height
        and width (default 0.9, the paper's). `round(N (1 - crop) / 2)`
        pixels go from each side.
      **kwargs: base `tf_keras.layers.Layer` arguments (`name`, `dtype`).

    Attributes (NumPy float64, known once the layer is built):
      eccentricity: `[N, N]` θ of Eq. 1 in radians.
      cutoff_map: `[N, N]` f of Eq. 5 in radians per pixel.
      resolved_cutoff_frequencies: `[K]` the bank in use.
      interpolation_weights: `[K, M, M]` weights of the kept pixels.

    Call arguments:
      inputs: `[B, N, N, C]` floating-point images, `N >= 4` static
        (integer images raise a TypeError: cast them to float first).
        The FFT runs in
        float32 (complex64) under float16 and bfloat16 policies too, and
        in float64 for a layer of dtype float64.

    Returns:
      `[B, M, M, C]` in the inputs' dtype.

    Example:
      >>> retina = RetinalBlur(alpha=0.05)
      >>> retina(tf.random.normal([2, 32, 32, 3])).shape
      TensorShape([2, 28, 28, 3])
    """

    def __init__(
        self,
        viewing_distance: float = 0.61,
        image_size: float = 0.1524,
        alpha: float = _DEFAULT_ALPHA,
        beta: float = _DEFAULT_BETA,
        cutoff_frequencies=None,
        crop_fraction: float = 0.9,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_positive(
            viewing_distance,
            "viewing_distance",
            "Pass the eye-to-screen distance in metres, e.g. 0.61.",
        )
        _check_positive(
            image_size,
            "image_size",
            "Pass the displayed image width in metres, e.g. 0.1524.",
        )
        _check_positive(
            alpha, "alpha", f"Pass the slope of Eq. 2, e.g. {_DEFAULT_ALPHA}."
        )
        _check_positive(
            beta,
            "beta",
            f"Pass the cap of Eq. 2 in radians, e.g. {_DEFAULT_BETA}.",
        )
        self.cutoff_frequencies = _check_cutoff_frequencies(cutoff_frequencies)
        if (
            isinstance(crop_fraction, bool)
            or not isinstance(crop_fraction, numbers.Real)
            or not 0.0 < crop_fraction <= 1.0
        ):
            raise ValueError(
                "`crop_fraction` must be in (0, 1], got "
                f"{crop_fraction!r}. Pass the kept fraction of the width, "
                "e.g. 0.9 (the paper's), or 1.0 to keep the whole image."
            )
        self.viewing_distance = float(viewing_distance)
        self.image_size = float(image_size)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.crop_fraction = float(crop_fraction)
        self.eccentricity = None
        self.cutoff_map = None
        self.resolved_cutoff_frequencies = None
        self.interpolation_weights = None

    def _check_input_shape(self, input_shape):
        """The static side `N` of square `[B, N, N, C]` inputs."""
        name = type(self).__name__
        if input_shape.rank != 4:
            raise ValueError(
                f"{name} expects images [B, H, W, C]; got shape "
                f"{tuple(input_shape.as_list()) if input_shape.rank else ()}"
                ". Add a batch or channel axis with tf.expand_dims."
            )
        height, width = input_shape[1], input_shape[2]
        if height is None or width is None:
            raise ValueError(
                f"{name} needs a static height and width; got (H, W) = "
                f"{(height, width)}. Give the input a fixed size, e.g. "
                "tf_keras.Input((299, 299, 3))."
            )
        if height != width:
            raise ValueError(
                f"{name} expects square images (H == W); got (H, W) = "
                f"{(height, width)}. Crop or pad them to a square first, "
                "e.g. with tf.image.resize_with_crop_or_pad."
            )
        if height < _MIN_SIZE:
            raise ValueError(
                f"{name} expects images of at least {_MIN_SIZE}x{_MIN_SIZE} "
                f"pixels; got (H, W) = {(height, width)}. Resize them up, "
                "e.g. with tf.image.resize."
            )
        return height

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        size = self._check_input_shape(input_shape)
        self.input_spec = tf_keras.layers.InputSpec(
            ndim=4, axes={1: size, 2: size}
        )

        # Eqs. 1-5 over the whole image; only the kept pixels matter.
        self.eccentricity, self.cutoff_map = _cutoff_map(
            size, self.viewing_distance, self.image_size, self.alpha, self.beta
        )
        # NOTE: the paper crops the width to 90% (App. B); we crop height
        # too, because the circular FFT leaves artefacts at all four edges.
        margin = _crop_margin(size, self.crop_fraction)
        kept = slice(margin, size - margin)
        kept_cutoffs = self.cutoff_map[kept, kept]

        # The bank (Algorithm 1, line 5) and its weights (line 10).
        bank = self.cutoff_frequencies
        if bank is None:
            bank = _default_bank(float(np.min(kept_cutoffs)))
        self.resolved_cutoff_frequencies = np.asarray(bank, np.float64)
        self.interpolation_weights = _interpolation_weights(kept_cutoffs, bank)
        self._filters = _gaussian_filters(size, bank)
        self._margin = margin
        super().build(input_shape)

    def __call__(self, inputs, *args, **kwargs):
        # Checked before Keras wraps errors of `call` in several lines.
        dtype = getattr(inputs, "dtype", None)
        if dtype is not None and not tf.as_dtype(dtype).is_floating:
            # Casting the float output back to an integer dtype would
            # truncate it (255 -> 254), so integer images are refused.
            raise TypeError(
                f"{type(self).__name__} needs floating-point images, got "
                f"dtype {tf.as_dtype(dtype).name}; cast them first, e.g. "
                "tf.cast(images, tf.float32)."
            )
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs):
        size = inputs.shape[1]
        compute_dtype = tf.float64 if inputs.dtype == tf.float64 else tf.float32
        complex_dtype = (
            tf.complex128 if compute_dtype == tf.float64 else (tf.complex64)
        )

        # [B, N, N, C] -> [B, C, N, N]: the FFT runs over the last two axes.
        images = tf.transpose(tf.cast(inputs, compute_dtype), [0, 3, 1, 2])

        # Algorithm 1, lines 3-9: [B, C, N, N//2+1] x [K, N, N//2+1]
        # -> [B, C, K, N, N//2+1] -> [B, C, K, N, N].
        spectrum = tf.signal.rfft2d(images)
        filters = tf.constant(self._filters, dtype=compute_dtype)
        filtered = spectrum[:, :, tf.newaxis] * tf.cast(filters, complex_dtype)
        blurred = tf.signal.irfft2d(filtered, fft_length=[size, size])

        # Crop, then line 11: [B, C, K, M, M] x [K, M, M] -> [B, M, M, C].
        end = size - self._margin
        blurred = blurred[:, :, :, self._margin : end, self._margin : end]
        weights = tf.constant(self.interpolation_weights, dtype=compute_dtype)
        outputs = tf.einsum("bckhw,khw->bhwc", blurred, weights)
        return tf.cast(outputs, inputs.dtype)

    def compute_output_shape(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        size = self._check_input_shape(input_shape)
        kept = size - 2 * _crop_margin(size, self.crop_fraction)
        return tf.TensorShape([input_shape[0], kept, kept, input_shape[3]])

    def get_config(self):
        config = super().get_config()
        bank = self.cutoff_frequencies
        config.update(
            {
                "viewing_distance": self.viewing_distance,
                "image_size": self.image_size,
                "alpha": self.alpha,
                "beta": self.beta,
                "cutoff_frequencies": None if bank is None else list(bank),
                "crop_fraction": self.crop_fraction,
            }
        )
        return config
