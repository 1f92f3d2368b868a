"""The machinery shared by `S2Convolution` and `SO3Convolution`.

Spherical CNNs (Cohen, Geiger, Köhler & Welling, 2018, arXiv:1801.10130),
Eqs. 4 and 6 and Fig. 2: FFT of the input, per-degree product with the
filter spectrum summed over input channels, inverse SO(3) FFT. Subclasses
name the input grid (S² or SO(3)), the forward transform, the spectral
product and the kernel table.

Shape letters: `B` batch, `C` input channels, `O` = `filters`, `N` kernel
grid points, `2b` grid side, `S` spectrum size.

Deviations from the paper:
  None (see the public layers' docstrings).
"""

import tensorflow as tf
import tf_keras

import tfcv_ops
from tfcv.layers.spherical import _common
from tfcv.layers.validation import check_positive_integer


class SphericalConvolutionBase(tf_keras.layers.Layer):
    """Point-mass filters on a kernel grid, correlated in the spectrum."""

    grid_rank = None  # 2 for S² inputs, 3 for SO(3) inputs
    grid_columns = None  # (β, α) or (β, α, γ) kernel grid points

    def __init__(
        self,
        filters: int,
        bandwidth_in: int,
        bandwidth_out: int,
        kernel_grid=None,
        use_bias: bool = True,
        kernel_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_integer(filters, "filters")
        self.filters = int(filters)
        self.bandwidth_in, self.bandwidth_out = _common.check_bandwidths(
            bandwidth_in, bandwidth_out, self.grid_rank
        )
        if kernel_grid is None:
            kernel_grid = self.default_grid()
        self._grid = _common.check_kernel_grid(kernel_grid, self.grid_columns)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = (
            None
            if kernel_initializer is None
            else tf_keras.initializers.get(kernel_initializer)
        )

    @property
    def kernel_grid(self) -> list:
        """The kernel grid as nested lists `[N][2 or 3]` of radians."""
        return self._grid.tolist()

    def build(self, input_shape):
        self.channels = _common.check_grid_input(
            self, input_shape, self.grid_rank, self.bandwidth_in
        )
        points = len(self._grid)
        # The filter is `kernel_scale * kernel` with a unit-variance
        # kernel (module docstring): Adam's steps are then relative to
        # the filter's size whatever C and N are.
        self.kernel_scale = _common.default_stddev(self.channels, points)
        initializer = self.kernel_initializer
        if initializer is None:
            initializer = tf_keras.initializers.RandomNormal(stddev=1.0)
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.channels, self.filters, points),
            initializer=initializer,
            experimental_autocast=False,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer="zeros",
                experimental_autocast=False,
            )
        table = self.kernel_table(self._grid, self.bandwidth_out)
        self._table = (table.real, table.imag)  # float64 [N, S] each
        super().build(input_shape)

    def call(self, inputs):
        _common.check_channels(self, inputs, self.channels)
        dtype = _common.fft_dtype(self)
        x = tf.cast(inputs, dtype)

        # [B, 2b, ..., 2b, C] -> [B, C, 2b, ..., 2b]
        rank = self.grid_rank + 2
        x = tf.transpose(x, [0, rank - 1] + list(range(1, rank - 1)))

        # Spectrum of the input, degrees l < bandwidth_out: [B, C, S].
        spectrum = self.forward(x, self.bandwidth_out)

        # Filter spectrum ψ̂ = Σ_p w_p conj(D(R_p)): [C, O, N] -> [C, O, S].
        kernel = tf.cast(self.kernel, dtype) * self.kernel_scale
        real, imag = (tf.constant(part, dtype) for part in self._table)
        filters = _common.kernel_spectrum(kernel, real, imag)

        # Fig. 2: Σ_c f̂_c ψ̂_c^† per degree, [B, C, S] x [C, O, S] ->
        # [B, O, P]; then the inverse SO(3) FFT -> [B, O, 2b', 2b', 2b'].
        product = self.spectral_product(spectrum, filters)
        outputs = tfcv_ops.so3_ifft(product, real_output=True)

        # [B, O, 2b', 2b', 2b'] -> [B, 2b', 2b', 2b', O]
        outputs = tf.transpose(outputs, [0, 2, 3, 4, 1])
        if self.use_bias:
            outputs += tf.cast(self.bias, dtype)
        return tf.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        side = 2 * self.bandwidth_out
        batch = tf.TensorShape(input_shape)[0]
        return tf.TensorShape([batch, side, side, side, self.filters])

    def get_config(self):
        config = super().get_config()
        initializer = self.kernel_initializer
        config.update(
            {
                "filters": self.filters,
                "bandwidth_in": self.bandwidth_in,
                "bandwidth_out": self.bandwidth_out,
                "kernel_grid": self.kernel_grid,
                "use_bias": self.use_bias,
                "kernel_initializer": (
                    None
                    if initializer is None
                    else tf_keras.initializers.serialize(initializer)
                ),
            }
        )
        return config
